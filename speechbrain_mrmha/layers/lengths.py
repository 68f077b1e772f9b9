"""Length bookkeeping between samples, feature frames and SpeechBrain's
relative lengths, written once for the encoder, the extraction, the recipe
and the pretrained interface.

SpeechBrain passes ``lengths`` relative to the padded time axis, in (0, 1]
(``check_relative_lengths``, the one check with the one tolerance). A
relative length means one thing at each boundary:

* with waveforms it is relative to the padded **samples** (SpeechBrain's
  ``wav_lens``, what ``EncoderClassifier.encode_batch`` takes);
* inside the encoder, from the features on, it is relative to the padded
  **frames**.

Only the padded sample count turns a sample-relative length into the exact
frames of each signal (``sample_frame_counts``); ``FrameExactLengths``
supplies it to the modules after the features. The encoder then needs
absolute valid frame counts to mask, and hands the pooling relative lengths
that every mask convention turns back into the same counts
(``relative_lengths``). See docs/EQUATIONS.md, "Lengths and masking".

Authors
 * speechbrain-mrmha developers
"""

import weakref

import torch

__all__ = [
    "HOP_SAMPLES",
    "ONE_ULP_DOWN",
    "RELATIVE_TOLERANCE",
    "capturing_graph",
    "check_relative_lengths",
    "frame_counts",
    "valid_frame_counts",
    "sample_frame_counts",
    "relative_lengths",
    "FrameExactLengths",
]

HOP_SAMPLES = 160  # Fbank hop of 10 ms at 16 kHz
# x - x * 2**-24 is the float32 below a positive normal x (relative_lengths)
ONE_ULP_DOWN = 2.0**-24
# how far above 1 a relative length may lie (float rounding of a quotient
# computed another way than n / N); larger values are an error
RELATIVE_TOLERANCE = 1e-4


def capturing_graph():
    """True while torch.compile / torch.export or ``torch.jit.trace``
    records a graph: value-dependent checks and shortcuts stay out of it.

    Returns
    -------
    capturing : bool

    Example
    -------
    >>> capturing_graph()
    False
    """
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def check_relative_lengths(lengths, batch_size=None, owner=None):
    """Raise a ValueError unless ``lengths`` are relative lengths: a 1-d
    tensor (of ``batch_size`` values when given) in (0, 1], up to
    ``RELATIVE_TOLERANCE`` above 1. The one check of relative lengths, at
    every boundary that takes them. Values (not the shape) go unchecked
    while a graph is captured (``capturing_graph``).

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths.
    batch_size : int or None
        The batch they belong to; None: any.
    owner : str or None
        Who checks (a class name), the head of the message.

    Returns
    -------
    lengths : torch.Tensor
        As given.

    Example
    -------
    >>> check_relative_lengths(torch.tensor([1.0, 0.25]), 2)
    tensor([1.0000, 0.2500])
    >>> check_relative_lengths(torch.tensor([1.5]), owner="ResNet34")
    Traceback (most recent call last):
    ...
    ValueError: ResNet34: lengths must be relative lengths in (0, 1], got [1.5]
    """
    head = f"{owner}: " if owner else ""
    if not torch.is_tensor(lengths):
        raise ValueError(
            f"{head}lengths must be a tensor of relative lengths, got "
            f"{type(lengths).__name__}"
        )
    if batch_size is not None and tuple(lengths.shape) != (batch_size,):
        raise ValueError(
            f"{head}lengths must have shape ({batch_size},), got "
            f"{tuple(lengths.shape)}"
        )
    if lengths.dim() != 1:
        raise ValueError(
            f"{head}lengths must be a 1-d tensor of relative lengths, got "
            f"shape {tuple(lengths.shape)}"
        )
    if not capturing_graph() and not bool(
        ((lengths > 0) & (lengths <= 1 + RELATIVE_TOLERANCE)).all()
    ):
        raise ValueError(
            f"{head}lengths must be relative lengths in (0, 1], got "
            f"{lengths.tolist()}"
        )
    return lengths


def frame_counts(num_samples, hop=HOP_SAMPLES):
    """Feature frames of a centred STFT: 1 + samples // hop.

    Arguments
    ---------
    num_samples : torch.Tensor
        Samples of each signal, shape (batch,).
    hop : int
        Hop length of the features, in samples.

    Returns
    -------
    frames : torch.Tensor
        Feature frames of each signal, shape (batch,).

    Example
    -------
    >>> frame_counts(torch.tensor([16000, 16159]))
    tensor([101, 101])
    """
    return 1 + torch.div(num_samples, hop, rounding_mode="floor")


