"""Tests of the pooling family (speechbrain_mrmha/layers/pooling.py).

Every attention variant of the registry ``POOLINGS`` (and the shared core
with options the named classes do not expose) gets every check that applies
to it: shapes, masking, padding and permutation invariance, equality with a
loop-based transcription of its formula in docs/EQUATIONS.md (one section
per pooling, plus "Attention core"), equalities between variants,
SpeechBrain's attentive statistics, gradients, autocast and bad input.
Statistics pooling (``MaskedStatisticsPooling``) gets its own: the mean and
standard deviation of the valid frames, padding, determinism, SpeechBrain's
``StatisticsPooling``.
"""

import math

import pytest
import torch
from speechbrain.lobes.models.ECAPA_TDNN import (
    AttentiveStatisticsPooling as SpeechBrainAttentiveStatistics,
)
from speechbrain.nnet.pooling import StatisticsPooling
from torch import nn

from speechbrain_mrmha.layers.pooling import (
    POOLINGS,
    AttentionPooling,
    AttentiveStatisticsPooling,
    GlobalMultiHeadAttentionPooling,
    MaskedStatisticsPooling,
    MultiQueryMultiHeadAttentionPooling,
    MultiResolutionMultiHeadAttentionPooling,
    SelfAttentivePooling,
    SplitMultiHeadAttentionPooling,
    StructuredSelfAttentionPooling,
    attention_entropy,
    build_pooling,
    default_temperatures,
    orthogonality_penalty,
)

D = 12  # frame size, divisible by every K used below
T = 10  # padded frames per batch
VALID = [10, 7, 3, 1]  # valid frames per utterance of the test batch
STD_FLOOR = 1e-5  # documented variance floor of the weighted std (eps)

MRMHA = MultiResolutionMultiHeadAttentionPooling
GLOBAL = GlobalMultiHeadAttentionPooling
MQMHA = MultiQueryMultiHeadAttentionPooling


def _variants():
    """(class, kwargs) of every configuration under test."""
    cases = [
        (SelfAttentivePooling, {}),
        (SelfAttentivePooling, {"activation": "relu", "hidden_size": 6}),
        (AttentiveStatisticsPooling, {}),
        (AttentiveStatisticsPooling, {"activation": "relu", "hidden_size": 6}),
    ]
    for k in (1, 2, 4):
        cases.append((SplitMultiHeadAttentionPooling, {"num_heads": k}))
        cases.append((StructuredSelfAttentionPooling, {"num_heads": k}))
        for std in (False, True):
            cases.append((GLOBAL, {"num_heads": k, "std": std}))
            cases.append((MRMHA, {"num_heads": k, "std": std}))
    cases += [
        (
            StructuredSelfAttentionPooling,
            {"num_heads": 2, "activation": "relu", "hidden_size": 5},
        ),
        (GLOBAL, {"num_heads": 2, "activation": "relu", "hidden_size": 5}),
        (
            MRMHA,
            {
                "num_heads": 4,
                "temperatures": [1.0, 2.0, 3.0, 4.0],
                "activation": "relu",
            },
        ),
        (MRMHA, {"num_heads": 2, "learnable_temperatures": True}),
        (
            MRMHA,
            {
                "num_heads": 4,
                "learnable_temperatures": True,
                "std": True,
                "temperatures": [1.5, 2.0, 5.0, 10.0],
            },
        ),
        # MQMHA: heads and queries always given (``_heads``); l <= d, since
        # with the default l = 64 and N(0, 1) parameters (``build``) heads
        # are near one-hot, where the float32 variance of the core is only
        # good to ~2e-5 (test_pooling_mqmha.py checks the defaults)
        (MQMHA, {"num_heads": 4, "num_queries": 2, "hidden_size": 4}),
        (MQMHA, {"num_heads": 1, "num_queries": 1, "hidden_size": 6}),
        (
            MQMHA,
            {
                "num_heads": 2,
                "num_queries": 3,
                "hidden_size": 5,
                "activation": "relu",
            },
        ),
        (MQMHA, {"num_heads": 4, "num_queries": 2, "hidden_size": 0}),
        # options of the shared core that no named class exposes
        (
            AttentionPooling,
            {
                "num_heads": 2,
                "scorer": "split_linear",
                "std": True,
                "temperatures": [1.0, 3.0],
            },
        ),
        (
            AttentionPooling,
            {
                "num_heads": 4,
                "scorer": "split_linear",
                "learnable_temperatures": True,
                "temperatures": [1.0, 2.0, 3.0, 4.0],
            },
        ),
        (
            AttentionPooling,
            {
                "num_heads": 2,
                "scorer": "shared_mlp",
                "std": True,
                "temperatures": [2.0, 0.5],
            },
        ),
        (
            AttentionPooling,
            {
                "num_heads": 2,
                "num_queries": 2,
                "scorer": "split_mlp",
                "learnable_temperatures": True,
                "temperatures": [1.0, 2.0, 3.0, 4.0],
            },
        ),
        (
            AttentionPooling,
            {
                "num_heads": 3,
                "num_queries": 2,
                "scorer": "split_linear",
                "std": True,
            },
        ),
    ]
    return cases


