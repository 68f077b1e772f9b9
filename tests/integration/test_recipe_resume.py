"""A rerun into an output folder with checkpoints never trains on silently:
more epochs re-plan the schedules, any other changed option is refused
before any work (naming it with its old and new value), unusable
checkpoints are never replaced by a fresh start over the run's log, and
options that make training meaningless stop the run before it starts."""

import re

from test_recipe import train


def logged_lr(output, epoch):
    """The learning rate train_log.txt records for ``epoch``."""
    text = (output / "train_log.txt").read_text()
    match = re.search(rf"^epoch: {epoch}, lr: ([0-9.e+-]+)", text, re.M)
    assert match, text
    return float(match[1])


def test_more_epochs_train_at_the_rates_of_a_run_planned_that_long(
    tiny_corpus, tmp_path
):
    extra = ["--num_heads=2"]
    planned = tmp_path / "planned"
    train(tiny_corpus, planned, epochs=3, extra=extra)
    resumed = tmp_path / "resumed"
    train(tiny_corpus, resumed, epochs=1, extra=extra)
    train(tiny_corpus, resumed, epochs=3, extra=extra)
    for epoch in (2, 3):
        assert logged_lr(resumed, epoch) == logged_lr(planned, epoch)
    assert logged_lr(resumed, 3) > 1e-5  # not the old plan's 1e-15


def refused_rerun(corpus, output, extra):
    """Train 1 epoch, then rerun with ``extra``: the error text, and
    whether train_log.txt and the checkpoints stayed as they were."""
    train(corpus, output, epochs=1, extra=["--num_heads=2"])
    log = (output / "train_log.txt").read_text()
    checkpoints = sorted(p.name for p in (output / "save").glob("CKPT+*"))
    result = train(
        corpus, output, epochs=1, extra=["--num_heads=2", *extra], check=False
    )
    assert result.returncode != 0
    unchanged = (
        output / "train_log.txt"
    ).read_text() == log and checkpoints == (
        sorted(p.name for p in (output / "save").glob("CKPT+*"))
    )
    return result.stdout + result.stderr, unchanged


def test_another_loss_on_resume_is_refused(tiny_corpus, tmp_path):
    message, unchanged = refused_rerun(
        tiny_corpus, tmp_path / "run", ["--loss=aam"]
    )
    assert "loss: 'cosams' -> 'aam'" in message
    assert "--output_folder" in message and unchanged


def test_another_speed_setting_on_resume_is_refused(tiny_corpus, tmp_path):
    message, unchanged = refused_rerun(
        tiny_corpus, tmp_path / "run", ["--speed_perturb=True"]
    )
    assert "speed_perturb: False -> True" in message and unchanged
    assert "unreadable" not in message


def test_unusable_checkpoints_are_not_replaced_by_a_fresh_start(
    tiny_corpus, tmp_path
):
    output = tmp_path / "run"
    train(tiny_corpus, output, epochs=1, extra=["--num_heads=2"])
    log = (output / "train_log.txt").read_text()
    for checkpoint in (output / "save").glob("CKPT+*"):
        (checkpoint / "COMPLETE").unlink()
    result = train(
        tiny_corpus, output, epochs=2, extra=["--num_heads=2"], check=False
    )
    assert result.returncode != 0
    assert "none can be resumed" in result.stdout + result.stderr
    assert (output / "train_log.txt").read_text() == log


def test_meaningless_options_stop_before_any_work(tiny_corpus, tmp_path):
    output = tmp_path / "never"
    result = train(
        tiny_corpus,
        output,
        epochs=0,
        extra=[
            "--speed_perturb=True",
            "--speed_perturb_speeds=[1.0,0.9,0.9]",
            "--spec_augment=True",
            "--freq_mask_width=40",
        ],
        check=False,
    )
    message = result.stdout + result.stderr
    assert result.returncode != 0
    for words in (
        "number_of_epochs: 0",
        "speed_perturb_speeds: 1.0 is the original audio",
        "speed_perturb_speeds: 0.9 is repeated",
        "freq_masks x freq_mask_width",
    ):
        assert words in message
    assert not output.exists()
