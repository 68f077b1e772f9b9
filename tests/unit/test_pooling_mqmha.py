"""Properties of multi-query multi-head attentive statistics pooling, MQMHA
(``MultiQueryMultiHeadAttentionPooling``, docs/EQUATIONS.md, section
"Multi-query multi-head attention"; Zhao et al. 2022, WeSpeaker's
``MQMHASTP``).

The registry-wide checks (masking, garbage, permutations, autocast, bad
shapes, gradients, SpeechBrain's statistics) run in test_pooling.py; here:
equality with an independent loop over utterances, heads and queries at the
default configuration, padding invariance, exact reductions to attentive
statistics pooling and to the split core, sizes and per-query gradients,
the ResNet-34 around it, and ONNX / TorchScript parity of a tiny model.
"""

import functools
import math

import pytest
import torch
from conftest import as_if_trained

from speechbrain_mrmha.layers.pooling import (
    POOLINGS,
    AttentionPooling,
    AttentiveStatisticsPooling,
    MultiQueryMultiHeadAttentionPooling,
    build_pooling,
)
from speechbrain_mrmha.layers.resnet import ResNet34

MQMHA = MultiQueryMultiHeadAttentionPooling
D = 16  # frame size, divisible by every number of heads below
T = 11  # padded frames per batch
VALID = [11, 8, 5, 2, 1]  # valid frames per utterance
EPS = 1e-5  # the core's variance floor (docs/EQUATIONS.md, "Attention core")