VARIANTS = _variants()


def _case_id(case):
    cls, kwargs = case
    return cls.__name__ + "".join(
        f"-{k}={v}".replace(" ", "") for k, v in kwargs.items()
    )


variants = pytest.mark.parametrize(
    "cls,kwargs", VARIANTS, ids=[_case_id(c) for c in VARIANTS]
)


def _uses_std(case):
    cls, kwargs = case
    return cls in (AttentiveStatisticsPooling, MQMHA) or kwargs.get(
        "std", False
    )


def _is_split(case):
    cls, kwargs = case
    return cls in (SplitMultiHeadAttentionPooling, MQMHA) or kwargs.get(
        "scorer", ""
    ).startswith("split_")


STD_VARIANTS = [c for c in VARIANTS if _uses_std(c)]
std_variants = pytest.mark.parametrize(
    "cls,kwargs", STD_VARIANTS, ids=[_case_id(c) for c in STD_VARIANTS]
)


def _heads(kwargs):
    """Attention rows: heads times queries."""
    return kwargs.get("num_heads", 1) * kwargs.get("num_queries", 1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread wake-up latency (which
    dominates when the 2 cores are busy with other work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def copy_scorers(source, target):
    """Copies every parameter (not the temperatures) of source into target."""
    state = {
        k: v
        for k, v in source.state_dict().items()
        if k != "fixed_temperatures"
    }
    missing, unexpected = target.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {
        "fixed_temperatures",
        "temperature_root",
    }


def build(cls, kwargs, seed=0):
    """The pooling with random (not init-scale) parameters so that attention
    weights are far from uniform and differences show."""
    torch.manual_seed(seed)
    pool = cls(input_size=D, **kwargs)
    with torch.no_grad():
        for name, param in pool.named_parameters():
            if name == "temperature_root":
                param.add_(0.3 * torch.randn_like(param))
            else:
                param.normal_(0.0, 1.0)
    return pool


def batch(seed=1, valid=VALID, steps=T):
    """Random frames (batch, steps, D), zero padding, relative lengths."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(valid), steps, D, generator=gen)
    for i, n in enumerate(valid):
        x[i, n:] = 0.0
    lengths = torch.tensor([n / steps for n in valid])
    return x, lengths


def expected_output_size(cls, kwargs):
    """output_size as documented: K*d (Q*d for split, Q = 1 without
    queries), doubled with std."""
    heads = _heads(kwargs)
    size = kwargs.get("num_queries", 1) * D
    if not _is_split((cls, kwargs)):
        size = heads * D
    return size * (2 if _uses_std((cls, kwargs)) else 1)


def reference_pool(pool, frames):
    """Loop-based transcription of docs/EQUATIONS.md, sections "Attention core"
    to "Multi-resolution multi-head attention", for one utterance.

    frames: (N, d) valid frames only. Reads W_i, g_i (``hidden``, or
    ``hidden_weight``, ``hidden_bias`` per row), V_i (``score_weight``), b_i
    (``score_bias``) and T_i (``temperatures``) out of the module and
    computes, in float64 Python loops over heads and frames,
    s = V^T f(W h + g) + b (per head own W_i, g_i for "mlp"; one shared W, g
    for "shared_mlp"; s = V_i^T h^(i) on sub-vectors for "split_linear",
    s = V_i^T f(W_i h^(i) + g_i) for "split_mlp"),
    alpha = softmax(s / T), e = sum alpha h, std = sqrt(sum alpha h^2 - e^2)
    (variance floored at the documented eps). With Q queries (section
    "Multi-query multi-head attention") row r = q K + i is query q of head i.
    Returns the (output_size,) vector [e_1, (std_1), e_2, (std_2), ...].
    """
    f = {"tanh": torch.tanh, "relu": torch.relu}[pool.activation]
    heads = pool.num_heads
    rows = heads * pool.num_queries
    frames = frames.double()
    n, d = frames.shape
    temps = pool.temperatures.detach().double()
    V = pool.score_weight.detach().double()
    if pool.hidden is not None:
        W = pool.hidden.weight.detach().double()
        g = pool.hidden.bias.detach().double()
        hid = pool.hidden_size
    out = []
    for r in range(rows):
        i = r % heads  # the head (its sub-vector for the split scorers)
        scores = []
        for t in range(n):
            h = frames[t]
            c = d // heads
            if pool.scorer == "mlp":
                W_i, g_i = (
                    W[i * hid : (i + 1) * hid],
                    g[i * hid : (i + 1) * hid],
                )
                s = (
                    V[i] @ f(W_i @ h + g_i)
                    + pool.score_bias.detach().double()[i]
                )
            elif pool.scorer == "shared_mlp":
                s = V[i] @ f(W @ h + g)
            elif pool.scorer == "split_mlp":
                W_r = pool.hidden_weight.detach().double()[r]
                g_r = pool.hidden_bias.detach().double()[r]
                s = V[r] @ f(W_r @ h[i * c : (i + 1) * c] + g_r)
            else:
                s = V[r] @ h[i * c : (i + 1) * c]
            scores.append(float(s) / float(temps[r]))
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        alpha = [e / sum(exps) for e in exps]
        if pool.split_heads:
            c = d // heads
            sub = frames[:, i * c : (i + 1) * c]
        else:
            sub = frames
        mean = sum(alpha[t] * sub[t] for t in range(n))
        out.append(mean)
        if pool.std:
            square = sum(alpha[t] * sub[t] ** 2 for t in range(n))
            out.append(torch.sqrt((square - mean**2).clamp(min=STD_FLOOR)))
    return torch.cat(out)


# --------------------------------------------------------------------- shapes


def test_registry_is_covered():
    """Every registered attention pooling is among the parametrised
    variants; statistics pooling is registered with them (tests below)."""
    attention = {k: v for k, v in POOLINGS.items() if k != "statistics"}
    tested = {cls for cls, _ in VARIANTS}
    assert set(attention.values()) <= tested
    assert all(issubclass(cls, AttentionPooling) for cls in attention.values())
    assert POOLINGS["statistics"] is MaskedStatisticsPooling


@variants
def test_output_shape_and_size(cls, kwargs):
    pool = build(cls, kwargs)
    x, lengths = batch()
    out = pool(x, lengths)
    assert pool.output_size == expected_output_size(cls, kwargs)
    assert out.shape == (len(VALID), 1, pool.output_size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@variants
def test_attention_masked_and_normalised(cls, kwargs):
    pool = build(cls, kwargs)
    x, lengths = batch()
    weights = pool.attention(x, lengths)
    assert weights.shape == (len(VALID), _heads(kwargs), T)
    for i, n in enumerate(VALID):
        assert torch.all(weights[i, :, n:] == 0.0)
        assert torch.all(weights[i, :, :n] > 0.0)
        torch.testing.assert_close(
            weights[i, :, :n].sum(-1), torch.ones(_heads(kwargs))
        )
    pool(x, lengths)
    torch.testing.assert_close(pool.last_attention, weights)


# ---------------------------------------------------------- invariances


@variants
def test_padding_invariance(cls, kwargs):
    """An utterance pooled alone equals it inside a zero-padded batch."""
    pool = build(cls, kwargs)
    x, lengths = batch()
    pooled = pool(x, lengths)
    weights = pool.attention(x, lengths)
    for i, n in enumerate(VALID):
        alone = pool(x[i : i + 1, :n])
        torch.testing.assert_close(
            pooled[i : i + 1], alone, atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            weights[i, :, :n],
            pool.attention(x[i : i + 1, :n])[0],
            atol=1e-6,
            rtol=1e-5,
        )
    # lengths of all ones mean the same as no lengths
    full = x[:1].expand(3, -1, -1)
    torch.testing.assert_close(
        pool(full, torch.ones(3)), pool(full), atol=1e-6, rtol=1e-6
    )


@variants
@pytest.mark.parametrize("garbage", ["large", "inf", "nan"])
def test_padded_garbage_changes_nothing(cls, kwargs, garbage):
    pool = build(cls, kwargs)
    x, lengths = batch()
    clean = pool(x, lengths)
    dirty = x.clone()
    for i, n in enumerate(VALID):
        fill = {
            "large": 1e6 * torch.randn(T - n, D),
            "inf": torch.where(torch.rand(T - n, D) > 0.5, math.inf, -math.inf),
            "nan": torch.full((T - n, D), math.nan),
        }[garbage]
        dirty[i, n:] = fill
    dirty.requires_grad_(True)
    out = pool(dirty, lengths)
    torch.testing.assert_close(out, clean, atol=0, rtol=0)
    (out * torch.randn_like(out)).sum().backward()
    grad = dirty.grad
    assert torch.isfinite(grad).all()
    for i, n in enumerate(VALID):
        assert torch.all(grad[i, n:] == 0)


@variants
def test_permutation_invariance(cls, kwargs):
    """All scorers are frame-wise: reordering valid frames only reorders the
    attention weights and leaves the pooled vector unchanged."""
    pool = build(cls, kwargs)
    x, lengths = batch()
    shuffled = x.clone()
    perms = []
    gen = torch.Generator().manual_seed(5)
    for i, n in enumerate(VALID):
        perm = torch.randperm(n, generator=gen)
        perms.append(perm)
        shuffled[i, :n] = x[i, perm]
    torch.testing.assert_close(
        pool(shuffled, lengths), pool(x, lengths), atol=1e-5, rtol=1e-5
    )
    weights, moved = (
        pool.attention(x, lengths),
        pool.attention(shuffled, lengths),
    )
    for i, (n, perm) in enumerate(zip(VALID, perms)):
        torch.testing.assert_close(moved[i, :, :n], weights[i, :, perm])


# ------------------------------------------------------- equals the formula


PAPER_SCORER = {
    MQMHA: "split_mlp",
    SelfAttentivePooling: "mlp",
    AttentiveStatisticsPooling: "mlp",
    GLOBAL: "mlp",
    MRMHA: "mlp",
    StructuredSelfAttentionPooling: "shared_mlp",
    SplitMultiHeadAttentionPooling: "split_linear",
}


@variants
def test_matches_loop_transcription_of_paper(cls, kwargs):
    pool = build(cls, kwargs)
    # the transcription follows the module's configuration: check it is the
    # paper's one for this class before trusting it
    scorer = PAPER_SCORER.get(cls, kwargs.get("scorer"))
    hidden = kwargs.get("hidden_size", D)
    if cls is MQMHA:  # l = 64 by default, 0: linear scorers
        hidden = kwargs.get("hidden_size", 64) or D
        scorer = (
            "split_mlp" if kwargs.get("hidden_size", 64) else "split_linear"
        )
    elif scorer == "split_mlp":  # the core's default l = d/K
        hidden = kwargs.get("hidden_size", D // kwargs["num_heads"])
    assert pool.scorer == scorer
    assert pool.activation == kwargs.get("activation", "tanh")
    assert pool.std == _uses_std((cls, kwargs))
    assert pool.hidden_size == hidden
    x, lengths = batch()
    out = pool(x, lengths)
    for i, n in enumerate(VALID):
        expected = reference_pool(pool, x[i, :n]).float()
        torch.testing.assert_close(out[i, 0], expected, atol=1e-5, rtol=1e-4)


def test_reference_is_sensitive_to_temperatures():
    """Guards the transcription check: a wrong temperature is caught."""
    pool = build(MRMHA, {"num_heads": 2, "temperatures": [1.0, 4.0]})
    other = build(MRMHA, {"num_heads": 2, "temperatures": [1.0, 1.0]})
    x, _ = batch()
    assert not torch.allclose(
        reference_pool(pool, x[0]), reference_pool(other, x[0]), atol=1e-3
    )


@std_variants
def test_std_matches_speechbrain_attentive_statistics(cls, kwargs):
    """Per head, mean and std equal SpeechBrain's ECAPA AttentiveStatisticsPooling
    run on the same frames and the same scores (SpeechBrain masks, applies the
    softmax and computes its mean/std; its attention MLP is replaced by our
    scores). Lengths are exact in binary so both masks agree."""
    pool = build(cls, kwargs)
    steps, valid = 16, [16, 12, 8, 4]
    x, lengths = batch(valid=valid, steps=steps)
    rows, heads = _heads(kwargs), pool.num_heads  # row q K + i: head i
    ours = pool(x, lengths)[:, 0].reshape(len(valid), rows, -1)
    scores = pool.scores(x)  # (batch, rows, time), T_i applied
    split = _is_split((cls, kwargs))
    for i in range(rows):
        head = i % heads
        part = (
            x[..., head * D // heads : (head + 1) * D // heads] if split else x
        )
        channels = part.shape[-1]
        sb = SpeechBrainAttentiveStatistics(
            channels, attention_channels=4, global_context=False
        )
        head_scores = scores[:, i : i + 1].expand(-1, channels, -1)
        sb.tdnn, sb.tanh = nn.Identity(), nn.Identity()
        sb.conv = _FixedOutput(head_scores)
        theirs = sb(part.transpose(1, 2), lengths)[..., 0]
        torch.testing.assert_close(ours[:, i], theirs, atol=1e-5, rtol=1e-5)


class _FixedOutput(nn.Module):
    """Ignores its input and returns a fixed tensor (stands in for a layer)."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return self.value


# -------------------------------------------------- equalities of variants


@pytest.mark.parametrize("std", [False, True])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_huge_temperatures_give_mean_pooling(heads, std):
    pool = build(
        MRMHA, {"num_heads": heads, "temperatures": [1e6] * heads, "std": std}
    )
    x, lengths = batch()
    out = pool(x, lengths)[:, 0].reshape(len(VALID), heads, -1)
    for i, n in enumerate(VALID):
        frames = x[i, :n].double()
        mean = frames.mean(0)
        stats = (
            torch.cat(
                [
                    mean,
                    frames.std(0, unbiased=False).clamp(
                        min=math.sqrt(STD_FLOOR)
                    ),
                ]
            )
            if std
            else mean
        )
        for k in range(heads):
            torch.testing.assert_close(
                out[i, k].double(), stats, atol=2e-4, rtol=1e-4
            )


def test_huge_temperature_on_one_head_only():
    pool = build(MRMHA, {"num_heads": 2, "temperatures": [1.0, 1e6]})
    x, lengths = batch()
    out = pool(x, lengths)[:, 0].reshape(len(VALID), 2, D)
    n = VALID[0]
    torch.testing.assert_close(
        out[0, 1], x[0, :n].mean(0), atol=2e-4, rtol=1e-4
    )
    assert not torch.allclose(out[0, 0], x[0, :n].mean(0), atol=1e-2)


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("std", [False, True])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_unit_temperatures_equal_global_multi_head(heads, std, learnable):
    glob = build(GLOBAL, {"num_heads": heads, "std": std})
    mr = MRMHA(
        input_size=D,
        num_heads=heads,
        temperatures=[1.0] * heads,
        learnable_temperatures=learnable,
        std=std,
    )
    copy_scorers(glob, mr)
    x, lengths = batch()
    torch.testing.assert_close(
        mr(x, lengths), glob(x, lengths), atol=1e-6, rtol=1e-6
    )


def test_default_mrmha_differs_from_global():
    """Guards the test above: the default temperatures change the output."""
    glob = build(GLOBAL, {"num_heads": 4})
    mr = MRMHA(input_size=D, num_heads=4)
    copy_scorers(glob, mr)
    x, lengths = batch()
    assert not torch.allclose(mr(x, lengths), glob(x, lengths), atol=1e-3)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_global_single_head_equals_self_attentive(activation):
    glob = build(GLOBAL, {"num_heads": 1, "activation": activation})
    single = SelfAttentivePooling(input_size=D, activation=activation)
    single.load_state_dict(glob.state_dict())
    x, lengths = batch()
    torch.testing.assert_close(
        single(x, lengths), glob(x, lengths), atol=0, rtol=0
    )
    glob_std = build(
        GLOBAL, {"num_heads": 1, "activation": activation, "std": True}
    )
    stats = AttentiveStatisticsPooling(input_size=D, activation=activation)
    stats.load_state_dict(glob_std.state_dict())
    torch.testing.assert_close(
        stats(x, lengths), glob_std(x, lengths), atol=0, rtol=0
    )


def test_temperature_flattens_attention():
    """A larger T_i gives higher attention entropy (lower resolution)."""
    base = build(GLOBAL, {"num_heads": 1})
    x, lengths = batch()
    entropies = []
    for temp in (1.0, 2.0, 5.0, 20.0):
        pool = MRMHA(input_size=D, num_heads=1, temperatures=[temp])
        copy_scorers(base, pool)
        entropies.append(
            attention_entropy(pool.attention(x, lengths))[0, 0].item()
        )
    assert all(a < b for a, b in zip(entropies, entropies[1:]))
    assert entropies[-1] < math.log(VALID[0]) + 1e-6


# ---------------------------------------------------------------- gradients


@variants
def test_gradients_reach_every_parameter(cls, kwargs):
    pool = build(cls, kwargs)
    x, lengths = batch()
    out = pool(x, lengths)
    (out * torch.randn_like(out)).sum().backward()
    for name, param in pool.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        if name == "temperature_root":  # per head: t_i != 0 after build()
            assert torch.all(param.grad != 0), name
        elif name == "score_bias":
            # b_i shifts all scores of head i equally: the softmax cancels it,
            # so its gradient is 0 up to rounding (the paper's b is redundant)
            assert param.grad.abs().max() < 1e-5, name
        else:
            assert param.grad.abs().sum() > 0, name


def test_learnable_temperature_at_one_has_zero_gradient():
    """Documented: T = 1 + t^2 starting at 1 (t = 0) gets no gradient and stays
    the sharpest head; heads starting above 1 do get one."""
    torch.manual_seed(0)
    pool = MRMHA(
        input_size=D,
        num_heads=4,
        learnable_temperatures=True,
        temperatures=[1.0, 1.0, 5.0, 5.0],
    )
    torch.testing.assert_close(
        pool.temperatures, torch.tensor([1.0, 1.0, 5.0, 5.0])
    )
    x, lengths = batch()
    out = pool(x, lengths)
    (out * torch.randn_like(out)).sum().backward()
    grad = pool.temperature_root.grad
    assert torch.all(grad[:2] == 0)
    assert torch.all(grad[2:] != 0)


def test_learnable_temperatures_stay_at_least_one():
    """Large steps that pull every T_i down overshoot t_i = 0 (t_i changes
    sign) but never take T_i = 1 + t_i^2 below 1."""
    pool = build(
        MRMHA,
        {
            "num_heads": 4,
            "learnable_temperatures": True,
            "temperatures": [1.5, 2.0, 5.0, 10.0],
        },
    )
    optimiser = torch.optim.Adam([pool.temperature_root], lr=1.0)
    x, lengths = batch()
    signs = {
        1.0: torch.zeros(4, dtype=torch.bool),
        -1.0: torch.zeros(4, dtype=torch.bool),
    }
    for step in range(40):
        optimiser.zero_grad()
        out = pool(x, lengths)
        loss = (
            out * torch.randn_like(out)
        ).sum() + 10.0 * pool.temperatures.sum()
        loss.backward()
        optimiser.step()
        temps = pool.temperatures.detach()
        assert torch.all(temps >= 1.0), (step, temps)
        for sign in signs:
            signs[sign] |= torch.sign(pool.temperature_root.detach()) == sign
    assert torch.all(signs[1.0] & signs[-1.0])


# ------------------------------------------------------- penalty and entropy


def penalty_by_loop(weights):
    """||A^T A - I||_F^2 per utterance with A (time, heads), batch mean."""
    total = 0.0
    batch_size, heads, steps = weights.shape
    for b in range(batch_size):
        for i in range(heads):
            for j in range(heads):
                dot = sum(
                    float(weights[b, i, t]) * float(weights[b, j, t])
                    for t in range(steps)
                )
                total += (dot - (1.0 if i == j else 0.0)) ** 2
    return total / batch_size


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_orthogonality_penalty(heads):
    # one-hot heads on distinct frames: orthogonal, penalty 0
    frames = torch.randperm(T)[:heads]
    one_hot = torch.zeros(2, heads, T)
    one_hot[:, torch.arange(heads), frames] = 1.0
    assert orthogonality_penalty(one_hot).item() == 0.0
    # two heads on the same frame, or spread weights: positive
    if heads > 1:
        same = one_hot.clone()
        same[:, 1] = same[:, 0]
        assert orthogonality_penalty(same).item() > 0
    spread = torch.softmax(torch.randn(3, heads, T), dim=-1)
    assert orthogonality_penalty(spread).item() > 0
    assert orthogonality_penalty(spread).item() == pytest.approx(
        penalty_by_loop(spread), rel=1e-5
    )


def test_structured_penalty_has_gradient():
    pool = build(StructuredSelfAttentionPooling, {"num_heads": 4})
    with pytest.raises(RuntimeError, match="forward"):
        pool.penalty()
    x, lengths = batch()
    pool(x, lengths)
    penalty = pool.penalty()
    assert penalty.item() == pytest.approx(
        penalty_by_loop(pool.last_attention.detach()), rel=1e-5
    )
    penalty.backward()
    assert pool.hidden.weight.grad.abs().sum() > 0
    assert pool.score_weight.grad.abs().sum() > 0


def test_attention_entropy():
    x, lengths = batch()
    weights = build(MRMHA, {"num_heads": 4}).attention(x, lengths).detach()
    entropy = attention_entropy(weights)
    assert entropy.shape == (len(VALID), 4)
    for b in range(len(VALID)):
        for k in range(4):
            direct = -sum(
                a * math.log(a) for a in weights[b, k].tolist() if a > 0
            )
            assert entropy[b, k].item() == pytest.approx(direct, abs=1e-5)
    for n in (1, 3, 7):
        uniform = torch.zeros(1, 1, T)
        uniform[..., :n] = 1.0 / n
        assert attention_entropy(uniform).item() == pytest.approx(
            math.log(n), abs=1e-6
        )


# ------------------------------------------------------------------ autocast


@variants
def test_float32_under_autocast(cls, kwargs):
    pool = build(cls, kwargs)
    x, lengths = batch()
    reference = pool(x, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(x, lengths)
        weights = pool.attention(x, lengths)
        from_bf16 = pool(x.bfloat16(), lengths)
    assert out.dtype == weights.dtype == from_bf16.dtype == torch.float32
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        from_bf16, pool(x.bfloat16().float(), lengths), atol=1e-5, rtol=1e-5
    )


@variants
def test_scores_beyond_half_range_stay_finite(cls, kwargs):
    """Inputs scaled by 1e4 would overflow float16 scores; weights stay finite."""
    pool = build(cls, kwargs)
    x, lengths = batch()
    big = 1e4 * x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = pool.attention(big.half(), lengths)
        out = pool(big.half(), lengths)
    assert torch.isfinite(weights).all()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        weights.sum(-1), torch.ones(len(VALID), _heads(kwargs))
    )


# ---------------------------------------------------------------- bad input


@variants
def test_wrong_frame_shape_raises(cls, kwargs):
    pool = build(cls, kwargs)
    with pytest.raises(ValueError, match=f"expects \\(batch, time, {D}\\)"):
        pool(torch.randn(2, 5, D + 1))
    with pytest.raises(ValueError, match="expects"):
        pool(torch.randn(2, D, 5)[..., :4])  # (batch, channels, time) layout
    with pytest.raises(ValueError, match="expects"):
        pool(torch.randn(5, D))


@pytest.mark.parametrize("bad", [0.0, -0.2, 1.5, math.nan])
def test_lengths_outside_unit_interval_raise(bad):
    pool = build(MRMHA, {"num_heads": 2})
    with pytest.raises(
        ValueError, match=r"lengths must be relative lengths in \(0, 1\]"
    ):
        pool(torch.randn(3, 5, D), torch.tensor([1.0, bad, 0.5]))


def test_lengths_must_be_one_dimensional():
    pool = build(MRMHA, {"num_heads": 2})
    with pytest.raises(ValueError, match="lengths"):
        pool(torch.randn(3, 5, D), torch.ones(3, 1))


@pytest.mark.parametrize("count", [1, 2, 4])
def test_lengths_of_another_batch_size_raise(count):
    """One length per utterance: a (1,) tensor must not be broadcast silently
    over a batch of 3, nor a (2,) one fail deep inside torch."""
    pool = build(MRMHA, {"num_heads": 2})
    with pytest.raises(ValueError, match="lengths"):
        pool(torch.randn(3, 5, D), torch.full((count,), 0.6))


@pytest.mark.parametrize(
    "temperatures,message",
    [
        ([1.0], "1 values for 2 heads"),
        ([1.0, 1.0, 1.0], "3 values for 2 heads"),
        ([1.0, 0.0], "must be > 0"),
        ([1.0, -2.0], "must be > 0"),
        ([1.0, math.nan], "must be > 0"),
    ],
)
def test_bad_temperatures_raise(temperatures, message):
    with pytest.raises(ValueError, match=message):
        MRMHA(input_size=D, num_heads=2, temperatures=temperatures)


def test_learnable_temperatures_below_one_raise():
    with pytest.raises(
        ValueError, match="learnable temperatures must start >= 1"
    ):
        MRMHA(
            input_size=D,
            num_heads=2,
            temperatures=[0.5, 2.0],
            learnable_temperatures=True,
        )


def test_split_needs_divisible_size():
    with pytest.raises(
        ValueError, match=r"input_size \(10\) divisible by num_heads \(4\)"
    ):
        SplitMultiHeadAttentionPooling(input_size=10, num_heads=4)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"scorer": "conv"}, "scorer must be one of"),
        ({"activation": "gelu"}, "activation must be one of"),
        ({"num_heads": 0}, "must be >= 1"),
    ],
)
def test_bad_core_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionPooling(input_size=D, **kwargs)


