"""Windowed encoding of long inputs by a convolutional frame encoder, so
that memory stays bounded by the window instead of growing with the input.

Each window of ``window`` input frames is encoded with ``context_frames`` of
context on both sides (the receptive field, rounded up to the time stride)
and only its own output frames are kept; window starts are multiples of the
time stride, so every stage sees the same grid and the same zero padding as
a single pass, and the concatenated frames equal the single pass up to float
rounding.

The functions take the network: anything with ``stages`` (lists of blocks
whose ``conv1`` carries the time stride), ``time_stride``, ``chunk_frames``,
``context_frames`` and ``encode(feats, counts)``, as
``speechbrain_mrmha.layers.resnet.ResNet34``.

Authors
 * speechbrain-mrmha developers
"""

import torch

__all__ = ["receptive_field_frames", "window_frames", "encode_windowed"]


def receptive_field_frames(model):
    """Receptive-field radius, in input frames, of one output frame of the
    network, rounded up to a multiple of its time stride.

    Counts one frame per 3x3 convolution at its input stride: Conv1, the two
    convolutions of every block, Conv2.

    Arguments
    ---------
    model : torch.nn.Module
        The network (see the module docstring).

    Returns
    -------
    frames : int
        A multiple of ``model.time_stride``.

    Example
    -------
    >>> from speechbrain_mrmha.layers.resnet import ResNet34
    >>> model = ResNet34(channels=[4, 8, 16, 32], block_counts=[1, 1, 1, 1])
    >>> receptive_field_frames(model), model.time_stride
    (32, 8)
    """
    radius, stride = 1, 1  # conv1
    for stage in model.stages:
        for block in stage:
            radius += stride  # conv1 of the block, at its input stride
            stride *= block.conv1.stride[0]
            radius += stride  # conv2
    radius += stride  # conv2 of the network (time stride 1)
    return -(-radius // model.time_stride) * model.time_stride


def window_frames(model):
    """The window length in input frames: ``model.chunk_frames`` rounded
    down to a multiple of the time stride (at least one stride), or None
    when windowing is off.

    Arguments
    ---------
    model : torch.nn.Module
        The network (see the module docstring).

    Returns
    -------
    window : int or None

    Example
    -------
    >>> from speechbrain_mrmha.layers.resnet import ResNet34
    >>> model = ResNet34(channels=[4, 8, 16, 32], chunk_frames=100)
    >>> window_frames(model)
    96
    >>> model.chunk_frames = None
    >>> window_frames(model) is None
    True
    """
    if not model.chunk_frames:
        return None
    stride = model.time_stride
    return max(stride, model.chunk_frames // stride * stride)


def encode_windowed(model, feats, counts, window):
    """``model.encode`` over windows of ``window`` frames, each with
    ``model.context_frames`` of context on both sides; keeps each window's
    own output frames. Padded steps stay zeroed through the counts sliced
    to each window.

    Arguments
    ---------
    model : torch.nn.Module
        The network (see the module docstring).
    feats : torch.Tensor
        (batch, time, n_mels) features.
    counts : torch.Tensor or None
        Valid input frames of each row, shape (batch,); None: no padding.
    window : int
        Window length, a multiple of ``model.time_stride`` (see
        ``window_frames``).

    Returns
    -------
    frames : torch.Tensor
        (batch, time', frame_dim), as ``model.encode(feats, counts)``.

    Example
    -------
    >>> from speechbrain_mrmha.layers.resnet import ResNet34
    >>> model = ResNet34(channels=[4, 8, 16, 32], block_counts=[1, 1, 1, 1]).eval()
    >>> feats = torch.randn(2, 300, 40)
    >>> counts = torch.tensor([300, 171])
    >>> with torch.no_grad():
    ...     windowed = encode_windowed(model, feats, counts, window=64)
    ...     single = model.encode(feats, counts)
    >>> windowed.shape, torch.allclose(windowed[1, :22], single[1, :22], atol=1e-5)
    (torch.Size([2, 38, 64]), True)
    """
    num_frames, context, stride = (
        feats.shape[1],
        model.context_frames,
        model.time_stride,
    )
    pieces = []
    for start in range(0, num_frames, window):
        end = min(start + window, num_frames)
        low, high = max(0, start - context), min(num_frames, end + context)
        part = None if counts is None else (counts - low).clamp(0, high - low)
        out = model.encode(feats[:, low:high], part)
        first = (start - low) // stride
        pieces.append(out[:, first : first + -(-(end - start) // stride)])
    return torch.cat(pieces, dim=1)
