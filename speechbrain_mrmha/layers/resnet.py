"""ResNet-34 frame encoder and embedding head of Wang et al. (ICASSP 2020),
masked at every stage so that batch padding never changes an embedding.

Reference
---------
Zhiming Wang, Kaisheng Yao, Xiaolong Li, Shuo Fang, "Multi-Resolution
Multi-Head Attention in Deep Speaker Embedding", ICASSP 2020 (network table).

Authors
 * speechbrain-mrmha contributors
"""

import torch
from torch import nn

from speechbrain_mrmha.layers.lengths import (
    capturing_graph,
    check_relative_lengths,
    relative_lengths,
    valid_frame_counts,
)
from speechbrain_mrmha.layers.pooling import MaskedStatisticsPooling
from speechbrain_mrmha.layers.windowing import (
    encode_windowed,
    receptive_field_frames,
    window_frames,
)

__all__ = ["BasicBlock", "ResNet34"]


def _masked(x, mask):
    """Zeroes padded time steps of a (B, C, T, F) map; mask is (B, 1, T, 1)
    of 0/1 (cast to x's dtype, e.g. under autocast, so x keeps its dtype)."""
    if mask is None:
        return x
    return x * (mask if mask.dtype == x.dtype else mask.to(x.dtype))


class BasicBlock(nn.Module):
    """ResNet basic block: [3x3 conv, BN, ReLU, 3x3 conv, BN] + shortcut,
    ReLU; the shortcut is a 1x1 conv + BN projection when the shape changes.
    Padded time steps are zeroed before each convolution.

    Arguments
    ---------
    in_channels : int
        Input channels.
    out_channels : int
        Output channels.
    stride : int
        Stride of the first conv (time and frequency).

    Example
    -------
    >>> block = BasicBlock(in_channels=4, out_channels=8, stride=2)
    >>> block(torch.rand(2, 4, 9, 10)).shape
    torch.Size([2, 8, 5, 5])
    """

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(
            out_channels, out_channels, 3, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    in_channels, out_channels, 1, stride=stride, bias=False
                ),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x, mask_in=None, mask_out=None):
        """Applies the block.

        Arguments
        ---------
        x : torch.Tensor
            (batch, channels, time, freq).
        mask_in : torch.Tensor or None
            (batch, 1, time, 1) validity mask at the input resolution.
        mask_out : torch.Tensor or None
            The same at the output resolution (differs when stride is 2).

        Returns
        -------
        out : torch.Tensor
            (batch, out_channels, time', freq'); padded steps are not zeroed.
        """
        x = _masked(x, mask_in)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(_masked(out, mask_out)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + skip)