# -------------------------------------------------------------- temperatures


@pytest.mark.parametrize("heads", range(1, 9))
def test_default_temperatures_follow_schedule(heads):
    expected = [
        max(1, 5 * math.floor((i - 1) / 2)) for i in range(1, heads + 1)
    ]
    assert default_temperatures(heads) == expected
    torch.testing.assert_close(
        MRMHA(input_size=D, num_heads=heads).temperatures,
        torch.tensor(expected, dtype=torch.float32),
    )


# ---------------------------------------------------------- statistics pooling


STATISTICS = [
    {},
    {"return_std": False},
    {"return_mean": False},
    {"mean_offset": 5e-5},
]
statistics_options = pytest.mark.parametrize(
    "options", STATISTICS, ids=["mean_std", "mean", "std", "offset"]
)


def _statistics(frames, options):
    """Loop transcription of docs/EQUATIONS.md, "Statistics pooling", for
    one utterance's valid frames (N, d): mean (+ offset), unbiased standard
    deviation + 1e-5 (1e-5 alone for one frame)."""
    frames = frames.double()
    pieces = []
    if options.get("return_mean", True):
        pieces.append(frames.mean(dim=0) + options.get("mean_offset", 0.0))
    if options.get("return_std", True):
        if frames.shape[0] == 1:
            std = torch.zeros(frames.shape[1], dtype=torch.float64)
        else:
            std = frames.std(dim=0)
        pieces.append(std + STD_FLOOR)
    return torch.cat(pieces).float()


