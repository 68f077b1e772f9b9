"""Additive cosine margin softmax (CosAMS, a.k.a. AM-softmax), the loss of
Wang et al., ICASSP 2020:

L = -(1/B) sum_u log( exp(eta (cos theta_y - m)) /
        (exp(eta (cos theta_y - m)) + sum_{j != y} exp(eta cos theta_j)) )

The cosine classifier gives cos theta_j; the loss is SpeechBrain's
``LogSoftmaxWrapper(AngularMargin(margin, scale))``. Beyond the paper:
additive angular margin (AAM, ArcFace: cos(theta_y + m) instead of
cos theta_y - m) on SpeechBrain's ``AdditiveAngularMargin``. Both losses
take a new margin between steps (the margin warm-up of
``speechbrain_mrmha.training.schedules``).

Authors
 * speechbrain-mrmha developers
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from speechbrain.nnet.losses import (
    AdditiveAngularMargin,
    AngularMargin,
    LogSoftmaxWrapper,
)


class CosineClassifier(nn.Module):
    """Cosine between the L2-normalised embedding and L2-normalised class
    weights, cos theta_j = x^T w_j / (|x| |w_j|).

    Arguments
    ---------
    input_size : int
        Embedding size.
    out_neurons : int
        Number of training speakers C.

    Example
    -------
    >>> classifier = CosineClassifier(input_size=16, out_neurons=5)
    >>> cosines = classifier(torch.randn(3, 1, 16))
    >>> cosines.shape, bool(cosines.abs().max() <= 1 + 1e-6)
    (torch.Size([3, 1, 5]), True)
    """

    def __init__(self, input_size, out_neurons):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_neurons, input_size))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x):
        """(batch, 1, input_size) or (batch, input_size) embeddings to
        (batch, 1, out_neurons) cosines."""
        if x.dim() == 3:
            x = x.squeeze(1)
        cosines = F.linear(
            F.normalize(x.float(), dim=-1),
            F.normalize(self.weight.float(), dim=-1),
        )
        return cosines.unsqueeze(1)


class CosAMSLoss(nn.Module):
    """CosAMS loss on cosine predictions, usable as ``compute_cost`` in a Brain.

    Arguments
    ---------
    margin : float
        m, subtracted from the target cosine.
    scale : float
        eta, multiplies every cosine.

    Example
    -------
    >>> loss = CosAMSLoss(margin=0.2, scale=30.0)
    >>> cosines = torch.tensor([[[0.9, 0.1]], [[0.2, 0.8]]])
    >>> value = loss(cosines, torch.tensor([[0], [1]]))
    >>> value.shape, bool(value > 0)
    (torch.Size([]), True)
    """

    def __init__(self, margin=0.2, scale=30.0):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"CosAMS scale must be > 0, got {scale}")
        if not margin >= 0:
            raise ValueError(f"CosAMS margin must be >= 0, got {margin}")
        self.scale = scale
        self.margin = margin

    @property
    def margin(self):
        """m; setting it (e.g. by a margin warm-up) takes effect at the next call."""
        return self._margin

    @margin.setter
    def margin(self, value):
        if not value >= 0:
            raise ValueError(f"margin must be >= 0, got {value}")
        self._margin = float(value)
        self.wrapper = LogSoftmaxWrapper(self.margin_function(self._margin))

    def margin_function(self, margin):
        """SpeechBrain's ``AngularMargin``: scale * (cos theta_y - m)."""
        return AngularMargin(margin=margin, scale=self.scale)

    def forward(self, predictions, targets, length=None):
        """Mean loss over the batch.

        Arguments
        ---------
        predictions : torch.Tensor
            (batch, 1, classes) cosines from ``CosineClassifier``.
        targets : torch.Tensor
            (batch, 1) or (batch,) class indexes.
        length : torch.Tensor, optional
            Ignored (one target per utterance); accepted for the Brain's
            ``compute_cost(predictions, targets, lengths)`` form.

        Returns
        -------
        loss : torch.Tensor
            Scalar.
        """
        if predictions.dim() == 2:
            predictions = predictions.unsqueeze(1)
        if targets.dim() == 1:
            targets = targets.unsqueeze(1)
        return self.wrapper(predictions.float(), targets)


class AAMLoss(CosAMSLoss):
    """Additive angular margin softmax (AAM, ArcFace; Deng et al. 2019,
    Liu et al. 2019 for speakers) on cosine predictions: the target logit is
    eta cos(theta_y + m) instead of CosAMS' eta (cos theta_y - m); past
    theta_y + m > pi it continues as eta (cos theta_y - m sin m) so the
    logit keeps decreasing. This is SpeechBrain's
    ``LogSoftmaxWrapper(AdditiveAngularMargin(margin, scale))``.

    Arguments
    ---------
    margin : float
        m in radians, added to the target angle.
    scale : float
        eta, multiplies every cosine.

    Example
    -------
    >>> loss = AAMLoss(margin=0.2, scale=30.0)
    >>> cosines = torch.tensor([[[0.9, 0.1]], [[0.2, 0.8]]])
    >>> value = loss(cosines, torch.tensor([[0], [1]]))
    >>> value.shape, bool(value > 0)
    (torch.Size([]), True)
    """

    def margin_function(self, margin):
        """SpeechBrain's ``AdditiveAngularMargin``: scale * cos(theta_y + m)."""
        return AdditiveAngularMargin(margin=margin, scale=self.scale)


MARGIN_LOSSES = {"cosams": CosAMSLoss, "aam": AAMLoss}
"""The margin losses by the name a configuration's ``loss`` key gives."""


def margin_loss(kind, margin, scale):
    """The margin loss named ``kind`` (a key of ``MARGIN_LOSSES``).

    Arguments
    ---------
    kind : str
        "cosams" (the paper: eta (cos theta_y - m)) or "aam"
        (eta cos(theta_y + m)).
    margin : float
        m.
    scale : float
        eta.

    Returns
    -------
    loss : CosAMSLoss or AAMLoss

    Example
    -------
    >>> type(margin_loss("aam", 0.2, 30.0)).__name__
    'AAMLoss'
    >>> margin_loss("arcface", 0.2, 30.0)
    Traceback (most recent call last):
    ...
    ValueError: loss must be one of ['cosams', 'aam'], got 'arcface'
    """
    if kind not in MARGIN_LOSSES:
        raise ValueError(
            f"loss must be one of {list(MARGIN_LOSSES)}, got {kind!r}"
        )
    return MARGIN_LOSSES[kind](margin=margin, scale=scale)
