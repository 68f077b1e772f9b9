"""Tests of the masked ResNet-34 encoder (speechbrain_mrmha/layers/resnet.py)."""

import functools
import math
import re

import pytest
import torch
from conftest import as_if_trained
from speechbrain.dataio.dataio import length_to_mask
from speechbrain.nnet.pooling import StatisticsPooling
from torch import nn

import speechbrain_mrmha.layers.resnet as resnet_module
from speechbrain_mrmha.layers.pooling import (
    AttentiveStatisticsPooling,
    MaskedStatisticsPooling,
)
from speechbrain_mrmha.layers.resnet import ResNet34

TINY = [4, 8, 16, 32]


def frames_after(n, num_stages=4):
    """Length after Res2..Res(n) halvings with kernel 3 / padding 1 (ceil)."""
    for _ in range(num_stages - 1):
        n = math.ceil(n / 2)
    return n


def frame_dim(n_mels, width):
    """channels[-1] * frequency bins after Conv2 (stride 3, padding 1)."""
    return width * math.ceil(frames_after(n_mels) / 3)


class MaskedAttentionPooling(nn.Module):
    """Stand-in attention pooling: softmax over time of a linear score, -inf
    on padded frames. ``float_mask`` selects SpeechBrain's length_to_mask
    convention (arange < rel * T) instead of round(rel * T)."""

    def __init__(self, input_size, float_mask=False):
        super().__init__()
        self.score = nn.Linear(input_size, 1)
        self.float_mask = float_mask
        self.output_size = input_size

    def forward(self, x, lengths=None):
        scores = self.score(x).squeeze(-1)
        if lengths is not None:
            steps = x.shape[1]
            if self.float_mask:
                keep = length_to_mask(lengths * steps, steps).bool()
            else:
                counts = torch.round(lengths * steps)
                keep = torch.arange(steps)[None, :] < counts[:, None]
            scores = scores.masked_fill(~keep, float("-inf"))
        alpha = torch.softmax(scores, dim=1)
        return (alpha.unsqueeze(-1) * x).sum(dim=1, keepdim=True)


def stats_pooling():
    """SpeechBrain's StatisticsPooling without its random dither on the mean
    (added even in eval mode), so padding is the only difference tested."""
    pool = StatisticsPooling()
    pool._get_gauss_noise = lambda shape, device="cpu": torch.zeros(
        shape, device=device
    )
    return pool


POOLINGS = {
    "statistics": lambda: stats_pooling(),
    "masked_statistics": lambda: MaskedStatisticsPooling,
    "attention": lambda: MaskedAttentionPooling,
    # a partial with extra kwargs is what hyperpyyaml's !name: produces
    "attention_float_mask": lambda: functools.partial(
        MaskedAttentionPooling, float_mask=True
    ),
}


def trained_bn_model(pooling, n_mels=24, channels=TINY, seed=0):
    """Tiny model in eval mode with non-trivial BatchNorm statistics, so that
    BatchNorm maps zeros to non-zeros (as after training)."""
    torch.manual_seed(seed)
    model = ResNet34(
        n_mels=n_mels, channels=channels, pooling=pooling, lin_neurons=16
    )
    return as_if_trained(model)


@pytest.mark.parametrize(
    "n_mels,num_frames", [(40, 100), (40, 37), (24, 1), (80, 203), (13, 9)]
)
def test_output_shapes(n_mels, num_frames):
    model = ResNet34(
        n_mels=n_mels,
        channels=TINY,
        pooling=MaskedAttentionPooling,
        lin_neurons=16,
    ).eval()
    feats = torch.randn(2, num_frames, n_mels)
    lengths = torch.tensor([1.0, 0.6])
    with torch.no_grad():
        frames, frame_lengths = model.frames(feats, lengths)
        emb = model(feats, lengths)
    expected_dim = frame_dim(n_mels, TINY[-1])
    assert model.frame_dim == expected_dim
    assert frames.shape == (2, frames_after(num_frames), expected_dim)
    assert frame_lengths.shape == (2,)
    assert emb.shape == (2, 1, 16)