def valid_frame_counts(lengths, num_frames):
    """Converts SpeechBrain relative lengths into absolute valid frame counts.

    This is the rule when nothing but ``lengths`` is known; it is exact for
    frame-exact lengths (``relative_lengths``). SpeechBrain's sample-relative
    ``wav_lens`` leave a count one frame off now and then, whatever the
    rule; ``FrameExactLengths`` makes those exact (docs/EQUATIONS.md).

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths in (0, 1], shape (batch,).
    num_frames : int
        Padded number of frames of the batch.

    Returns
    -------
    counts : torch.Tensor
        round(lengths * num_frames) as int64, clamped to [1, num_frames].

    Example
    -------
    >>> valid_frame_counts(torch.tensor([1.0, 0.5, 0.3]), 10)
    tensor([10,  5,  3])
    """
    counts = torch.round(lengths * num_frames).long()
    return counts.clamp(min=1, max=num_frames)


def sample_frame_counts(lengths, num_samples, hop=HOP_SAMPLES):
    """Exact frame counts of signals whose lengths are relative to the
    padded samples (SpeechBrain's ``wav_lens``): a signal of
    n = round(l * num_samples) samples has ``frame_counts`` of them, the
    frames Fbank gives it alone.

    A length is always read as relative to the samples: frame-relative
    lengths belong inside the encoder, after the features. Exact for
    float32 lengths of batches up to 2**22 samples (262 s at 16 kHz), and
    far beyond for float64 ones; see docs/EQUATIONS.md.

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths in (0, 1] of the padded samples, shape (batch,).
    num_samples : int
        Padded number of samples of the batch.
    hop : int
        Hop length of the features, in samples (centred STFT).

    Returns
    -------
    counts : torch.Tensor
        Valid frames of each signal (int64 on the device of ``lengths``),
        in [1, 1 + num_samples // hop].

    Example
    -------
    >>> samples = torch.tensor([16100, 8150, 8000, 1000])
    >>> wav_lens = samples / 16100  # frames alone: 101, 51, 51, 7
    >>> sample_frame_counts(wav_lens, 16100)
    tensor([101,  51,  51,   7])
    >>> valid_frame_counts(wav_lens, 101)  # without the sample count
    tensor([101,  51,  50,   6])
    """
    num_frames = 1 + num_samples // hop
    # in float64 on the CPU (some devices have none): l * num_samples keeps
    # every digit of a float32 l, which is within 1 ulp of n / num_samples
    rel = lengths.detach().to("cpu", torch.float64)
    samples = torch.round(rel * num_samples).long()
    counts = frame_counts(samples, hop)
    return counts.clamp(min=1, max=num_frames).to(lengths.device)


def relative_lengths(counts, num_frames):
    """Converts valid frame counts back into relative lengths that every mask
    convention recovers exactly: ``round(rel * T) == count`` and also
    ``arange(T) < rel * T`` (SpeechBrain's ``length_to_mask``) selects exactly
    ``count`` frames. The plain float32 quotient ``count / T`` often has
    ``(count / T) * T`` one ulp above ``count``, which would let the float
    comparison admit one padded frame; such values are moved down one ulp.

    The ulp step is ``rel - rel * 2**-24``, not ``torch.nextafter`` (which
    torch's ONNX exporter cannot translate): for a positive normal float32
    ``rel`` the product is exact and lies between half an ulp and one ulp
    of ``rel``, so the correctly rounded difference is the next float
    towards zero, bit for bit (also under a fused multiply-add).

    Arguments
    ---------
    counts : torch.Tensor
        Valid frame counts, shape (batch,).
    num_frames : int
        Padded number of frames.

    Returns
    -------
    lengths : torch.Tensor
        Relative lengths (float32), shape (batch,).

    Example
    -------
    >>> rel = relative_lengths(torch.tensor([3, 7]), 7)
    >>> torch.round(rel * 7).long(), rel[1].item()
    (tensor([3, 7]), 1.0)
    """
    target = counts.float()
    rel = target / num_frames
    above = rel * num_frames > target
    return torch.where(above, rel - rel * ONE_ULP_DOWN, rel)


