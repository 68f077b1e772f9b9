"""Options that make training meaningless are refused before any work,
all in one error naming each option and its value; a rerun into a folder
with checkpoints compares its options with the recorded ones."""

import json

import pytest
import torch

from speechbrain_mrmha.training.checks import (
    check_training_options,
    init_from_problems,
)
from speechbrain_mrmha.training.resume import (
    OPTIONS_FILE,
    check_rerun,
    check_resume,
    run_options,
)

GOOD = {
    "number_of_epochs": 12,
    "speed_perturb": True,
    "speed_perturb_speeds": [0.9, 1.1],
    "spec_augment": True,
    "time_masks": 2,
    "time_mask_width": 10,
    "freq_masks": 2,
    "freq_mask_width": 5,
    "n_mels": 40,
    "sentence_len": 2.0,
    "sample_rate": 16000,
    "init_from": None,
    "lr_warmup_fraction": 0.05,
    "lr_decay_fraction": 0.2,
    "margin_warmup_start_fraction": 0.1,
    "margin_warmup_end_fraction": 0.25,
}


def problems_of(**changes):
    """The lines of the error for GOOD with ``changes``, or []."""
    try:
        check_training_options({**GOOD, **changes})
    except ValueError as error:
        return str(error).splitlines()[1:]
    return []


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"lr_warmup_fraction": 1.0}, "lr_warmup_fraction: 1.0"),
        ({"lr_warmup_fraction": 2}, "lr_warmup_fraction: 2"),
        ({"lr_decay_fraction": 1.5}, "lr_decay_fraction: 1.5"),
        ({"margin_warmup_end_fraction": 5}, "margin_warmup_end_fraction: 5"),
        ({"margin_warmup_start_fraction": -0.1}, "start_fraction: -0.1"),
        (
            {"margin_warmup_start_fraction": 0.5},
            "margin_warmup_end_fraction: 0.25 comes before "
            "margin_warmup_start_fraction: 0.5",
        ),
    ],
)
def test_warmups_are_fractions_of_the_run(changes, expected):
    """Warm-ups are fractions of the run: an epoch count (5, as the old
    keys took) or a margin ending before it starts is refused by name."""
    problems = problems_of(**changes)
    assert len(problems) == 1 and expected in problems[0], problems


def test_warmups_in_epochs_are_refused_with_their_new_name():
    """The old epoch keys on the command line name their replacement."""
    from speechbrain_mrmha.training.config import parse_arguments

    with pytest.raises(ValueError, match="--margin_warmup_end_fraction"):
        parse_arguments(["a.yaml", "--margin_warmup_end_epoch=10"])


def test_good_options_pass():
    assert problems_of() == []


@pytest.mark.parametrize(
    "speeds, words",
    [
        ([1.0], "1.0 is the original audio"),
        ([0.9, 0.9], "0.9 is repeated"),
        ([0], "0 is outside"),
        ([-1.1], "-1.1 is outside"),
        ([5.0], "5.0 is outside"),
        (["fast"], "'fast' is not a number"),
        ([], "is not a non-empty list"),
    ],
)
def test_bad_speeds_are_named(speeds, words):
    lines = problems_of(speed_perturb_speeds=speeds)
    assert len(lines) == 1 and "speed_perturb_speeds" in lines[0]
    assert words in lines[0]


def test_speeds_are_not_checked_when_speed_perturbation_is_off():
    assert problems_of(speed_perturb=False, speed_perturb_speeds=[1.0]) == []


@pytest.mark.parametrize(
    "changes, option",
    [
        ({"time_masks": 1, "time_mask_width": 201}, "time_masks x"),
        ({"time_masks": 3, "time_mask_width": 70}, "time_masks x"),
        ({"freq_masks": 1, "freq_mask_width": 40}, "freq_masks x"),
        ({"freq_masks": 4, "freq_mask_width": 10}, "freq_masks x"),
        ({"time_mask_width": -1}, "time_mask_width: -1"),
    ],
)
def test_masks_that_can_cover_everything_are_refused(changes, option):
    lines = problems_of(**changes)
    assert len(lines) == 1 and lines[0].strip().startswith(option)


def test_masks_just_inside_the_crop_pass():
    # a 2 s crop has 201 frames; 200 masked frames leave one
    assert problems_of(time_masks=2, time_mask_width=100) == []
    assert problems_of(freq_masks=3, freq_mask_width=13) == []


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_epochs_must_be_at_least_one(epochs):
    lines = problems_of(number_of_epochs=epochs)
    assert len(lines) == 1 and lines[0].strip().startswith("number_of_epochs")


def test_every_problem_in_one_error():
    lines = problems_of(
        number_of_epochs=0,
        speed_perturb_speeds=[1.0, 0.9, 0.9],
        freq_mask_width=40,
        init_from="/nonexistent/folder",
    )
    assert len(lines) == 5, lines


def write_init_folder(folder, labels=True):
    folder.mkdir()
    torch.save({"w": torch.zeros(2)}, folder / "embedding_model.ckpt")
    torch.save({"w": torch.zeros(2)}, folder / "classifier.ckpt")
    if labels:
        (folder / "label_encoder.txt").write_text("'a' => 0\n")
    return folder