def test_paper_frame_dim_is_1024():
    # docs/EQUATIONS.md, section "ResNet-34 encoder": with 40 Mel bands the
    # frequency axis is 2 after Conv2.
    assert frame_dim(40, 512) == 1024
    model = ResNet34(n_mels=40, channels=[2, 2, 2, 512], block_counts=[1] * 4)
    assert model.frame_dim == 1024


@pytest.mark.parametrize("fill", ["zeros", "garbage"])
@pytest.mark.parametrize("pooling_name", sorted(POOLINGS))
def test_padding_never_changes_embedding(pooling_name, fill):
    model = trained_bn_model(POOLINGS[pooling_name]())
    # odd counts, not multiples of 8; 100 -> 13 frames and 51 -> 7, where the
    # float32 (7 / 13) * 13 exceeds 7 (trap for arange < rel * T masks);
    # 8 and 1 input frames leave one frame, where SpeechBrain's unbiased std
    # is NaN, so only the attention poolings get them
    counts = [100, 77, 51, 33, 17, 9]
    if pooling_name != "statistics":
        counts += [8, 1]
    num_frames = max(counts)
    torch.manual_seed(1)
    utterances = [torch.randn(1, n, 24) for n in counts]
    batch = 10.0 * torch.randn(len(counts), num_frames, 24)
    if fill == "zeros":
        batch.zero_()
    for i, utt in enumerate(utterances):
        batch[i, : counts[i]] = utt[0]
    lengths = torch.tensor(counts, dtype=torch.float32) / num_frames
    with torch.no_grad():
        emb = model(batch, lengths)
        frames, frame_lengths = model.frames(batch, lengths)
        for i, utt in enumerate(utterances):
            alone_frames, _ = model.frames(utt)
            valid = alone_frames.shape[1]
            assert valid == math.ceil(counts[i] / 8)
            assert round(frame_lengths[i].item() * frames.shape[1]) == valid
            torch.testing.assert_close(
                frames[i, :valid], alone_frames[0], atol=1e-4, rtol=0
            )
            torch.testing.assert_close(emb[i], model(utt)[0], atol=1e-4, rtol=0)


def test_garbage_would_leak_without_masking(monkeypatch):
    # The invariance test above is sensitive: with the per-conv masking
    # disabled (lengths only reach the pooling) garbage changes embeddings.
    model = trained_bn_model(POOLINGS["attention"]())
    monkeypatch.setattr(resnet_module, "_masked", lambda x, mask: x)
    utt = torch.randn(1, 30, 24)
    batch = 10.0 * torch.randn(2, 45, 24)
    batch[0, :30] = utt[0]
    with torch.no_grad():
        emb = model(batch, torch.tensor([30 / 45, 1.0]))[0]
        alone = model(utt)[0]
    assert (emb - alone).abs().max() > 1e-3


@pytest.mark.parametrize("n_mels", [40, 64, 23])
def test_callable_pooling_receives_frame_dim(n_mels):
    received = []

    def factory(input_size):
        received.append(input_size)
        return MaskedAttentionPooling(input_size=input_size)

    model = ResNet34(n_mels=n_mels, channels=TINY, pooling=factory)
    assert received == [frame_dim(n_mels, TINY[-1])]
    assert model.linear1.in_features == received[0]


def test_module_pooling_used_as_is_and_size_inferred():
    pool = StatisticsPooling()  # no output_size: inferred by a dummy forward
    model = ResNet34(n_mels=40, channels=TINY, pooling=pool, lin_neurons=8)
    assert model.pooling is pool
    assert model.linear1.in_features == 2 * model.frame_dim
    assert pool.training  # the dummy forward restores the mode