class ResNet34(nn.Module):
    """ResNet-34 speaker-embedding network of Wang et al., "Multi-Resolution
    Multi-Head Attention in Deep Speaker Embedding", ICASSP 2020: Conv1 ->
    Res1..Res4 (basic blocks, time and frequency halved at the start of Res2,
    Res3, Res4) -> Conv2 (stride 1 in time, 3 in frequency) -> frames
    (batch, time', d) -> pooling -> Linear1 -> BatchNorm1d -> ReLU -> Linear2
    (the embedding). With 40 Mel bands d = 512 * 2 = 1024.

    Padding never changes an embedding in eval mode: relative lengths become
    valid frame counts, padded steps are zeroed before every convolution (so
    batch padding looks like the convolution's own zero padding), counts follow
    each stride-2 stage exactly (L -> ceil(L / 2)), and the pooling receives
    the relative lengths of the final frames. In train mode BatchNorm batch
    statistics still see padded steps, as in any padded batch. This holds
    for lengths that count frames exactly (``lengths.relative_lengths``);
    SpeechBrain's ``wav_lens``, relative to the padded samples, are made
    exact by ``lengths.FrameExactLengths``, which a pretrained folder sets
    up for ``EncoderClassifier.encode_batch``.

    At paper size (defaults) with the default statistics pooling (2048 pooled
    dims, no parameters) the network has 24,948,928 parameters: 23,636,160 in
    the convolutional encoder (Conv1, Res1..Res4, Conv2) and 1,312,768 in
    Linear1 + BatchNorm1d + Linear2. A pooling with output K*1024 (global
    multi-head / MRMHA with K heads) changes Linear1 only: add
    (K - 2) * 1024 * 512 weights plus the pooling's own parameters
    (e.g. K = 4: 25,997,504 + pooling).

    Arguments
    ---------
    n_mels : int
        Number of Mel bands of the input features.
    channels : list of int
        Widths of Res1..Res4 (Conv1 has channels[0], Conv2 channels[-1]).
    block_counts : list of int
        Basic blocks per stage.
    pooling : callable or torch.nn.Module or None
        A callable receiving ``input_size=d`` and returning the pooling module
        (e.g. a class or a hyperpyyaml ``!name:`` entry), or a built module
        (e.g. ``!new:speechbrain.nnet.pooling.StatisticsPooling``, which
        folders written before ``MaskedStatisticsPooling`` name). The module
        maps (batch, time, d) and relative lengths to (batch, 1, size). None
        means ``pooling.MaskedStatisticsPooling``.
    lin_neurons : int
        Width of Linear1 and of the embedding (Linear2).
    chunk_frames : int or None
        In eval mode, inputs longer than this many feature frames are encoded
        in windows of ``chunk_frames`` frames plus ``context_frames`` of
        context on each side (the receptive field, rounded up to the total
        time stride), and the kept frames are concatenated before pooling.
        The frames equal those of a single pass up to float rounding, while
        memory stays bounded by the window instead of growing with the input.
        Shorter inputs, and every input in train mode, take the single pass.
        Rounded down to a multiple of the time stride; None never chunks.
        The windowing itself lives in ``speechbrain_mrmha.layers.windowing``.

    Example
    -------
    >>> model = ResNet34(n_mels=40, channels=[4, 8, 16, 32], lin_neurons=16)
    >>> model.frame_dim
    64
    >>> feats = torch.rand(3, 101, 40)
    >>> model(feats, torch.tensor([1.0, 0.8, 0.5])).shape
    torch.Size([3, 1, 16])

    A long input in eval mode, in windows of 256 frames and in one pass:

    >>> model = model.eval()
    >>> model.chunk_frames = 256  # context: the receptive field, model.context_frames
    >>> long = torch.rand(1, 1000, 40)
    >>> windowed = model(long)
    >>> model.chunk_frames = None
    >>> torch.allclose(windowed, model(long), atol=1e-5)
    True
    """

    def __init__(
        self,
        n_mels=40,
        channels=None,
        block_counts=None,
        pooling=None,
        lin_neurons=512,
        chunk_frames=2048,
    ):
        if block_counts is None:
            block_counts = [3, 4, 6, 3]
        if channels is None:
            channels = [64, 128, 256, 512]
        super().__init__()
        channels, block_counts = list(channels), list(block_counts)
        if len(channels) != len(block_counts) or not channels:
            raise ValueError(
                f"ResNet34: channels {channels} and block_counts "
                f"{block_counts} must be non-empty lists of the same length"
            )
        if n_mels < 1 or min(channels) < 1 or min(block_counts) < 1:
            raise ValueError(
                f"ResNet34: n_mels ({n_mels}), channels and block_counts must "
                "be positive"
            )
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError(
                f"ResNet34: chunk_frames must be None or positive, got {chunk_frames}"
            )
        self.n_mels = n_mels
        self.chunk_frames = chunk_frames
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        self.stages = nn.ModuleList()
        in_ch, freq = channels[0], n_mels
        for i, (width, count) in enumerate(zip(channels, block_counts)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_ch, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(count - 1)]
            self.stages.append(nn.ModuleList(blocks))
            in_ch = width
            freq = (freq - 1) // stride + 1
        self.conv2 = nn.Conv2d(
            in_ch, in_ch, 3, stride=(1, 3), padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(in_ch)
        self.frame_dim = in_ch * ((freq - 1) // 3 + 1)
        self.time_stride = 2 ** (len(channels) - 1)
        self.context_frames = receptive_field_frames(self)
        self._init_weights()

        self.pooling = self._build_pooling(pooling)
        pooled = self._pooled_size()
        self.linear1 = nn.Linear(pooled, lin_neurons)
        self.norm = nn.BatchNorm1d(lin_neurons)
        self.linear2 = nn.Linear(lin_neurons, lin_neurons)

    def _init_weights(self):
        """He initialisation of the convolutions, unit/zero BatchNorm."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_out", nonlinearity="relu"
                )
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _build_pooling(self, pooling):
        """Returns the pooling module from None, a module or a factory."""
        if pooling is None:
            return MaskedStatisticsPooling(input_size=self.frame_dim)
        if isinstance(pooling, nn.Module):
            return pooling
        if not callable(pooling):
            raise TypeError(
                "ResNet34: pooling must be None, an nn.Module or a callable "
                f"taking input_size=, got {type(pooling).__name__}"
            )
        module = pooling(input_size=self.frame_dim)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"ResNet34: pooling factory {pooling!r} returned "
                f"{type(module).__name__}, expected an nn.Module"
            )
        return module

    def _pooled_size(self):
        """The pooling's ``output_size``, else measured on a dummy input."""
        size = getattr(self.pooling, "output_size", None)
        if isinstance(size, int):
            return size
        param = next(self.pooling.parameters(), None)
        dummy = torch.randn(2, 4, self.frame_dim)
        if param is not None:
            dummy = dummy.to(device=param.device, dtype=param.dtype)
        was_training = self.pooling.training
        self.pooling.eval()
        with torch.no_grad():
            out = self.pooling(dummy)
        self.pooling.train(was_training)
        if out.dim() != 3 or out.shape[:2] != (2, 1):
            raise ValueError(
                f"ResNet34: pooling {type(self.pooling).__name__} returned "
                f"shape {tuple(out.shape)} for input (2, 4, {self.frame_dim}); "
                "expected (batch, 1, size)"
            )
        return out.shape[-1]

    def frames(self, feats, lengths=None):
        """Encodes features into the frame sequence fed to the pooling.

        Arguments
        ---------
        feats : torch.Tensor
            (batch, time, n_mels) features.
        lengths : torch.Tensor or None
            Relative lengths in (0, 1] of the padded frames, shape (batch,);
            None = all full.

        Returns
        -------
        frames : torch.Tensor
            (batch, time', frame_dim), time' = ceil(time / 8) at paper depth;
            frames past an utterance's length are padding (not zeroed).
        frame_lengths : torch.Tensor or None
            Relative lengths of the frames (None when ``lengths`` is None).

        Example
        -------
        >>> model = ResNet34(n_mels=24, channels=[4, 4, 8, 8], lin_neurons=8)
        >>> h, rel = model.frames(torch.rand(2, 37, 24), torch.tensor([1.0, 0.5]))
        >>> h.shape, torch.round(rel * h.shape[1]).long()
        (torch.Size([2, 5, 8]), tensor([5, 3]))
        """
        if feats.dim() != 3 or feats.shape[-1] != self.n_mels:
            raise ValueError(
                "ResNet34: expected features (batch, time, n_mels="
                f"{self.n_mels}), got shape {tuple(feats.shape)}"
            )
        batch, num_frames = feats.shape[0], feats.shape[1]
        counts = None
        if lengths is not None:
            check_relative_lengths(lengths, batch, "ResNet34")
            counts = valid_frame_counts(lengths.to(feats.device), num_frames)
        # Without padding every mask is all ones: skip them (x * 1 == x).
        masks = counts
        if (
            counts is not None
            and not capturing_graph()
            and bool((counts == num_frames).all())
        ):
            masks = None
        window = window_frames(self)
        if self.training or window is None or num_frames <= window:
            frames = self.encode(feats, masks)
        else:
            frames = encode_windowed(self, feats, masks, window)
        if counts is None:
            return frames, None
        for _ in range(len(self.stages) - 1):
            counts = (counts + 1) // 2
        return frames, relative_lengths(counts, frames.shape[1])

    def encode(self, feats, counts=None):
        """Conv1 .. Conv2 in one pass, padded steps zeroed before every
        convolution (``frames`` calls it for inputs up to ``chunk_frames``,
        ``windowing.encode_windowed`` for each window of longer ones).

        Arguments
        ---------
        feats : torch.Tensor
            (batch, time, n_mels) features.
        counts : torch.Tensor or None
            Absolute valid frames of each row, shape (batch,); None: no
            padding (no mask is built).

        Returns
        -------
        frames : torch.Tensor
            (batch, time', frame_dim); steps past a row's count are padding.

        Example
        -------
        >>> model = ResNet34(n_mels=24, channels=[4, 4, 8, 8], lin_neurons=8)
        >>> model.encode(torch.rand(2, 37, 24), torch.tensor([37, 20])).shape
        torch.Size([2, 5, 8])
        """
        x = feats.unsqueeze(1)

        def time_mask(steps):
            if counts is None:
                return None
            keep = torch.arange(steps, device=feats.device) < counts[:, None]
            return keep.to(feats.dtype)[:, None, :, None]

        mask = time_mask(x.shape[2])
        x = self.relu(self.bn1(self.conv1(_masked(x, mask))))
        for stage in self.stages:
            for block in stage:
                mask_in = mask
                if block.conv1.stride[0] == 2:
                    if counts is not None:
                        counts = (counts + 1) // 2
                    # the output steps in the convolution's own shape
                    # formula, so an exporter sees one symbolic length
                    mask = time_mask((x.shape[2] - 1) // 2 + 1)
                x = block(x, mask_in, mask)
        x = self.relu(self.bn2(self.conv2(_masked(x, mask))))
        return x.permute(0, 2, 1, 3).flatten(2)

    def forward(self, feats, lengths=None):
        """Computes speaker embeddings.

        Arguments
        ---------
        feats : torch.Tensor
            (batch, time, n_mels) features.
        lengths : torch.Tensor or None
            Relative lengths in (0, 1] of the padded frames, shape (batch,);
            None = all full.

        Returns
        -------
        embeddings : torch.Tensor
            (batch, 1, lin_neurons), the Linear2 output.
        """
        frames, frame_lengths = self.frames(feats, lengths)
        pooled = self.pooling(frames, frame_lengths).squeeze(1)
        hidden = torch.relu(self.norm(self.linear1(pooled)))
        return self.linear2(hidden).unsqueeze(1)
