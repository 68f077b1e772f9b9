"""Tests of the CosAMS cosine classifier and loss (speechbrain_mrmha/layers/margins.py)
against the formula of docs/EQUATIONS.md, section "CosAMS loss", computed
directly."""

import math

import pytest
import torch
import torch.nn.functional as F

from speechbrain_mrmha.layers.margins import CosAMSLoss, CosineClassifier


def cosines_by_hand(x, weight):
    """cos theta_j = x . w_j / (|x| |w_j|), Python loops in float64."""
    out = torch.zeros(x.shape[0], weight.shape[0], dtype=torch.float64)
    for u in range(x.shape[0]):
        for j in range(weight.shape[0]):
            a, w = x[u].double(), weight[j].double()
            out[u, j] = (a @ w) / (a.norm() * w.norm())
    return out


def cosams_by_hand(cosines, targets, margin, scale):
    """L = -(1/B) sum_u log(exp(eta (cos_y - m)) / Z_u) with
    Z_u = exp(eta (cos_y - m)) + sum_{j != y} exp(eta cos_j), through an
    explicit max-shifted log-sum-exp."""
    total = 0.0
    for u in range(cosines.shape[0]):
        y = int(targets[u])
        logits = [scale * float(c) for c in cosines[u]]
        logits[y] = scale * (float(cosines[u, y]) - margin)
        top = max(logits)
        log_z = top + math.log(sum(math.exp(z - top) for z in logits))
        total += -(logits[y] - log_z)
    return total / cosines.shape[0]


@pytest.mark.parametrize("shape", ["3d", "2d"])
def test_cosine_classifier_equals_hand_cosine(shape):
    torch.manual_seed(0)
    classifier = CosineClassifier(input_size=16, out_neurons=7)
    x = 3.0 * torch.randn(5, 16)
    out = classifier(x[:, None] if shape == "3d" else x)
    assert out.shape == (5, 1, 7)
    torch.testing.assert_close(
        out[:, 0].double(),
        cosines_by_hand(x, classifier.weight.detach()),
        atol=1e-6,
        rtol=1e-5,
    )


def test_cosine_classifier_ignores_norms():
    torch.manual_seed(0)
    classifier = CosineClassifier(input_size=8, out_neurons=4)
    x = torch.randn(3, 1, 8)
    before = classifier(x)
    with torch.no_grad():
        classifier.weight.mul_(torch.tensor([0.1, 2.0, 5.0, 30.0])[:, None])
    torch.testing.assert_close(
        classifier(17.0 * x), before, atol=1e-6, rtol=1e-5
    )


@pytest.mark.parametrize("scale", [1.0, 30.0, 64.0])
@pytest.mark.parametrize("margin", [0.0, 0.2, 0.35])
def test_loss_equals_paper_formula(margin, scale):
    gen = torch.Generator().manual_seed(int(100 * margin + scale))
    cosines = torch.rand(6, 9, generator=gen) * 2 - 1
    targets = torch.randint(0, 9, (6,), generator=gen)
    loss = CosAMSLoss(margin=margin, scale=scale)
    expected = cosams_by_hand(cosines, targets, margin, scale)
    value = loss(cosines[:, None], targets[:, None])
    assert value.shape == ()
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    # (batch, classes) predictions and (batch,) targets are accepted too
    assert loss(cosines, targets).item() == pytest.approx(
        expected, rel=1e-5, abs=1e-5
    )


def test_margin_raises_loss():
    """The margin makes the target harder: loss grows with m."""
    torch.manual_seed(0)
    cosines = torch.rand(4, 1, 5) * 2 - 1
    targets = torch.randint(0, 5, (4, 1))
    values = [
        CosAMSLoss(margin=m, scale=30.0)(cosines, targets).item()
        for m in (0.0, 0.1, 0.3)
    ]
    assert values[0] < values[1] < values[2]


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_zero_margin_is_scaled_cross_entropy(scale):
    torch.manual_seed(1)
    cosines = torch.rand(8, 11) * 2 - 1
    targets = torch.randint(0, 11, (8,))
    value = CosAMSLoss(margin=0.0, scale=scale)(
        cosines[:, None], targets[:, None]
    )
    torch.testing.assert_close(value, F.cross_entropy(scale * cosines, targets))


def test_gradient_reaches_classifier_weight():
    torch.manual_seed(2)
    classifier = CosineClassifier(input_size=16, out_neurons=5)
    embeddings = torch.randn(4, 1, 16, requires_grad=True)
    loss = CosAMSLoss(margin=0.2, scale=30.0)(
        classifier(embeddings), torch.tensor([0, 1, 2, 3])
    )
    loss.backward()
    assert classifier.weight.grad is not None
    assert torch.isfinite(classifier.weight.grad).all()
    assert classifier.weight.grad.abs().sum() > 0
    assert embeddings.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "margin,scale,message",
    [
        (0.2, 0.0, "scale must be > 0"),
        (0.2, -30.0, "scale must be > 0"),
        (0.2, math.nan, "scale must be > 0"),
        (-0.1, 30.0, "margin must be >= 0"),
        (math.nan, 30.0, "margin must be >= 0"),
    ],
)
def test_bad_scale_or_margin_raise(margin, scale, message):
    with pytest.raises(ValueError, match=message):
        CosAMSLoss(margin=margin, scale=scale)