@statistics_options
def test_statistics_are_mean_and_std_of_the_valid_frames(options):
    pool = MaskedStatisticsPooling(input_size=D, **options)
    x, lengths = batch()
    out = pool(x, lengths)
    assert out.shape == (len(VALID), 1, pool.output_size)
    assert pool.output_size == D * (
        options.get("return_mean", True) + options.get("return_std", True)
    )
    for i, n in enumerate(VALID):
        torch.testing.assert_close(
            out[i, 0], _statistics(x[i, :n], options), atol=1e-6, rtol=1e-5
        )
    # no lengths: every frame is valid
    torch.testing.assert_close(
        pool(x[:1]),
        _statistics(x[0], options)[None, None],
        atol=1e-6,
        rtol=1e-5,
    )


@statistics_options
@pytest.mark.parametrize("garbage", ["large", "inf", "nan"])
def test_statistics_padding_never_changes_them(options, garbage):
    """Alone equals inside a padded batch, whatever the padding holds; the
    padding gets no gradient."""
    pool = MaskedStatisticsPooling(input_size=D, **options)
    x, lengths = batch()
    clean = pool(x, lengths)
    for i, n in enumerate(VALID):
        alone = pool(x[i : i + 1, :n])
        torch.testing.assert_close(
            clean[i : i + 1], alone, atol=1e-6, rtol=1e-6
        )
    dirty = x.clone()
    for i, n in enumerate(VALID):
        dirty[i, n:] = {
            "large": 1e6 * torch.randn(T - n, D),
            "inf": torch.full((T - n, D), math.inf),
            "nan": torch.full((T - n, D), math.nan),
        }[garbage]
    dirty.requires_grad_(True)
    out = pool(dirty, lengths)
    torch.testing.assert_close(out, clean, atol=0, rtol=0)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(dirty.grad).all()
    for i, n in enumerate(VALID):
        assert torch.all(dirty.grad[i, n:] == 0)


