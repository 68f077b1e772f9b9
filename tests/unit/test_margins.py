"""Beyond the paper's loss and schedule: additive angular margin equals
SpeechBrain's and the formula, the margin can change between steps, the
margin warm-up and the recipe's step-wise learning-rate schedule equal
their formulas, and the schedule resumes at the step it was saved at."""

import math

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from speechbrain_mrmha.layers.margins import (
    AAMLoss,
    CosAMSLoss,
    MarginWarmup,
    margin_loss,
)

RECIPE_HPARAMS = (
    __import__("pathlib").Path(__file__).resolve().parents[2]
    / "recipes"
    / "VoxCeleb1"
    / "hparams"
)


def aam_by_hand(cosines, targets, margin, scale):
    """-(1/B) sum_u log softmax_u[y] with the target logit
    scale * cos(theta_y + m) (theta_y + m < pi here), the others scale * cos."""
    total = 0.0
    for u in range(cosines.shape[0]):
        y = int(targets[u])
        logits = [scale * float(c) for c in cosines[u]]
        logits[y] = scale * math.cos(math.acos(float(cosines[u, y])) + margin)
        top = max(logits)
        log_z = top + math.log(sum(math.exp(z - top) for z in logits))
        total += -(logits[y] - log_z)
    return total / cosines.shape[0]


@pytest.mark.parametrize("margin", [0.0, 0.2, 0.5])
def test_aam_equals_speechbrain_and_the_formula(margin):
    gen = torch.Generator().manual_seed(int(10 * margin))
    # angles below pi - m, where cos(theta + m) is the formula as written
    cosines = torch.rand(6, 9, generator=gen) * 1.6 - 0.8
    targets = torch.randint(0, 9, (6,), generator=gen)
    ours = AAMLoss(margin=margin, scale=30.0)(
        cosines[:, None], targets[:, None]
    )
    theirs = LogSoftmaxWrapper(
        AdditiveAngularMargin(margin=margin, scale=30.0)
    )(cosines[:, None], targets[:, None])
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6, abs=1e-6)
    expected = aam_by_hand(cosines, targets, margin, 30.0)
    assert ours.item() == pytest.approx(expected, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("kind", ["cosams", "aam"])
def test_a_new_margin_equals_a_loss_built_with_it(kind):
    gen = torch.Generator().manual_seed(0)
    cosines = torch.rand(5, 1, 7, generator=gen) * 2 - 1
    targets = torch.randint(0, 7, (5, 1), generator=gen)
    loss = margin_loss(kind, margin=0.0, scale=30.0)
    assert type(loss) is {"cosams": CosAMSLoss, "aam": AAMLoss}[kind]
    loss.margin = 0.3
    fresh = margin_loss(kind, margin=0.3, scale=30.0)
    assert loss(cosines, targets).item() == fresh(cosines, targets).item()
    with pytest.raises(ValueError, match="margin must be >= 0"):
        loss.margin = -0.1


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
    """Step s < W: lr * s / W; then lr * (lr_final / lr) ** ((s - W) / (T - W)),
    so lr at the end of warm-up and lr_final at step T; saved at step k and
    loaded into a fresh schedule, the next steps are the uninterrupted ones."""
    from speechbrain.utils.checkpoints import Checkpointer

    warmup, total = 10, 50
    schedule, hp = recipe_schedule(warmup, total, lr=0.002, lr_final=0.0001)
    optimizer = torch.optim.RAdam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    values = lrs(schedule, optimizer, total)
    for step, value in enumerate(values):
        if step < warmup:
            expected = 0.002 * step / warmup
        else:
            expected = 0.002 * 0.05 ** ((step - warmup) / (total - warmup))
        assert value == pytest.approx(expected, rel=1e-9), step
    assert values[warmup] == pytest.approx(0.002)
    # the yaml's decay factor: lr_final is reached at step T
    assert schedule.decay_factor == pytest.approx(hp["lr_final"] / hp["lr"])

    first, _ = recipe_schedule(warmup, total)
    checkpointer = Checkpointer(tmp_path, {"lr_schedule": first})
    before = lrs(first, optimizer, 23)
    checkpointer.save_checkpoint()
    resumed, _ = recipe_schedule(warmup, total)
    Checkpointer(tmp_path, {"lr_schedule": resumed}).recover_if_possible()
    assert resumed.current_step == 23
    assert before + lrs(resumed, optimizer, total - 23) == values