# (num_heads, num_queries, hidden_size, activation); the first is the default
CONFIGS = [
    (4, 2, 64, "tanh"),
    (2, 3, 7, "relu"),
    (1, 1, 16, "tanh"),
    (8, 1, 5, "tanh"),
    (4, 2, 0, "tanh"),
]
configs = pytest.mark.parametrize(
    "heads,queries,hidden,activation",
    CONFIGS,
    ids=[f"H{h}-Q{q}-l{w}-{f}" for h, q, w, f in CONFIGS],
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread (the 2 cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(heads=4, queries=2, hidden=64, activation="tanh", seed=0, scale=None):
    """The pooling; ``scale``: parameters redrawn from N(0, scale^2 / fan_in)
    so that the weights are clearly not uniform, yet not one-hot."""
    torch.manual_seed(seed)
    pool = MQMHA(
        input_size=D,
        num_heads=heads,
        num_queries=queries,
        hidden_size=hidden,
        activation=activation,
    )
    if scale is not None:
        with torch.no_grad():
            for param in pool.parameters():
                fan_in = param.shape[-1]
                param.normal_(0.0, scale / math.sqrt(fan_in))
    return pool


def frames(valid=VALID, steps=T, seed=1, fill="zeros"):
    """Random (batch, steps, D) frames whose padding holds ``fill``, and
    their relative lengths."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(valid), steps, D, generator=gen)
    for i, n in enumerate(valid):
        pad = x[i, n:]
        if fill == "zeros":
            pad.zero_()
        elif fill == "large":
            pad.normal_(0.0, 1e6, generator=gen)
        elif fill == "inf":
            pad.fill_(math.inf)
            pad[..., ::2] = -math.inf
        else:
            pad.fill_(math.nan)
    return x, torch.tensor([n / steps for n in valid])


def naive_mqmha(pool, utterance):
    """MQMHA of one utterance's valid frames (N, D), written out: for every
    query q and head i (in that order), the head's sub-vector, a score per
    frame from that pair's own W, g, v (or v alone without hidden layer),
    a softmax over the N frames, the weighted mean and the weighted
    population standard deviation (variance floored at EPS). float64."""
    f = {"tanh": torch.tanh, "relu": torch.relu}[pool.activation]
    heads, queries = pool.num_heads, pool.num_queries
    c = D // heads
    linear = pool.scorer == "split_linear"
    x = utterance.double()
    out = []
    for q in range(queries):
        for i in range(heads):
            row = q * heads + i
            v = pool.score_weight[row].detach().double()
            if not linear:
                W = pool.hidden_weight[row].detach().double()
                g = pool.hidden_bias[row].detach().double()
            sub = x[:, i * c : (i + 1) * c]
            scores = []
            for h in sub:
                scores.append(v @ h if linear else v @ f(W @ h + g))
            scores = torch.stack(scores)
            alpha = torch.exp(scores - scores.max())
            alpha = alpha / alpha.sum()
            mean = (alpha[:, None] * sub).sum(0)
            var = (alpha[:, None] * (sub - mean) ** 2).sum(0)
            out += [mean, torch.sqrt(var.clamp(min=EPS))]
    return torch.cat(out)


# ------------------------------------------------------- (1) the definition


@configs
def test_equals_a_naive_loop_over_utterances_heads_and_queries(
    heads, queries, hidden, activation
):
    """Each utterance of a padded batch pools to the written-out MQMHA of
    its valid frames alone (1e-5), in the documented order."""
    pool = make(heads, queries, hidden, activation, scale=2.0)
    x, lengths = frames()
    out = pool(x, lengths)
    assert out.shape == (len(VALID), 1, 2 * D * queries)
    for b, n in enumerate(VALID):
        expected = naive_mqmha(pool, x[b, :n]).float()
        torch.testing.assert_close(out[b, 0], expected, atol=1e-5, rtol=1e-5)
    # the check is not vacuous: no head is near uniform, none one-hot
    weights = pool.attention(x, lengths)[0]
    assert weights.shape == (heads * queries, T)
    assert weights.max() < 0.99
    assert (weights - 1.0 / T).abs().max(-1).values.min() > 0.02


def test_the_naive_loop_sees_the_order_and_the_parameters():
    """Guards the test above: swapping two queries' parameters, or reading
    the rows head by head instead of query by query, breaks the equality."""
    pool = make(scale=2.0)
    x, lengths = frames()
    out = pool(x, lengths)[0, 0]
    with torch.no_grad():
        swapped = make(scale=2.0)
        for name in ("hidden_weight", "hidden_bias", "score_weight"):
            param = getattr(swapped, name)
            param.copy_(param.reshape(2, 4, -1).flip(0).reshape(param.shape))
    n = VALID[0]
    assert not torch.allclose(
        out, naive_mqmha(swapped, x[0, :n]).float(), atol=1e-3
    )
    blocks = out.reshape(2, 4, -1).transpose(0, 1).reshape(-1)  # head-major
    assert not torch.allclose(
        blocks, naive_mqmha(pool, x[0, :n]).float(), atol=1e-3
    )


def test_padded_frames_get_exactly_zero_weight():
    pool = make(scale=2.0)
    x, lengths = frames()
    weights = pool.attention(x, lengths)
    for b, n in enumerate(VALID):
        assert torch.all(weights[b, :, n:] == 0.0)
        assert torch.all(weights[b, :, :n] > 0.0)
        torch.testing.assert_close(weights[b, :, :n].sum(-1), torch.ones(8))


# ------------------------------------------------------------- (2) padding


@configs
@pytest.mark.parametrize("fill", ["large", "inf", "nan"])
def test_garbage_beyond_the_length_changes_nothing(
    heads, queries, hidden, activation, fill
):
    """Appending garbage frames after each utterance leaves its output as
    when pooled alone (and exactly as with zero padding); the garbage gets
    no gradient."""
    pool = make(heads, queries, hidden, activation, scale=2.0)
    clean, lengths = frames()
    dirty, _ = frames(fill=fill)
    dirty.requires_grad_(True)
    out = pool(dirty, lengths)
    torch.testing.assert_close(out, pool(clean, lengths), atol=0, rtol=0)
    for b, n in enumerate(VALID):
        alone = pool(clean[b : b + 1, :n])
        torch.testing.assert_close(out[b : b + 1], alone, atol=1e-6, rtol=1e-5)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(dirty.grad).all()
    for b, n in enumerate(VALID):
        assert torch.all(dirty.grad[b, n:] == 0)


def test_more_padding_changes_nothing():
    """The same utterances padded to 11 or to 40 frames pool alike."""
    pool = make(scale=2.0)
    x, _ = frames()
    longer = torch.cat([x, 7.0 * torch.randn(len(VALID), 29, D)], dim=1)
    torch.testing.assert_close(
        pool(longer, torch.tensor([n / 40 for n in VALID])),
        pool(x, torch.tensor([n / T for n in VALID])),
        atol=1e-6,
        rtol=1e-5,
    )


# ---------------------------------------------------------- (3) reductions


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_one_head_one_query_is_attentive_statistics_pooling(activation):
    """K = Q = 1: one scorer v^T f(W h + g) on the whole frame, so MQMHA is
    attentive statistics pooling with W, g, v copied; the latter's score
    bias b (which MQMHA lacks) shifts every score alike and cancels."""
    pool = make(1, 1, hidden=9, activation=activation, scale=2.0)
    stats = AttentiveStatisticsPooling(
        input_size=D, hidden_size=9, activation=activation
    )
    with torch.no_grad():
        stats.hidden.weight.copy_(pool.hidden_weight[0])
        stats.hidden.bias.copy_(pool.hidden_bias[0])
        stats.score_weight.copy_(pool.score_weight)
        stats.score_bias.fill_(3.7)
    x, lengths = frames()
    torch.testing.assert_close(
        pool(x, lengths), stats(x, lengths), atol=1e-6, rtol=1e-6
    )
    torch.testing.assert_close(
        pool.attention(x, lengths),
        stats.attention(x, lengths),
        atol=1e-6,
        rtol=1e-6,
    )


@pytest.mark.parametrize("hidden", [0, 6])
def test_each_block_is_attentive_statistics_of_its_head(hidden):
    """Block q K + i of the output is the one-head, one-query MQMHA (i.e.
    attentive statistics pooling, above) of sub-vector i alone with the
    parameters of query q of head i."""
    heads, queries = 4, 3
    pool = make(heads, queries, hidden, scale=2.0)
    x, lengths = frames()
    c = D // heads
    out = pool(x, lengths)[:, 0].reshape(len(VALID), queries, heads, 2 * c)
    for q in range(queries):
        for i in range(heads):
            row = q * heads + i
            single = MQMHA(c, num_heads=1, num_queries=1, hidden_size=hidden)
            with torch.no_grad():
                for name, param in single.named_parameters():
                    param.copy_(getattr(pool, name)[row : row + 1])
            expected = single(x[..., i * c : (i + 1) * c], lengths)[:, 0]
            torch.testing.assert_close(
                out[:, q, i], expected, atol=1e-6, rtol=1e-5
            )


def test_one_query_linear_scorers_are_split_attention_with_std():
    """Q = 1, no hidden layer: India et al.'s split multi-head attention
    (the paper's Eq. 5) with weighted standard deviations, on the core."""
    pool = make(4, 1, hidden=0, scale=2.0)
    split = AttentionPooling(
        input_size=D, num_heads=4, scorer="split_linear", std=True
    )
    split.load_state_dict(pool.state_dict())
    x, lengths = frames()
    torch.testing.assert_close(
        pool(x, lengths), split(x, lengths), atol=0, rtol=0
    )


def test_identical_queries_repeat_the_one_query_output():
    """Q copies of the same scorers give Q copies of the Q = 1 output."""
    one = make(4, 1, hidden=6, scale=2.0)
    three = MQMHA(D, num_heads=4, num_queries=3, hidden_size=6)
    with torch.no_grad():
        for name, param in three.named_parameters():
            param.copy_(getattr(one, name).repeat(3, *[1] * (param.dim() - 1)))
    x, lengths = frames()
    torch.testing.assert_close(
        three(x, lengths), one(x, lengths).repeat(1, 1, 3), atol=1e-6, rtol=1e-6
    )


# ---------------------------------------------------- (4) sizes, gradients


@configs
def test_output_size_and_every_query_learns(heads, queries, hidden, activation):
    """output_size is 2 Q d; every query of every head gets a gradient in
    each of its parameters, and only from its own output block."""
    pool = make(heads, queries, hidden, activation, scale=2.0)
    x, lengths = frames()
    out = pool(x, lengths)
    assert pool.output_size == 2 * D * queries == out.shape[-1]
    rows = heads * queries
    blocks = out[:, 0].reshape(len(VALID), rows, -1)
    names = [name for name, _ in pool.named_parameters()]
    assert names == (
        ["score_weight"]
        if hidden == 0
        else ["hidden_weight", "hidden_bias", "score_weight"]
    )
    for row in range(rows):
        pool.zero_grad()
        (blocks[:, row] * torch.randn_like(blocks[:, row])).sum().backward(
            retain_graph=True
        )
        for name, param in pool.named_parameters():
            grad = param.grad.reshape(rows, -1)
            assert torch.isfinite(grad).all(), name
            assert grad[row].abs().sum() > 0, (name, row)
            others = torch.cat([grad[:row], grad[row + 1 :]])
            assert torch.all(others == 0), (name, row)


def test_defaults_and_registry():
    """K = 4, Q = 2, l = 64, tanh; registered as "multi_query_multi_head",
    built by name with num_queries, other settings refused."""
    assert POOLINGS["multi_query_multi_head"] is MQMHA
    pool = build_pooling(1024, "multi_query_multi_head")
    assert isinstance(pool, MQMHA)
    assert (pool.num_heads, pool.num_queries, pool.hidden_size) == (4, 2, 64)
    assert (pool.scorer, pool.activation, pool.std) == (
        "split_mlp",
        "tanh",
        True,
    )
    assert pool.output_size == 2 * 1024 * 2
    assert pool.hidden_weight.shape == (8, 64, 256)
    # Q (d l + 2 K l) parameters (docs/EQUATIONS.md, "Pooling output sizes")
    assert sum(p.numel() for p in pool.parameters()) == 2 * (
        1024 * 64 + 2 * 4 * 64
    )
    built = build_pooling(
        48, "multi_query_multi_head", num_heads=3, num_queries=5, hidden_size=0
    )
    assert (built.num_queries, built.scorer, built.output_size) == (
        5,
        "split_linear",
        2 * 48 * 5,
    )
    with pytest.raises(ValueError, match="does not take temperatures"):
        build_pooling(D, "multi_query_multi_head", temperatures=[1.0] * 8)
    with pytest.raises(ValueError, match="does not take num_queries"):
        build_pooling(D, "mrmha", num_queries=2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_heads": 3}, r"input_size \(16\) divisible by num_heads \(3\)"),
        ({"num_queries": 0}, "num_queries must be >= 1"),
        ({"hidden_size": -1}, "hidden_size must be >= 0"),
        ({"activation": "gelu"}, "activation must be one of"),
    ],
)
def test_bad_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MQMHA(input_size=D, **kwargs)


def test_queries_need_a_split_scorer():
    with pytest.raises(ValueError, match="num_queries > 1 needs a split"):
        AttentionPooling(input_size=D, num_heads=2, num_queries=2)
    with pytest.raises(ValueError, match=r"3 values for 4 \(query, head\)"):
        AttentionPooling(
            input_size=D,
            num_heads=2,
            num_queries=2,
            scorer="split_mlp",
            temperatures=[1.0, 2.0, 3.0],
        )


# ---------------------------------------------------------- (5) the ResNet


def tiny_resnet(pooling, n_mels=24, seed=0):
    torch.manual_seed(seed)
    model = ResNet34(
        n_mels=n_mels,
        channels=[4, 8, 16, 32],
        block_counts=[1, 1, 1, 1],
        pooling=pooling,
        lin_neurons=16,
    )
    return as_if_trained(model)


@pytest.mark.parametrize(
    "pooling",
    [
        functools.partial(build_pooling, name="multi_query_multi_head"),
        functools.partial(MQMHA, num_heads=8, num_queries=3, hidden_size=0),
    ],
    ids=["registry", "class"],
)
def test_inside_the_resnet_padding_never_changes_an_embedding(pooling):
    """ResNet34 sizes Linear1 from output_size (2 Q d) and a padded batch
    embeds each utterance as it embeds alone."""
    model = tiny_resnet(pooling, n_mels=40)
    pool = model.pooling
    assert isinstance(pool, MQMHA) and pool.input_size == model.frame_dim
    assert model.linear1.in_features == pool.output_size
    assert pool.output_size == 2 * model.frame_dim * pool.num_queries
    counts = [97, 61, 33, 9, 1]
    torch.manual_seed(1)
    utterances = [torch.randn(1, n, 40) for n in counts]
    batch = 10.0 * torch.randn(len(counts), max(counts), 40)
    for i, utt in enumerate(utterances):
        batch[i, : counts[i]] = utt[0]
    lengths = torch.tensor(counts, dtype=torch.float32) / max(counts)
    with torch.no_grad():
        embeddings = model(batch, lengths)
        assert embeddings.shape == (len(counts), 1, 16)
        for i, utt in enumerate(utterances):
            torch.testing.assert_close(
                embeddings[i], model(utt)[0], atol=1e-4, rtol=0
            )


@pytest.mark.parametrize(
    "fmt", [pytest.param("onnx", marks=pytest.mark.slow), "torchscript"]
)
def test_exported_tiny_model_matches_pytorch(tmp_path, fmt):
    """The export path of every pretrained folder (features graph, dynamic
    batch and time) keeps MQMHA: export_module's own parity check passes and
    the exported file embeds a padded batch like PyTorch embeds each
    utterance alone (cosine >= 0.9999). ONNX: about 40 s on a loaded
    2-core machine, as for any pooling (torch's dynamo exporter), 1 s for
    TorchScript."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    from speechbrain.processing.features import InputNormalization

    from speechbrain_mrmha.inference.export import deployable, export_module

    model = tiny_resnet(
        functools.partial(MQMHA, num_heads=4, num_queries=2), n_mels=40
    )
    module = deployable(
        {
            "mean_var_norm": InputNormalization(norm_type="sentence"),
            "embedding_model": model,
        },
        features_input=True,
    )
    name = "m.onnx" if fmt == "onnx" else "m.pt"
    out = export_module(module, tmp_path / name, fmt, check=True)
    counts = [83, 40, 17, 8]
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(len(counts), max(counts), 40, generator=gen)
    for i, n in enumerate(counts):
        feats[i, n:] = 0.0
    lengths = torch.tensor(counts)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(
            str(out), providers=["CPUExecutionProvider"]
        )
        feed = dict(
            zip(
                [item.name for item in session.get_inputs()],
                [feats.numpy(), lengths.numpy()],
            )
        )
        got = torch.from_numpy(session.run(None, feed)[0])
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out))(feats, lengths)
    with torch.no_grad():
        alone = torch.cat(
            [
                module(feats[i : i + 1, :n], lengths[i : i + 1])
                for i, n in enumerate(counts)
            ]
        )
    cosines = torch.nn.functional.cosine_similarity(got, alone, dim=1)
    assert cosines.min() >= 0.9999, cosines
