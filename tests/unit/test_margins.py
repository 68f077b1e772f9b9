"""Beyond the paper's loss: additive angular margin equals SpeechBrain's
and the formula, and the margin can change between steps (the step
schedules are tested in test_training_schedules.py)."""

import math

import pytest
import torch
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from speechbrain_mrmha.layers.margins import AAMLoss, CosAMSLoss, margin_loss


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
