"""The step schedules of training (speechbrain_mrmha.training.schedules):
the margin warm-up and the recipe's step-wise learning-rate schedule equal
their formulas, the schedule resumes at the step it was saved at, and
``StepSchedules`` turns the yaml's epochs into those steps."""

from pathlib import Path

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mrmha.layers.margins import margin_loss
from speechbrain_mrmha.training.schedules import MarginWarmup

RECIPE_HPARAMS = (
    Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb1" / "hparams"
)


def test_margin_warmup_equals_the_formula():
    warmup = MarginWarmup(margin=0.2, start_step=100, end_step=300)
    for step in (0, 50, 100):
        assert warmup(step) == 0.0
    for step in (101, 150, 200, 299):
        assert warmup(step) == pytest.approx(0.2 * (step - 100) / 200)
    for step in (300, 301, 10_000):
        assert warmup(step) == 0.2
    assert MarginWarmup(0.3, 0, 0)(0) == 0.3  # no warm-up


def recipe_schedule(warmup, total, **overrides):
    """The learning-rate schedule of the recipe's mrmha.yaml."""
    with open(RECIPE_HPARAMS / "mrmha.yaml") as fin:
        hp = load_hyperpyyaml(fin, {"data_folder": "/data", **overrides})
    return hp["lr_schedule"](n_warmup_steps=warmup, total_steps=total), hp


def lrs(schedule, optimizer, steps):
    """The learning rate of each of ``steps`` optimizer steps."""
    values = []
    for _ in range(steps):
        schedule(optimizer)
        values.append(optimizer.param_groups[0]["lr"])
    return values


def test_learning_rate_schedule_equals_the_formula_and_resumes(tmp_path):
    """The recipe's schedule: step s < W: lr * s / W; held at lr until
    D = T - round(f * T) (f = lr_decay_fraction); then a cosine from lr
    to lr_final at step T; saved at step k and loaded into a fresh
    schedule, the next steps are the uninterrupted ones."""
    import math

    from speechbrain.utils.checkpoints import Checkpointer

    warmup, total = 10, 50
    schedule, hp = recipe_schedule(warmup, total, lr=0.002, lr_final=0.0001)
    decay_start = total - round(hp["lr_decay_fraction"] * total)
    assert warmup < decay_start < total
    optimizer = torch.optim.RAdam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    values = lrs(schedule, optimizer, total)
    for step, value in enumerate(values):
        if step < warmup:
            expected = 0.002 * step / warmup
        elif step < decay_start:
            expected = 0.002
        else:
            progress = (step - decay_start) / (total - decay_start)
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            expected = 0.0001 + (0.002 - 0.0001) * cosine
        assert value == pytest.approx(expected, rel=1e-9), step
    assert values[warmup] == pytest.approx(0.002)
    assert schedule.rate(total) == pytest.approx(hp["lr_final"])

    first, _ = recipe_schedule(warmup, total)
    checkpointer = Checkpointer(tmp_path, {"lr_schedule": first})
    before = lrs(first, optimizer, 23)
    checkpointer.save_checkpoint()
    resumed, _ = recipe_schedule(warmup, total)
    Checkpointer(tmp_path, {"lr_schedule": resumed}).recover_if_possible()
    assert resumed.current_step == 23
    assert before + lrs(resumed, optimizer, total - 23) == values


def recipe_step_schedules(steps_per_epoch, **overrides):
    """The step_schedules object of the recipe's mrmha.yaml, started."""
    with open(RECIPE_HPARAMS / "mrmha.yaml") as fin:
        hp = load_hyperpyyaml(fin, {"data_folder": "/data", **overrides})
    schedules = hp["step_schedules"]
    return schedules, schedules.start(steps_per_epoch), hp


def test_step_schedules_turn_fractions_of_the_run_into_steps():
    """E epochs of S steps, T = E * S: the learning rate warms up over
    round(lr_warmup_fraction * T) steps and reaches lr_final at step T;
    the margin is 0 until round(start * T), then rises linearly to the
    margin at round(end * T); both are set before each optimizer step."""
    steps, epochs = 7, 3
    total = steps * epochs
    schedules, lr_schedule, hp = recipe_step_schedules(
        steps,
        number_of_epochs=epochs,
        lr_warmup_fraction=0.2,
        margin=0.3,
        margin_warmup_start_fraction=0.2,
        margin_warmup_end_fraction=0.5,
    )
    assert lr_schedule is schedules.lr_schedule
    assert lr_schedule.n_warmup_steps == round(0.2 * total) == 4
    assert lr_schedule.total_steps == total
    warmup = MarginWarmup(0.3, round(0.2 * total), round(0.5 * total))
    reference, _ = recipe_schedule(round(0.2 * total), total)
    optimizer = torch.optim.RAdam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    twin = torch.optim.RAdam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    loss = hp["compute_cost"]
    for step in range(steps * epochs):
        assert schedules.current_step == step
        schedules(optimizer, loss)
        reference(twin)
        assert loss.margin == pytest.approx(warmup(step), abs=1e-12)
        assert optimizer.param_groups[0]["lr"] == twin.param_groups[0]["lr"]


def test_step_schedules_keep_one_step_when_warmup_is_the_whole_run():
    """A warm-up as long as the run still leaves a decay step (the total is
    at least warm-up + 1), and no margin warm-up means the full margin."""
    schedules, lr_schedule, _ = recipe_step_schedules(
        4, number_of_epochs=1, lr_warmup_fraction=0.99
    )
    assert lr_schedule.total_steps == 5 and lr_schedule.n_warmup_steps == 4
    loss = margin_loss("aam", margin=0.0, scale=30.0)
    schedules(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), loss)
    assert loss.margin == 0.2  # mrmha.yaml's margin from the first step


def test_warm_hold_decay_follows_its_formula_and_resumes_from_a_checkpoint(
    tmp_path,
):
    import math

    from speechbrain_mrmha.training.schedules import WarmHoldDecay

    schedule = WarmHoldDecay(2.0, 10, 100, lr_final=0.5, decay_fraction=0.4)
    assert schedule.rate(5) == 1.0  # linear warm-up
    assert schedule.rate(10) == schedule.rate(59) == 2.0  # held
    assert math.isclose(schedule.rate(80), 0.5 + 1.5 * 0.5)  # cosine midpoint
    assert schedule.rate(100) == 0.5
    constant = WarmHoldDecay(2.0, 0, 100, lr_final=0.5, decay_fraction=0.0)
    assert {constant.rate(s) for s in range(101)} == {2.0}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=9)
    for _ in range(30):
        schedule(optimizer)
    schedule.save(tmp_path / "lr.ckpt")
    resumed = WarmHoldDecay(2.0, 10, 100, lr_final=0.5, decay_fraction=0.4)
    resumed.load(tmp_path / "lr.ckpt")
    resumed(optimizer)
    assert optimizer.param_groups[0]["lr"] == schedule.rate(30)