def test_statistics_are_deterministic_unlike_speechbrains():
    """The same output call after call, in eval and in train mode, where
    SpeechBrain's StatisticsPooling adds fresh noise to the means even in
    eval mode; otherwise the same statistics (within that noise, 1e-5 to
    9e-5; within 4e-5 with the noise's midpoint added)."""
    x, lengths = batch()
    ours = MaskedStatisticsPooling(input_size=D)
    for mode in (ours.eval, ours.train):
        mode()
        first = ours(x, lengths)
        assert torch.equal(first, ours(x, lengths))
    valid = [i for i, n in enumerate(VALID) if n > 1]  # theirs: NaN for one
    theirs = StatisticsPooling().eval()
    assert not torch.equal(
        theirs(x[valid], lengths[valid]), theirs(x[valid], lengths[valid])
    )
    expected = theirs(x[valid], lengths[valid])
    got = ours(x[valid], lengths[valid])
    difference = (got - expected)[..., :D]
    assert difference.abs().max() <= 9e-5 + 1e-6
    assert difference.max() < -1e-6  # theirs adds noise, ours does not
    torch.testing.assert_close(
        got[..., D:], expected[..., D:], atol=1e-6, rtol=1e-5
    )
    midpoint = MaskedStatisticsPooling(input_size=D, mean_offset=5e-5)
    offset = midpoint(x[valid], lengths[valid]) - expected
    assert offset[..., :D].abs().max() <= 4e-5 + 1e-6


def test_statistics_float32_under_autocast_and_registered():
    pool = build_pooling(D, "statistics")
    assert (
        isinstance(pool, MaskedStatisticsPooling) and pool.output_size == 2 * D
    )
    x, lengths = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(x.bfloat16(), lengths)
    assert out.dtype == torch.float32
    torch.testing.assert_close(
        out, pool(x.bfloat16().float(), lengths), atol=0, rtol=0
    )
    with pytest.raises(ValueError, match="does not take num_heads"):
        build_pooling(D, "statistics", num_heads=2)


def test_statistics_bad_input_raises():
    pool = MaskedStatisticsPooling(input_size=D)
    with pytest.raises(ValueError, match=f"expects \\(batch, time, {D}\\)"):
        pool(torch.randn(2, 5, D + 1))
    with pytest.raises(ValueError, match=r"relative lengths in \(0, 1\]"):
        pool(torch.randn(2, 5, D), torch.tensor([1.0, 1.5]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        pool(torch.randn(2, 5, D), torch.ones(3))
    with pytest.raises(ValueError, match="nothing to return"):
        MaskedStatisticsPooling(return_mean=False, return_std=False)