def test_default_pooling_is_masked_statistics():
    """Statistics pooling of our path (deterministic, exportable), not
    SpeechBrain's noisy one; a module given is still used as it is."""
    model = ResNet34(n_mels=40, channels=TINY, lin_neurons=8)
    assert isinstance(model.pooling, MaskedStatisticsPooling)
    assert model.linear1.in_features == model.pooling.output_size
    assert model.pooling.output_size == 2 * model.frame_dim


@pytest.mark.filterwarnings("ignore:The tensor attribute")  # last_attention
def test_export_sees_one_symbolic_frame_axis():
    """torch.export keeps the frame axis of the features one free symbol:
    each stride-2 stage's time steps follow the convolution's own shape
    formula, so every frame count from 9 on (at least 2 pooled frames) is
    one graph, and the frame width stays a constant (the features graph of
    an std pooling once failed its ONNX export on a symbolic width)."""
    from torch.export import Dim

    torch.manual_seed(0)
    model = ResNet34(
        n_mels=24,
        channels=TINY,
        lin_neurons=8,
        pooling=AttentiveStatisticsPooling,
        chunk_frames=None,
    ).eval()
    feats, lengths = torch.randn(3, 77, 24), torch.tensor([1.0, 0.6, 0.3])
    batch = Dim("batch", min=1)
    # as torch.onnx.export captures graphs: no 0/1 specialisation
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        program = torch.export.export(
            model,
            (feats, lengths),
            dynamic_shapes=({0: batch, 1: Dim("frames", min=9)}, {0: batch}),
        )
    exported = program.module()
    with torch.no_grad():
        for steps in (9, 10, 64, 131):
            x = torch.randn(2, steps, 24)
            rel = torch.tensor([1.0, 0.5])
            torch.testing.assert_close(
                exported(x, rel), model(x, rel), atol=1e-5, rtol=1e-5
            )


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = ResNet34(
        n_mels=24, channels=TINY, pooling=MaskedAttentionPooling, lin_neurons=8
    ).train()
    feats = torch.randn(4, 29, 24)
    emb = model(feats, torch.tensor([1.0, 0.8, 0.5, 0.3]))
    (emb * torch.randn_like(emb)).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_lengths_none_equals_all_ones():
    model = trained_bn_model(stats_pooling())
    feats = torch.randn(3, 27, 24)
    with torch.no_grad():
        torch.testing.assert_close(
            model(feats), model(feats, torch.ones(3)), atol=1e-5, rtol=0
        )