class FrameExactLengths:
    """Forward hooks that hand the modules after a feature extractor
    frame-exact lengths when they get SpeechBrain's sample-relative
    ``wav_lens``, so that padding never changes what they compute.

    ``EncoderClassifier.encode_batch(wavs, wav_lens)`` runs
    ``compute_features(wavs)``, then ``mean_var_norm(feats, wav_lens)`` and
    ``embedding_model(feats, wav_lens)``, with ``wav_lens`` relative to the
    padded samples. The frames of a signal follow from its samples
    (1 + samples // hop), but the padded sample count reaches only the
    feature extractor: from ``wav_lens`` and the padded frames alone a count
    can be one frame off, which a peaky attention notices. So a forward hook
    on ``features`` remembers the padded sample count of the feature tensor
    it returns (weakly: nothing is kept alive), and forward pre-hooks on the
    ``consumers`` replace their ``lengths`` by
    ``relative_lengths(sample_frame_counts(...))`` when their input is that
    very tensor, or the same-shaped output of a consumer that got it (the
    normalised features). Any other call, and lengths that are no relative
    lengths (``check_relative_lengths``), pass unchanged. The lengths given
    with that tensor are read as relative to the samples, as
    ``encode_batch`` gives them.

    A pretrained folder's ``hyperparams.yaml`` makes one for its
    ``compute_features``, ``mean_var_norm`` and ``embedding_model``.

    Arguments
    ---------
    features : torch.nn.Module
        A feature extractor with a centred STFT in ``compute_STFT`` (e.g.
        SpeechBrain's Fbank), called with (batch, samples) waveforms.
    consumers : list of torch.nn.Module
        The modules called after it with (features, lengths), in order.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> class Frames(torch.nn.Module):  # the frames a consumer counts
    ...     def forward(self, feats, lengths):
    ...         return valid_frame_counts(lengths, feats.shape[1])
    >>> fbank, frames = Fbank(n_mels=40), Frames()
    >>> wavs, wav_lens = torch.zeros(2, 16100), torch.tensor([1.0, 8000 / 16100])
    >>> feats = fbank(wavs)
    >>> frames(feats, wav_lens)  # 8000 samples alone: 51 frames
    tensor([101,  50])
    >>> hooks = FrameExactLengths(fbank, [frames])
    >>> frames(fbank(wavs), wav_lens), frames(feats, wav_lens)
    (tensor([101,  51]), tensor([101,  50]))
    >>> hooks.remove()
    """

    def __init__(self, features, consumers):
        stft = getattr(features, "compute_STFT", None)
        if stft is None or not getattr(stft, "center", False):
            raise ValueError(
                "FrameExactLengths needs a feature extractor with a centred "
                "STFT in compute_STFT (e.g. speechbrain.lobes.features.Fbank), "
                f"got {type(features).__name__}"
            )
        self.hop = int(stft.hop_length)
        self._samples = {}  # id(tensor) -> (weak reference, padded samples)
        self._handles = [
            features.register_forward_hook(
                self._remember_features, with_kwargs=True
            )
        ]
        for consumer in consumers:
            self._handles += [
                consumer.register_forward_pre_hook(
                    self._exact_lengths, with_kwargs=True
                ),
                consumer.register_forward_hook(self._pass_on, with_kwargs=True),
            ]

    def remove(self):
        """Removes the hooks; the modules then behave as without them."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._samples.clear()

    def _remember(self, tensor, num_samples):
        key = id(tensor)
        forget = self._samples.pop
        self._samples[key] = (
            weakref.ref(tensor, lambda _, key=key: forget(key, None)),
            num_samples,
        )

    def _padded_samples(self, tensor):
        """The padded sample count remembered for this very tensor, or None."""
        entry = self._samples.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]

    def _remember_features(self, module, args, kwargs, output):
        wavs = args[0] if args else kwargs.get("wav")
        if not (
            torch.is_tensor(wavs) and torch.is_tensor(output) and wavs.dim() > 1
        ):
            return
        num_samples = wavs.shape[1]
        if output.dim() == 3 and output.shape[1] == 1 + num_samples // self.hop:
            self._remember(output, num_samples)

    def _exact_lengths(self, module, args, kwargs):
        if not args:
            return None
        num_samples = self._padded_samples(args[0])
        positional = len(args) > 1
        lengths = args[1] if positional else kwargs.get("lengths")
        if num_samples is None:
            return None
        try:
            check_relative_lengths(lengths, args[0].shape[0])
        except ValueError:
            return None  # the module sees (and checks) what it was given
        num_frames = args[0].shape[1]
        counts = sample_frame_counts(lengths, num_samples, self.hop)
        exact = relative_lengths(counts, num_frames).to(lengths.device)
        if positional:
            return (args[0], exact, *args[2:]), kwargs
        return args, {**kwargs, "lengths": exact}

    def _pass_on(self, module, args, kwargs, output):
        if not args or not torch.is_tensor(output):
            return
        num_samples = self._padded_samples(args[0])
        if num_samples is not None and output.shape[:2] == args[0].shape[:2]:
            self._remember(output, num_samples)