def test_a_complete_init_from_folder_passes(tmp_path):
    folder = write_init_folder(tmp_path / "pretrained")
    assert init_from_problems(folder) == []
    assert problems_of(init_from=str(folder)) == []


def test_a_truncated_init_from_checkpoint_is_named(tmp_path):
    folder = write_init_folder(tmp_path / "pretrained")
    ckpt = folder / "classifier.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:40])
    problems = init_from_problems(folder)
    assert len(problems) == 1
    assert (
        str(ckpt) in problems[0] and "not a readable checkpoint" in problems[0]
    )


def test_init_from_without_a_label_encoder_is_refused(tmp_path):
    folder = write_init_folder(tmp_path / "pretrained", labels=False)
    problems = init_from_problems(folder)
    assert len(problems) == 1 and "label_encoder.txt" in problems[0]


def test_init_from_checkpoints_load_with_weights_only(tmp_path):
    """A checkpoint that needs arbitrary unpickling is not loaded."""
    folder = write_init_folder(tmp_path / "pretrained")
    torch.save({"w": torch.nn.Linear(1, 1)}, folder / "classifier.ckpt")
    problems = init_from_problems(folder)
    assert len(problems) == 1 and "classifier.ckpt" in problems[0]


RESOLVED = """
seed: 3
number_of_epochs: 1
loss: cosams
speed_perturb: False
num_workers: 2
pooling: !name:speechbrain_mrmha.layers.pooling.SelfAttentivePooling
    hidden_size: 8
"""


def test_a_fresh_run_records_its_options(tmp_path):
    options = run_options(RESOLVED)
    assert check_resume(tmp_path, options, has_checkpoints=False) == {}
    assert json.loads((tmp_path / OPTIONS_FILE).read_text()) == options


def test_a_same_options_rerun_resumes(tmp_path):
    options = run_options(RESOLVED)
    check_resume(tmp_path, options, has_checkpoints=False)
    assert check_resume(tmp_path, options, has_checkpoints=True) == {}


def test_more_epochs_is_an_allowed_change_returned_to_the_caller(tmp_path):
    check_resume(tmp_path, run_options(RESOLVED), has_checkpoints=False)
    more = run_options(RESOLVED.replace("epochs: 1", "epochs: 5"))
    assert check_resume(tmp_path, more, True) == {"number_of_epochs": (1, 5)}
    # the record now holds the new plan
    assert check_resume(tmp_path, more, True) == {}


@pytest.mark.parametrize(
    "old, new, named",
    [
        ("loss: cosams", "loss: aam", "loss: 'cosams' -> 'aam'"),
        ("speed_perturb: False", "speed_perturb: True", "speed_perturb:"),
        ("SelfAttentivePooling", "AttentiveStatisticsPooling", "pooling:"),
        ("hidden_size: 8", "hidden_size: 16", "pooling:"),
    ],
)
def test_other_changes_are_refused_naming_old_and_new(
    tmp_path, old, new, named
):
    check_resume(tmp_path, run_options(RESOLVED), has_checkpoints=False)
    changed = run_options(RESOLVED.replace(old, new))
    with pytest.raises(ValueError) as error:
        check_resume(tmp_path, changed, has_checkpoints=True)
    message = str(error.value)
    assert named in message and "--output_folder" in message
    assert "number_of_epochs" in message  # says what may change


def test_every_refused_change_is_listed_at_once(tmp_path):
    check_resume(tmp_path, run_options(RESOLVED), has_checkpoints=False)
    changed = run_options(
        RESOLVED.replace("loss: cosams", "loss: aam").replace(
            "seed: 3", "seed: 4"
        )
    )
    with pytest.raises(ValueError) as error:
        check_resume(tmp_path, changed, has_checkpoints=True)
    assert "loss:" in str(error.value) and "seed: 3 -> 4" in str(error.value)


VERIFYING = """
output_folder: out
save_folder: !ref <output_folder>/save
loss: cosams
vox1_folder: null
score_norm: as-norm
cohort_utterances_per_speaker: 3
cohort_top_k: 300
verification_folder: !ref <output_folder>/verification
"""


def test_what_is_done_after_training_may_change_on_a_rerun(tmp_path):
    """Adding --vox1_folder (and choosing the verification's options) to a
    finished run scores it: the checkpoints' weights do not depend on
    them. A training option beside them is still refused."""
    hparams = tmp_path / "train.yaml"
    hparams.write_text(VERIFYING)
    save = tmp_path / "save"
    assert check_rerun(hparams, {}, save) == {}
    (save / "CKPT+1").mkdir()
    verifying = {
        "vox1_folder": str(tmp_path / "VoxCeleb1"),
        "score_norm": "s-norm",
        "cohort_utterances_per_speaker": 5,
        "cohort_top_k": 10,
        "verification_folder": str(tmp_path / "scores"),
    }
    assert check_rerun(hparams, verifying, save) == {
        "vox1_folder": (None, str(tmp_path / "VoxCeleb1")),
        "score_norm": ("as-norm", "s-norm"),
        "cohort_utterances_per_speaker": (3, 5),
        "cohort_top_k": (300, 10),
        "verification_folder": ("out/verification", str(tmp_path / "scores")),
    }
    with pytest.raises(ValueError, match="loss: 'cosams' -> 'aam'"):
        check_rerun(hparams, {**verifying, "loss": "aam"}, save)