def test_channels_last_gives_same_embeddings():
    model = trained_bn_model(MaskedAttentionPooling)
    fast = trained_bn_model(MaskedAttentionPooling)
    fast.load_state_dict(model.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    feats = torch.randn(3, 33, 24)
    lengths = torch.tensor([1.0, 0.7, 0.2])
    with torch.no_grad():
        torch.testing.assert_close(
            fast(feats, lengths), model(feats, lengths), atol=1e-4, rtol=0
        )


def paper_param_formula(channels, block_counts, pooled, lin):
    """Independent count from the table of docs/EQUATIONS.md, section
    "ResNet-34 encoder" (bias-free convs + BN)."""

    def conv_bn(cin, cout, k):
        return cin * cout * k * k + 2 * cout

    total, cin = conv_bn(1, channels[0], 3), channels[0]
    for i, (cout, count) in enumerate(zip(channels, block_counts)):
        for b in range(count):
            total += conv_bn(cin, cout, 3) + conv_bn(cout, cout, 3)
            if cin != cout or (b == 0 and i > 0):
                total += conv_bn(cin, cout, 1)
            cin = cout
    total += conv_bn(cin, cin, 3)  # Conv2
    return total + (pooled * lin + lin) + 2 * lin + (lin * lin + lin)


class FixedSizePooling(nn.Module):
    """Parameter-free stand-in for a K-head pooling with output K * d."""

    def __init__(self, input_size, heads=4):
        super().__init__()
        self.heads = heads
        self.output_size = heads * input_size

    def forward(self, x, lengths=None):
        return x.mean(dim=1, keepdim=True).repeat(1, 1, self.heads)


def docstring_count(pattern):
    text = " ".join(ResNet34.__doc__.split())
    return int(re.search(pattern, text).group(1).replace(",", ""))


def test_paper_size_parameter_count_matches_docstring():
    model = ResNet34()
    count = sum(p.numel() for p in model.parameters())
    channels, blocks = [64, 128, 256, 512], [3, 4, 6, 3]
    assert count == paper_param_formula(channels, blocks, 2048, 512)
    assert count == docstring_count(r"the network has ([\d,]+) parameters")
    del model
    four_heads = ResNet34(pooling=FixedSizePooling)
    count4 = sum(p.numel() for p in four_heads.parameters())
    assert count4 == paper_param_formula(channels, blocks, 4 * 1024, 512)
    assert count4 == docstring_count(r"K = 4: ([\d,]+) \+ pooling")


def test_bad_inputs_raise_clear_errors():
    model = ResNet34(n_mels=40, channels=TINY, lin_neurons=8)
    with pytest.raises(ValueError, match="n_mels=40"):
        model(torch.randn(2, 20, 24))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        model(torch.randn(2, 20, 40), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        model(torch.randn(2, 20, 40), torch.tensor([1.0]))
    with pytest.raises(TypeError, match="pooling"):
        ResNet34(n_mels=40, channels=TINY, pooling="statistics")
    with pytest.raises(ValueError, match="same length"):
        ResNet34(channels=[4, 8], block_counts=[1, 1, 1])


# --- eval-mode chunking of long inputs (ResNet34.chunk_frames) ---------------
# The windows themselves: tests/unit/test_windowing.py.


def test_inputs_up_to_chunk_frames_take_the_single_pass():
    model = trained_bn_model(MaskedAttentionPooling)
    feats = torch.randn(2, 96, 24)
    with torch.no_grad():
        model.chunk_frames = None
        reference = model(feats, torch.tensor([1.0, 0.5]))
        model.chunk_frames = 96
        assert torch.equal(model(feats, torch.tensor([1.0, 0.5])), reference)


def test_train_mode_never_chunks():
    """In train mode BatchNorm uses the batch statistics of the whole input,
    which windows would change: training always takes the single pass."""
    model = trained_bn_model(MaskedAttentionPooling).train()
    feats = torch.randn(2, 300, 24)
    with torch.no_grad():
        model.chunk_frames = None
        reference, _ = model.frames(feats)
        model.chunk_frames = 16
        frames, _ = model.frames(feats)
    assert torch.equal(frames, reference)


def test_full_lengths_equal_no_lengths_exactly():
    """Unpadded batches skip the all-ones masks: bit-identical to lengths=None."""
    model = trained_bn_model(MaskedAttentionPooling)
    feats = torch.randn(2, 45, 24)
    with torch.no_grad():
        assert torch.equal(
            model.frames(feats, torch.ones(2))[0], model.frames(feats)[0]
        )


def test_bad_chunk_frames_raise():
    with pytest.raises(
        ValueError, match="chunk_frames must be None or positive"
    ):
        ResNet34(n_mels=24, channels=TINY, chunk_frames=0)


def test_long_inputs_in_eval_mode_take_the_windows(monkeypatch):
    """Inputs longer than the window (chunk_frames rounded down to the time
    stride) go through windowing.encode_windowed, shorter ones do not."""
    windows = []
    real = resnet_module.encode_windowed

    def recording(model, feats, counts, window):
        windows.append((feats.shape[1], window))
        return real(model, feats, counts, window)

    monkeypatch.setattr(resnet_module, "encode_windowed", recording)
    model = trained_bn_model(MaskedAttentionPooling)
    model.chunk_frames = 100  # window 96
    with torch.no_grad():
        model.frames(torch.randn(2, 96, 24))
        model.frames(torch.randn(2, 97, 24), torch.tensor([1.0, 0.5]))
    assert windows == [(97, 96)]
