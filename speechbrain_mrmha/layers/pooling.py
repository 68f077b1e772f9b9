"""The pooling family of Wang et al., "Multi-Resolution Multi-Head
Attention in Deep Speaker Embedding", ICASSP 2020, on one masked core:
statistics pooling (``MaskedStatisticsPooling``) and the attention poolings
(one masked softmax), plus the multi-query multi-head attention of Zhao et
al. 2022 (MQMHA) on the same core.

Every variant differs only in how frame scores are made:

* ``"mlp"``: each head i has its own MLP over the whole frame vector,
  s_i(h) = V_i^T f(W_i h + g_i) + b_i (self-attentive, attentive statistics,
  global multi-head, MRMHA);
* ``"shared_mlp"``: one hidden layer shared by all heads, K outputs
  (structured self-attention, Lin et al. 2017, the paper's Eq. 1-2);
* ``"split_linear"``: head i scores only its own d/K sub-vector linearly
  (India et al. 2019, the paper's Eq. 5);
* ``"split_mlp"``: as ``"split_linear"`` with a private one-hidden-layer MLP
  per head (MQMHA's scorer).

The split scorers also take Q queries per head (``num_queries``): Q scorers
on the same sub-vector, so K*Q attention rows, ordered query by query.
Scores of head i are divided by a temperature T_i (MRMHA), padded frames are
set to -inf, a softmax over time gives the weights alpha (batch, heads, time),
and one weighted-sum core turns them into means (and optionally standard
deviations). All heads are computed together in batched tensor operations;
attention runs in float32 even under autocast. Statistics pooling is the
same mask (``length_mask``) with uniform weights over the valid frames.

Authors
 * speechbrain-mrmha developers
"""

import inspect
import math

import torch
import torch.nn as nn

from speechbrain_mrmha.layers.lengths import check_relative_lengths

SCORERS = ("mlp", "shared_mlp", "split_linear", "split_mlp")
STATISTICS_EPS = 1e-5  # added to statistics pooling's standard deviations
STATISTICS_VARIANCE_FLOOR = 1e-20  # below every variance that matters
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def length_mask(lengths, max_len, device=None):
    """Boolean mask of the valid frames from SpeechBrain relative lengths.

    The number of valid frames is ``round(lengths * max_len)`` (at least 1),
    as in SpeechBrain's ``StatisticsPooling``; ``lengths`` are checked by
    ``lengths.check_relative_lengths``.

    Arguments
    ---------
    lengths : torch.Tensor or None
        Relative lengths in (0, 1], shape (batch,). None means all valid.
    max_len : int
        Number of frames of the padded batch.
    device : torch.device, optional
        Used when ``lengths`` is None.

    Returns
    -------
    mask : torch.BoolTensor
        (batch, max_len) if lengths is given, else None.

    Example
    -------
    >>> length_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[ True,  True,  True,  True],
            [ True,  True, False, False]])
    """
    if lengths is None:
        return None
    check_relative_lengths(lengths)
    valid = torch.round(lengths.float() * max_len).clamp(min=1)
    frames = torch.arange(max_len, device=lengths.device, dtype=valid.dtype)
    return frames[None, :] < valid[:, None]


def check_frames(owner, x, lengths, input_size=None):
    """Raise a ValueError naming ``owner`` unless ``x`` is (batch, time,
    input_size) frames and ``lengths`` None or one relative length per row
    (``lengths.check_relative_lengths``).

    Arguments
    ---------
    owner : str
        The pooling's name, the head of the message.
    x : torch.Tensor
        The frames.
    lengths : torch.Tensor or None
        Relative lengths of the frames.
    input_size : int or None
        The frame size expected; None: any.

    Example
    -------
    >>> check_frames("MyPooling", torch.zeros(2, 5, 3), None, input_size=4)
    Traceback (most recent call last):
    ...
    ValueError: MyPooling expects (batch, time, 4) frames, got shape (2, 5, 3)
    """
    size = "d" if input_size is None else input_size
    if x.dim() != 3 or (input_size is not None and x.shape[-1] != input_size):
        raise ValueError(
            f"{owner} expects (batch, time, {size}) frames, "
            f"got shape {tuple(x.shape)}"
        )
    if lengths is not None:
        check_relative_lengths(lengths, x.shape[0], owner)


