"""Tests of the windowed encoding of long inputs (speechbrain_mrmha/layers/windowing.py)
with the ResNet34 encoder: receptive field, window length, and windows that
equal the single pass."""

import pytest
import torch
from conftest import as_if_trained
from torch import nn

from speechbrain_mrmha.layers.resnet import ResNet34
from speechbrain_mrmha.layers.windowing import (
    encode_windowed,
    receptive_field_frames,
    window_frames,
)

TINY = [4, 8, 16, 32]


class MaskedMeanPooling(nn.Module):
    """Mean of the valid frames (round(rel * T) of them)."""

    def __init__(self, input_size):
        super().__init__()
        self.output_size = input_size

    def forward(self, x, lengths=None):
        if lengths is None:
            return x.mean(dim=1, keepdim=True)
        counts = torch.round(lengths * x.shape[1])
        keep = (torch.arange(x.shape[1])[None, :] < counts[:, None]).to(x.dtype)
        return (keep.unsqueeze(-1) * x).sum(dim=1, keepdim=True) / counts[
            :, None, None
        ]


def trained_bn_model(channels=TINY, block_counts=(3, 4, 6, 3), seed=0):
    """Tiny model in eval mode whose BatchNorm maps zeros to non-zeros (as
    after training), so that wrong zero padding would show."""
    torch.manual_seed(seed)
    model = ResNet34(
        n_mels=24,
        channels=channels,
        block_counts=list(block_counts),
        pooling=MaskedMeanPooling,
        lin_neurons=16,
    )
    return as_if_trained(model)


@pytest.mark.parametrize(
    "channels,block_counts",
    [(TINY, [3, 4, 6, 3]), ([4, 4, 4], [1, 1, 1]), (TINY, [1, 2, 1, 1])],
)
def test_receptive_field_equals_measured_one(channels, block_counts):
    """The context added around each window is the receptive-field radius
    found by autograd (input frames with a non-zero gradient for one output
    frame), rounded up to the time stride; ResNet34 stores it."""
    torch.manual_seed(0)
    model = ResNet34(
        n_mels=24,
        channels=channels,
        block_counts=block_counts,
        lin_neurons=8,
        chunk_frames=None,
    ).eval()
    feats = torch.randn(1, 700, 24, requires_grad=True)
    frames, _ = model.frames(feats)
    middle = frames.shape[1] // 2
    frames[0, middle].sum().backward()
    touched = (feats.grad[0].abs().sum(dim=-1) > 0).nonzero().squeeze(1)
    centre = middle * model.time_stride
    radius = max(centre - touched.min().item(), touched.max().item() - centre)
    assert model.time_stride == 2 ** (len(channels) - 1)
    context = receptive_field_frames(model)
    assert model.context_frames == context
    assert radius <= context < radius + model.time_stride
    assert context % model.time_stride == 0


@pytest.mark.parametrize(
    "chunk_frames, window",
    [(1, 8), (8, 8), (63, 56), (64, 64), (2048, 2048), (None, None), (0, None)],
)
def test_window_is_chunk_frames_rounded_down_to_the_stride(
    chunk_frames, window
):
    model = ResNet34(n_mels=24, channels=TINY, lin_neurons=8)
    model.chunk_frames = chunk_frames
    assert window_frames(model) == window


@pytest.mark.parametrize("window", [8, 56, 96, 328])
def test_encode_windowed_equals_encode(window):
    """The function alone, in float64 so that rounding cannot hide a missing
    context frame: windows of a padded batch equal one pass on the valid
    frames of every row, and have the same shape."""
    model = trained_bn_model().double()
    feats = torch.randn(3, 333, 24, dtype=torch.float64)
    counts = torch.tensor([333, 200, 17])
    with torch.no_grad():
        reference = model.encode(feats, counts)
        windowed = encode_windowed(model, feats, counts, window)
    assert windowed.shape == reference.shape
    for row, count in enumerate(-(-counts // model.time_stride)):
        torch.testing.assert_close(
            windowed[row, :count], reference[row, :count], atol=1e-10, rtol=0
        )


@pytest.mark.parametrize("chunk_frames", [8, 56, 100, 333, 999])
def test_chunked_encoding_equals_single_pass(chunk_frames):
    """Through ResNet34: windows + context give the frames and embeddings of
    one pass, for a padded batch (masks sliced per window) and every window
    size."""
    model = trained_bn_model()
    feats = torch.randn(3, 1000, 24)
    lengths = torch.tensor([1.0, 0.61, 0.137])
    with torch.no_grad():
        model.chunk_frames = None
        ref_frames, ref_rel = model.frames(feats, lengths)
        ref_emb = model(feats, lengths)
        model.chunk_frames = chunk_frames
        frames, rel = model.frames(feats, lengths)
        emb = model(feats, lengths)
    assert frames.shape == ref_frames.shape and torch.equal(rel, ref_rel)
    counts = torch.round(ref_rel * ref_frames.shape[1]).long()
    for row, count in enumerate(counts):
        torch.testing.assert_close(
            frames[row, :count], ref_frames[row, :count], atol=1e-5, rtol=0
        )
    torch.testing.assert_close(emb, ref_emb, atol=1e-5, rtol=0)


def test_chunking_needs_the_full_context():
    """With one stride less context than the receptive field the windows'
    frames differ (so the equalities above are not vacuous). The outermost
    context frames move the output by about 1e-9 of its scale, below float32
    rounding: the comparison is in float64."""
    model = trained_bn_model().double()
    feats = torch.randn(1, 600, 24, dtype=torch.float64)
    with torch.no_grad():
        reference = model.encode(feats)
        full = encode_windowed(model, feats, None, 64)
        model.context_frames -= model.time_stride
        short = encode_windowed(model, feats, None, 64)
    assert (full - reference).abs().max() < 1e-10
    assert (short - reference).abs().max() > 1e-8