def masked_softmax(scores, mask):
    """Softmax over time with padded frames excluded (weight exactly 0).

    Arguments
    ---------
    scores : torch.Tensor
        (batch, heads, time) scores.
    mask : torch.BoolTensor or None
        (batch, time), True on valid frames.

    Returns
    -------
    weights : torch.Tensor
        (batch, heads, time), summing to 1 over valid frames.

    Example
    -------
    >>> w = masked_softmax(torch.zeros(1, 2, 4), torch.tensor([[True, True, False, False]]))
    >>> w[0, 0]
    tensor([0.5000, 0.5000, 0.0000, 0.0000])
    """
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


def weighted_statistics(
    x, weights, split_heads=False, std=False, eps=1e-5, num_queries=1
):
    """The weighted-sum core: per-head weighted mean (and standard deviation).

    Arguments
    ---------
    x : torch.Tensor
        (batch, time, channels) frames, padded frames already zeroed.
    weights : torch.Tensor
        (batch, heads, time) attention weights (0 on padded frames).
    split_heads : bool
        If True, head i only pools its own channels/heads sub-vector
        (the paper's Eq. 5); the result has ``channels`` values in all
        (``num_queries * channels`` with queries).
    std : bool
        Also return the weighted standard deviation, sqrt(sum_t a_t h_t^2 -
        mu^2) clamped at ``eps`` (Okabe et al. 2018).
    eps : float
        Variance floor.
    num_queries : int
        With ``split_heads``: the weight rows are Q groups of K heads, query
        by query (row q*K + i pools sub-vector i); K = heads / Q.

    Returns
    -------
    stats : torch.Tensor
        (batch, heads, channels) means, or (batch, heads, 2*channels) as
        [mean, std] per head; with ``split_heads`` the channel axis is
        channels/K.

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0]]])
    >>> weighted_statistics(x, torch.tensor([[[0.5, 0.5]]]), std=True)
    tensor([[[2., 1.]]])
    """
    batch, time, channels = x.shape
    if split_heads:
        heads = weights.shape[1] // num_queries
        x = x.reshape(batch, time, heads, channels // heads)
        weights = weights.reshape(batch, num_queries, heads, time)
        mean = torch.einsum("bqkt,btkc->bqkc", weights, x).flatten(1, 2)
        if not std:
            return mean
        square = torch.einsum("bqkt,btkc->bqkc", weights, x * x).flatten(1, 2)
    else:
        mean = torch.bmm(weights, x)
        if not std:
            return mean
        square = torch.bmm(weights, x * x)
    deviation = torch.sqrt((square - mean * mean).clamp(min=eps))
    return torch.cat([mean, deviation], dim=-1)


def attention_entropy(weights, eps=1e-12):
    """Entropy E = -sum_t alpha_t log alpha_t of each head (the paper's Fig. 2).

    Arguments
    ---------
    weights : torch.Tensor
        (batch, heads, time) attention weights; 0 log 0 counts as 0.
    eps : float
        Guard inside the log.

    Returns
    -------
    entropy : torch.Tensor
        (batch, heads), in nats; log(N) for uniform weights over N frames.

    Example
    -------
    >>> attention_entropy(torch.full((1, 1, 4), 0.25))
    tensor([[1.3863]])
    """
    weights = weights.float()
    return -(weights * torch.log(weights.clamp(min=eps))).sum(dim=-1)


def orthogonality_penalty(weights):
    """The paper's Eq. (3): P = ||A^T A - I||_F^2, averaged over the batch.

    A is the (time, heads) attention matrix of one utterance; P is 0 when the
    heads attend to disjoint single frames and positive otherwise.

    Arguments
    ---------
    weights : torch.Tensor
        (batch, heads, time) attention weights.

    Returns
    -------
    penalty : torch.Tensor
        Scalar.

    Example
    -------
    >>> orthogonality_penalty(torch.eye(3)[None])
    tensor(0.)
    """
    gram = torch.bmm(weights, weights.transpose(1, 2))
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return ((gram - eye) ** 2).sum(dim=(1, 2)).mean()


def default_temperatures(num_heads):
    """Fixed MRMHA temperatures T_i = max(1, 5 * floor((i - 1) / 2)), i = 1..K.

    The paper's slides give no values; this schedule is the one used by
    ASV-Subtools: two heads per resolution.

    Arguments
    ---------
    num_heads : int
        K.

    Returns
    -------
    temperatures : list of float

    Example
    -------
    >>> default_temperatures(6)
    [1.0, 1.0, 5.0, 5.0, 10.0, 10.0]
    """
    return [float(max(1, 5 * ((i - 1) // 2))) for i in range(1, num_heads + 1)]


class MaskedStatisticsPooling(nn.Module):
    """Statistics pooling: the mean and the unbiased standard deviation
    (+ 1e-5) of the ``round(l * T)`` valid frames of each row, on the mask of
    every pooling here (``length_mask``), in one vectorised pass, in float32
    even under autocast, and deterministic: the same output in train and
    eval mode, call after call, and padded frames (even inf or NaN) never
    reach it nor its gradient.

    It takes the place of SpeechBrain's ``StatisticsPooling``, which loops
    over the batch and adds random noise of 1e-5 to 9e-5 to the means in
    eval mode too; the conventions are otherwise the same (docs/EQUATIONS.md,
    "Statistics pooling"), except that one valid frame gives the standard
    deviation 1e-5 instead of NaN, and the variance is floored at 1e-20 so
    that its gradient stays finite where it is 0.

    Arguments
    ---------
    input_size : int or None
        d, the frame size (what ``ResNet34`` hands a pooling factory); it
        fixes ``output_size``. None: any size.
    return_mean : bool
        Output the means.
    return_std : bool
        Output the standard deviations.
    mean_offset : float
        A constant added to every mean: 0 by default; 5e-5, the midpoint of
        SpeechBrain's noise, where this layer stands in for SpeechBrain's in
        a model trained with it (``inference.export.deployable``).

    Example
    -------
    >>> pool = MaskedStatisticsPooling(input_size=2)
    >>> x = torch.tensor([[[1.0, 2.0], [3.0, 2.0], [9.0, 9.0]]])
    >>> pool(x, torch.tensor([2 / 3]))  # the two valid frames
    tensor([[[2.0000e+00, 2.0000e+00, 1.4142e+00, 1.0000e-05]]])
    >>> pool.output_size
    4
    """

    def __init__(
        self,
        input_size=None,
        return_mean=True,
        return_std=True,
        mean_offset=0.0,
    ):
        super().__init__()
        if not (return_mean or return_std):
            raise ValueError("MaskedStatisticsPooling: nothing to return")
        self.input_size = input_size
        self.return_mean, self.return_std = return_mean, return_std
        self.mean_offset = float(mean_offset)
        self.eps = STATISTICS_EPS
        if input_size is not None:
            self.output_size = input_size * (return_mean + return_std)

    def forward(self, x, lengths=None):
        """Pools (batch, time, d) frames into (batch, 1, d or 2 d).

        Arguments
        ---------
        x : torch.Tensor
            (batch, time, d) frames.
        lengths : torch.Tensor or None
            Relative lengths in (0, 1], shape (batch,); None: all valid.

        Returns
        -------
        stats : torch.Tensor
            (batch, 1, output_size), means then standard deviations.
        """
        check_frames(type(self).__name__, x, lengths, self.input_size)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            mask = length_mask(lengths, x.shape[1], device=x.device)
            if mask is None:
                count = torch.full_like(x[:, :1, 0], x.shape[1])
            else:
                keep = mask[:, :, None]
                x = x.masked_fill(~keep, 0.0)
                count = mask.sum(dim=1, keepdim=True).to(x.dtype)
            mean = x.sum(dim=1) / count
            pieces = []
            if self.return_mean:
                pieces.append(mean + self.mean_offset)
            if self.return_std:
                centred = x - mean[:, None]
                if mask is not None:
                    centred = centred.masked_fill(~keep, 0.0)
                unbiased = (count - 1).clamp(min=1)
                variance = (centred * centred).sum(dim=1) / unbiased
                # the floor keeps the gradient of sqrt finite at 0 variance
                # (one frame, a constant channel); sqrt(1e-20) is 1e-10
                variance = variance.clamp(min=STATISTICS_VARIANCE_FLOOR)
                pieces.append(variance.sqrt() + self.eps)
        return torch.cat(pieces, dim=1).unsqueeze(1)

    def extra_repr(self):
        """The settings shown in ``print(module)``."""
        return (
            f"input_size={self.input_size}, return_mean={self.return_mean}, "
            f"return_std={self.return_std}, mean_offset={self.mean_offset}"
        )


class AttentionPooling(nn.Module):
    """The one core behind every attention pooling of the paper.

    Arguments
    ---------
    input_size : int
        d, channels of each frame h_t.
    num_heads : int
        K, number of attention heads.
    scorer : str
        ``"mlp"`` (a private MLP per head over the whole vector),
        ``"shared_mlp"`` (one hidden layer shared by all heads, Lin et al.),
        ``"split_linear"`` (head i scores its own d/K sub-vector, Eq. 5) or
        ``"split_mlp"`` (the same through a private MLP, MQMHA).
    hidden_size : int, optional
        l, hidden size of the MLP scorers; default ``input_size`` as in the
        paper (W is l x l), d/K for ``"split_mlp"``. Unused by
        ``"split_linear"``.
    activation : str
        f, ``"tanh"`` (default) or ``"relu"``.
    temperatures : list of float, optional
        T_i per head (per attention row, K*Q values, with queries); scores
        of head i are divided by T_i before the softmax. None means T_i = 1
        (no resolution differences).
    learnable_temperatures : bool
        Learn T_i = 1 + t_i^2 (always >= 1), starting from ``temperatures``
        (which must then be >= 1). A head starting at exactly 1 has zero
        gradient on t_i and stays the sharpest head.
    std : bool
        Also output each head's weighted standard deviation.
    num_queries : int
        Q scorers per head on the same sub-vector (split scorers only): K*Q
        attention rows, row q*K + i for query q of head i, and an output of
        Q times the size.

    Example
    -------
    >>> pool = AttentionPooling(input_size=8, num_heads=2)
    >>> pool(torch.randn(3, 10, 8), torch.tensor([1.0, 0.5, 0.7])).shape
    torch.Size([3, 1, 16])
    """

    def __init__(
        self,
        input_size,
        num_heads=1,
        scorer="mlp",
        hidden_size=None,
        activation="tanh",
        temperatures=None,
        learnable_temperatures=False,
        std=False,
        num_queries=1,
    ):
        super().__init__()
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}"
            )
        if min(num_heads, input_size, num_queries) < 1:
            raise ValueError(
                "input_size, num_heads and num_queries must be >= 1, got "
                f"{input_size}, {num_heads} and {num_queries}"
            )
        self.split_heads = scorer.startswith("split_")
        if self.split_heads and input_size % num_heads:
            raise ValueError(
                f"split multi-head attention needs input_size ({input_size}) "
                f"divisible by num_heads ({num_heads})"
            )
        if num_queries > 1 and not self.split_heads:
            raise ValueError(
                "num_queries > 1 needs a split scorer ('split_linear' or "
                f"'split_mlp'), got {scorer!r}"
            )
        self.input_size = input_size
        self.num_heads = num_heads
        self.num_queries = num_queries
        self.scorer = scorer
        per_head = input_size // num_heads if self.split_heads else input_size
        default_hidden = per_head if scorer == "split_mlp" else input_size
        self.hidden_size = hidden_size or default_hidden
        self.activation = activation
        self.std = std
        rows = num_heads * num_queries
        self.output_size = rows * per_head * (2 if std else 1)
        self.last_attention = None
        self._init_scorer(rows, per_head)
        self._init_temperatures(temperatures, learnable_temperatures)

    def _init_scorer(self, rows, per_head):
        """W (``hidden`` or ``hidden_weight``/``hidden_bias`` per row), V
        (``score_weight``, one row per attention row) and b (``"mlp"``)."""
        self.hidden = None
        if self.scorer == "mlp":  # W_i, g_i of all heads in one projection
            self.hidden = nn.Linear(
                self.input_size, self.num_heads * self.hidden_size
            )
        elif self.scorer == "shared_mlp":
            self.hidden = nn.Linear(self.input_size, self.hidden_size)
        elif self.scorer == "split_mlp":  # W_r: l x d/K, g_r per row r
            bound = 1.0 / math.sqrt(per_head)  # nn.Linear's initialisation
            self.hidden_weight = nn.Parameter(
                torch.empty(rows, self.hidden_size, per_head).uniform_(
                    -bound, bound
                )
            )
            self.hidden_bias = nn.Parameter(
                torch.empty(rows, self.hidden_size).uniform_(-bound, bound)
            )
        fan_in = per_head if self.scorer == "split_linear" else self.hidden_size
        bound = 1.0 / math.sqrt(fan_in)
        self.score_weight = nn.Parameter(
            torch.empty(rows, fan_in).uniform_(-bound, bound)
        )
        self.score_bias = (
            nn.Parameter(torch.zeros(rows)) if self.scorer == "mlp" else None
        )

    def _init_temperatures(self, temperatures, learnable):
        self.learnable_temperatures = learnable
        rows = self.num_heads * self.num_queries
        if temperatures is None:
            temperatures = [1.0] * rows
            self.has_temperatures = learnable
        else:
            self.has_temperatures = True
        temperatures = torch.as_tensor(
            temperatures, dtype=torch.float32
        ).flatten()
        if temperatures.numel() != rows:
            heads = f"{rows} heads"
            if self.num_queries > 1:
                heads = f"{rows} (query, head) pairs"
            raise ValueError(
                f"temperatures has {temperatures.numel()} values for {heads}"
            )
        if learnable and bool((temperatures < 1).any()):
            raise ValueError(
                f"learnable temperatures must start >= 1, got {temperatures.tolist()}"
            )
        if not bool((temperatures > 0).all()):
            raise ValueError(
                f"temperatures must be > 0, got {temperatures.tolist()}"
            )
        if learnable:
            self.temperature_root = nn.Parameter(torch.sqrt(temperatures - 1.0))
        else:
            self.register_buffer("fixed_temperatures", temperatures)

    @property
    def temperatures(self):
        """T_i of every head (attention row), a (rows,) tensor (1 + t_i^2
        when learnable)."""
        if self.learnable_temperatures:
            return 1.0 + self.temperature_root**2
        return self.fixed_temperatures

    def scores(self, x):
        """Raw scores s_i(h_t) / T_i, (batch, rows, time), from float32 frames
        (rows = heads, or heads * queries, query by query)."""
        batch, time, _ = x.shape
        if self.split_heads:
            scores = self._split_scores(x).reshape(batch, -1, time)
        else:
            projected = nn.functional.linear(
                x, self.hidden.weight.float(), self.hidden.bias.float()
            )
            hidden = ACTIVATIONS[self.activation](projected)
            if self.scorer == "shared_mlp":
                scores = torch.matmul(
                    hidden, self.score_weight.float().t()
                ).transpose(1, 2)
            else:
                hidden = hidden.reshape(
                    batch, time, self.num_heads, self.hidden_size
                )
                scores = torch.einsum(
                    "btkl,kl->bkt", hidden, self.score_weight.float()
                )
                scores = scores + self.score_bias.float()[None, :, None]
        if self.has_temperatures:
            scores = scores / self.temperatures.float()[None, :, None]
        return scores

    def _split_scores(self, x):
        """(batch, queries, heads, time) scores of the split scorers: row
        q*K + i sees only sub-vector i."""
        batch, time, _ = x.shape
        heads, queries = self.num_heads, self.num_queries
        parts = x.reshape(batch, time, heads, -1)
        if self.scorer == "split_linear":
            weight = self.score_weight.float().reshape(queries, heads, -1)
            return torch.einsum("btkc,qkc->bqkt", parts, weight)
        size = self.hidden_size
        weight = self.hidden_weight.float().reshape(queries, heads, size, -1)
        projected = torch.einsum("btkc,qklc->bqktl", parts, weight)
        bias = self.hidden_bias.float().reshape(queries, heads, 1, size)
        hidden = ACTIVATIONS[self.activation](projected + bias)
        vector = self.score_weight.float().reshape(queries, heads, size)
        return torch.einsum("bqktl,qkl->bqkt", hidden, vector)

    def _attend(self, x, lengths):
        check_frames(type(self).__name__, x, lengths, self.input_size)
        mask = length_mask(lengths, x.shape[1], device=x.device)
        x = x.float()
        if mask is not None:
            x = x.masked_fill(~mask[:, :, None], 0.0)
        weights = masked_softmax(self.scores(x), mask)
        return x, weights, mask

    def attention(self, x, lengths=None):
        """Attention weights alpha, (batch, rows, time): 0 on padded frames,
        summing to 1 over the valid frames of each head (rows = heads, or
        heads * queries, query by query)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._attend(x, lengths)[1]

    def forward(self, x, lengths=None):
        """Pools (batch, time, input_size) frames into (batch, 1, output_size).

        The weights are kept in ``self.last_attention`` (with their graph) for
        a training loss penalty or entropy logging.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, weights, mask = self._attend(x, lengths)
            if self.std:
                stats = self._statistics_with_std(x, weights, mask)
            else:
                stats = weighted_statistics(
                    x,
                    weights,
                    split_heads=self.split_heads,
                    num_queries=self.num_queries,
                )
        self.last_attention = weights
        return stats.reshape(x.shape[0], 1, -1)

    def _statistics_with_std(self, x, weights, mask):
        # The variance is shift-invariant: centre the frames on their plain
        # mean first so that E[x^2] - mu^2 loses less float32 precision.
        if mask is None:
            center = x.mean(dim=1, keepdim=True)
            centred = x - center
        else:
            count = mask.sum(dim=1).clamp(min=1)[:, None, None].float()
            center = x.sum(dim=1, keepdim=True) / count
            centred = (x - center).masked_fill(~mask[:, :, None], 0.0)
        mean, deviation = weighted_statistics(
            centred,
            weights,
            split_heads=self.split_heads,
            std=True,
            num_queries=self.num_queries,
        ).chunk(2, dim=-1)
        if self.split_heads:  # row q*K + i: the centre of sub-vector i
            center = center.reshape(x.shape[0], self.num_heads, -1)
            center = center.repeat(1, self.num_queries, 1)
        return torch.cat([mean + center, deviation], dim=-1)

    def penalty(self):
        """Eq. (3) penalty ||A^T A - I||_F^2 of the last forward pass."""
        if self.last_attention is None:
            raise RuntimeError("penalty() needs a forward pass first")
        return orthogonality_penalty(self.last_attention)

    def extra_repr(self):
        """The settings shown in ``print(module)``."""
        queries = ""
        if self.num_queries > 1:
            queries = f"num_queries={self.num_queries}, "
        return (
            f"input_size={self.input_size}, num_heads={self.num_heads}, {queries}scorer={self.scorer}, "
            f"hidden_size={self.hidden_size}, activation={self.activation}, std={self.std}, "
            f"learnable_temperatures={self.learnable_temperatures}"
        )


class SelfAttentivePooling(AttentionPooling):
    """Self-attentive pooling: one MLP scorer, e = sum_t alpha_t h_t.

    Arguments
    ---------
    input_size : int
        d.
    hidden_size : int, optional
        l (default d).
    activation : str
        ``"tanh"`` or ``"relu"``.

    Example
    -------
    >>> SelfAttentivePooling(input_size=8)(torch.randn(2, 5, 8)).shape
    torch.Size([2, 1, 8])
    """

    def __init__(self, input_size, hidden_size=None, activation="tanh"):
        super().__init__(
            input_size=input_size,
            num_heads=1,
            scorer="mlp",
            hidden_size=hidden_size,
            activation=activation,
        )


class AttentiveStatisticsPooling(AttentionPooling):
    """Attentive statistics pooling (Okabe et al. 2018): weighted mean and
    weighted standard deviation under one self-attentive head; output 2d.

    Arguments
    ---------
    input_size : int
        d.
    hidden_size : int, optional
        l (default d).
    activation : str
        ``"tanh"`` or ``"relu"``.

    Example
    -------
    >>> AttentiveStatisticsPooling(input_size=8)(torch.randn(2, 5, 8)).shape
    torch.Size([2, 1, 16])
    """

    def __init__(self, input_size, hidden_size=None, activation="tanh"):
        super().__init__(
            input_size=input_size,
            num_heads=1,
            scorer="mlp",
            hidden_size=hidden_size,
            activation=activation,
            std=True,
        )


class SplitMultiHeadAttentionPooling(AttentionPooling):
    """Split multi-head attention (India et al. 2019, the paper's Eq. 5):
    h_t is cut into K sub-vectors, head i scores its own with V_i^T h_t^(i);
    e = [e^(1) .. e^(K)] has d values.

    Arguments
    ---------
    input_size : int
        d, divisible by ``num_heads``.
    num_heads : int
        K.

    Example
    -------
    >>> SplitMultiHeadAttentionPooling(input_size=8, num_heads=4)(torch.randn(2, 5, 8)).shape
    torch.Size([2, 1, 8])
    """

    def __init__(self, input_size, num_heads=4):
        super().__init__(
            input_size=input_size, num_heads=num_heads, scorer="split_linear"
        )


class StructuredSelfAttentionPooling(AttentionPooling):
    """Structured self-attention (Lin et al. 2017; the paper's Eq. 1-2):
    A = softmax_t(f(H^T W1) W2), E = H A, output K*d. Add
    ``penalty_weight * pooling.penalty()`` (Eq. 3) to the training loss.

    Arguments
    ---------
    input_size : int
        d.
    num_heads : int
        K (columns of A).
    hidden_size : int, optional
        Width of W1 (default d).
    activation : str
        g, ``"tanh"`` or ``"relu"``.

    Example
    -------
    >>> pool = StructuredSelfAttentionPooling(input_size=8, num_heads=4)
    >>> pool(torch.randn(2, 5, 8)).shape, pool.penalty().dim()
    (torch.Size([2, 1, 32]), 0)
    """

    def __init__(
        self, input_size, num_heads=4, hidden_size=None, activation="tanh"
    ):
        super().__init__(
            input_size=input_size,
            num_heads=num_heads,
            scorer="shared_mlp",
            hidden_size=hidden_size,
            activation=activation,
        )


class GlobalMultiHeadAttentionPooling(AttentionPooling):
    """Global multi-head attention (proposed): K heads, each its own MLP
    scorer over the whole frame vector; e = (e^(1), .., e^(K)), K*d values
    (2*K*d with ``std``).

    Arguments
    ---------
    input_size : int
        d.
    num_heads : int
        K.
    hidden_size : int, optional
        l (default d).
    activation : str
        ``"tanh"`` or ``"relu"``.
    std : bool
        Also output each head's weighted standard deviation.

    Example
    -------
    >>> GlobalMultiHeadAttentionPooling(input_size=8, num_heads=4)(torch.randn(2, 5, 8)).shape
    torch.Size([2, 1, 32])
    """

    def __init__(
        self,
        input_size,
        num_heads=4,
        hidden_size=None,
        activation="tanh",
        std=False,
    ):
        super().__init__(
            input_size=input_size,
            num_heads=num_heads,
            scorer="mlp",
            hidden_size=hidden_size,
            activation=activation,
            std=std,
        )


class MultiResolutionMultiHeadAttentionPooling(AttentionPooling):
    """Multi-resolution multi-head attention, MRMHA (proposed): global
    multi-head attention where head i uses alpha^(i) = softmax_t(s_i(h_t) / T_i).
    A larger T_i gives flatter weights; T_i -> inf is average pooling, and all
    T_i = 1 is global multi-head attention.

    Arguments
    ---------
    input_size : int
        d.
    num_heads : int
        K.
    temperatures : list of float, optional
        T_1..T_K; default ``default_temperatures(K)``, i.e.
        max(1, 5 * floor((i - 1) / 2)) = [1, 1, 5, 5, 10, 10] for K = 6.
    learnable_temperatures : bool
        Learn T_i = 1 + t_i^2 >= 1, starting from ``temperatures``.
    hidden_size : int, optional
        l (default d).
    activation : str
        ``"tanh"`` or ``"relu"``.
    std : bool
        Also output each head's weighted standard deviation.

    Example
    -------
    >>> pool = MultiResolutionMultiHeadAttentionPooling(input_size=8, num_heads=4)
    >>> pool.temperatures
    tensor([1., 1., 5., 5.])
    >>> pool(torch.randn(2, 5, 8)).shape
    torch.Size([2, 1, 32])
    """

    def __init__(
        self,
        input_size,
        num_heads=4,
        temperatures=None,
        learnable_temperatures=False,
        hidden_size=None,
        activation="tanh",
        std=False,
    ):
        if temperatures is None:
            temperatures = default_temperatures(num_heads)
        super().__init__(
            input_size=input_size,
            num_heads=num_heads,
            scorer="mlp",
            hidden_size=hidden_size,
            activation=activation,
            temperatures=temperatures,
            learnable_temperatures=learnable_temperatures,
            std=std,
        )


class MultiQueryMultiHeadAttentionPooling(AttentionPooling):
    """Multi-query multi-head attentive statistics pooling, MQMHA (Zhao et
    al., "Multi-query multi-head attention pooling and inter-topk penalty
    for speaker verification", ICASSP 2022; WeSpeaker's ``MQMHASTP``).

    h_t is cut into K sub-vectors h_t^(i) of d/K values; head i has Q
    queries, each its own scorer on h_t^(i) only,
    s_t^(q,i) = v_qi^T f(W_qi h_t^(i) + g_qi) (``hidden_size=0``:
    v_qi^T h_t^(i)); every (query, head) pair gives a softmax over the valid
    frames and the weighted mean and standard deviation of h^(i). The
    output, 2 Q d values, is ordered query by query, then head by head,
    [mu; sigma] each (WeSpeaker's order). With K = Q = 1 it is attentive
    statistics pooling with a bias-free score (the bias cancels).

    Arguments
    ---------
    input_size : int
        d, divisible by ``num_heads``.
    num_heads : int
        K (default 4, as the other multi-head poolings here; WeSpeaker's
        ``MQMHASTP`` defaults to 8).
    num_queries : int
        Q (default 2, WeSpeaker's ``query_num``).
    hidden_size : int
        l, width of each scorer's hidden layer (default 64, WeSpeaker's
        ``bottleneck_dim`` with ``layer_num=2``); 0: linear scorers
        (``layer_num=1``).
    activation : str
        f, ``"tanh"`` (default, as WeSpeaker) or ``"relu"``.

    Example
    -------
    >>> pool = MultiQueryMultiHeadAttentionPooling(input_size=8, num_heads=2)
    >>> pool(torch.randn(3, 10, 8), torch.tensor([1.0, 0.5, 0.7])).shape
    torch.Size([3, 1, 32])
    >>> pool.output_size, pool.last_attention.shape  # 2 Q d; K Q rows
    (32, torch.Size([3, 4, 10]))
    """

    def __init__(
        self,
        input_size,
        num_heads=4,
        num_queries=2,
        hidden_size=64,
        activation="tanh",
    ):
        if hidden_size is None or hidden_size < 0:
            raise ValueError(
                f"hidden_size must be >= 0 (0: linear scorers), got {hidden_size}"
            )
        super().__init__(
            input_size=input_size,
            num_heads=num_heads,
            num_queries=num_queries,
            scorer="split_mlp" if hidden_size else "split_linear",
            hidden_size=hidden_size or None,
            activation=activation,
            std=True,
        )


POOLINGS = {
    "statistics": MaskedStatisticsPooling,
    "self_attentive": SelfAttentivePooling,
    "attentive_statistics": AttentiveStatisticsPooling,
    "split_multi_head": SplitMultiHeadAttentionPooling,
    "structured_self_attention": StructuredSelfAttentionPooling,
    "global_multi_head": GlobalMultiHeadAttentionPooling,
    "mrmha": MultiResolutionMultiHeadAttentionPooling,
    "multi_query_multi_head": MultiQueryMultiHeadAttentionPooling,
}
"""Every pooling by name: statistics pooling and the attention poolings."""


def build_pooling(
    input_size,
    name,
    num_heads=None,
    temperatures=None,
    learnable_temperatures=False,
    std=False,
    hidden_size=None,
    activation="tanh",
    num_queries=None,
):
    """Build a pooling by registry name from plain settings (what hyperpyyaml
    files forward). Settings a variant does not take must stay unset
    (None / False / "tanh").

    Arguments
    ---------
    input_size : int
        d, given by the encoder.
    name : str
        A key of ``POOLINGS``.
    num_heads, temperatures, learnable_temperatures, std, hidden_size, activation, num_queries
        As in the pooling classes.

    Returns
    -------
    pooling : torch.nn.Module

    Example
    -------
    >>> build_pooling(1024, "mrmha", num_heads=6).temperatures
    tensor([ 1.,  1.,  5.,  5., 10., 10.])
    >>> build_pooling(8, "statistics").output_size
    16
    >>> build_pooling(1024, "multi_query_multi_head", num_queries=3).output_size
    6144
    >>> build_pooling(8, "attentive_statistics", num_heads=4)
    Traceback (most recent call last):
    ...
    ValueError: pooling 'attentive_statistics' does not take num_heads (got 4)
    """
    settings = {
        "num_heads": num_heads,
        "temperatures": temperatures,
        "learnable_temperatures": learnable_temperatures,
        "std": std,
        "hidden_size": hidden_size,
        "activation": activation,
        "num_queries": num_queries,
    }
    unset = {
        "num_heads": None,
        "temperatures": None,
        "learnable_temperatures": False,
        "std": False,
        "hidden_size": None,
        "activation": "tanh",
        "num_queries": None,
    }
    if name not in POOLINGS:
        raise ValueError(
            f"unknown pooling {name!r}; choose one of {sorted(POOLINGS)}"
        )
    cls = POOLINGS[name]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {}
    for key, value in settings.items():
        if key in accepted:
            if value is not None:
                kwargs[key] = value
        elif value != unset[key]:
            raise ValueError(
                f"pooling {name!r} does not take {key} (got {value})"
            )
    return cls(input_size=input_size, **kwargs)
