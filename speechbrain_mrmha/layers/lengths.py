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

The valid samples of each row also decide whether it holds a signal at
all: ``SILENCE_FLOOR_DBFS`` is the one floor below which no backend, and no
exported waveform graph, gives an embedding to score (``signal_levels``,
``usable_rows``).

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
    "SILENCE_FLOOR_DBFS",
    "SILENCE_FLOOR",
    "signal_levels",
    "usable_rows",
    "level_problem",
]

HOP_SAMPLES = 160  # Fbank hop of 10 ms at 16 kHz
# x - x * 2**-24 is the float32 below a positive normal x (relative_lengths)
ONE_ULP_DOWN = 2.0**-24
# how far above 1 a relative length may lie (float rounding of a quotient
# computed another way than n / N); larger values are an error
RELATIVE_TOLERANCE = 1e-4

SILENCE_FLOOR_DBFS = -70.0
"""The least level a waveform needs to be embedded, in dB of full scale
(a sine of amplitude 1 is +3 dBFS, white noise of std 1 is 0 dBFS).

The level is the RMS of a row's **valid samples about their mean**
(``signal_levels``): their standard deviation. A row below the floor holds
no usable signal, and no backend or exported waveform graph gives it an
embedding to score (``usable_rows``): two silent files would otherwise be
"the same speaker" with cosine 1.

Why this measure:

* it sees digital zero (level 0, ``-inf`` dBFS), near-silence, and a
  constant DC offset (level 0 about the mean: the offset is not signal);
* it depends on the valid samples alone, so padding never changes it, and
  it takes three reductions, the same in PyTorch, ONNX and TorchScript;
* it is no voice activity detector: a short word in a long silence passes
  (its level is diluted by the silence, but speech sits far above the
  floor). Refusing audio with too little speech is a model's decision;
  this floor only refuses audio with no signal, which no model can judge.

Why -70 dBFS: 16-bit quantisation noise is about -101 dBFS (one least
significant bit dithered, -98 dBFS), and 24-bit far below; quiet speech
recorded at a low gain sits around -40 to -50 dBFS. The floor lies 20 dB
under quiet speech and about 30 dB over 16-bit dither, so faint real
recordings still embed while silence, dither and hiss at the noise floor
of a converter do not.
"""
# the floor as an RMS of full scale: 10 ** (-70 / 20), about 3.2e-4
SILENCE_FLOOR = 10.0 ** (SILENCE_FLOOR_DBFS / 20.0)


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


def signal_levels(wavs, lengths):
    """The level of each row of a padded batch: the RMS of its valid
    samples about their mean (their standard deviation; see
    ``SILENCE_FLOOR_DBFS``). Padding never changes it. Written with tensor
    operations only, so an exported graph computes it for any shape.

    Arguments
    ---------
    wavs : torch.Tensor
        (batch, samples) waveforms, full scale 1.
    lengths : torch.Tensor
        (batch,) int64 valid samples of each row (counts past the padded
        samples are clipped to them, counts below 1 give level 0).

    Returns
    -------
    levels : torch.Tensor
        (batch,) float32 RMS, NaN for a row with a non-finite valid sample.

    Example
    -------
    >>> wavs = torch.tensor([[1.0, -1.0, 1.0, -1.0], [0.5, 0.5, 9.0, 9.0]])
    >>> signal_levels(wavs, torch.tensor([4, 2]))
    tensor([1., 0.])
    """
    steps = torch.arange(wavs.shape[1], device=wavs.device)
    keep = steps[None, :] < lengths[:, None]
    zero = torch.zeros((), dtype=torch.float32, device=wavs.device)
    wavs = torch.where(keep, wavs.float(), zero)
    counts = keep.sum(dim=1).clamp(min=1).float()
    means = wavs.sum(dim=1) / counts
    centred = torch.where(keep, wavs - means[:, None], zero)
    return (centred.square().sum(dim=1) / counts).sqrt()


def usable_rows(wavs, lengths, min_samples=1):
    """Which rows of a padded batch can be embedded: a valid sample count
    in [``min_samples``, samples] and a finite level at or above
    ``SILENCE_FLOOR`` (``signal_levels``). Tensor operations only: the
    exported waveform graphs return it as their ``usable`` output, for any
    input shape and any lengths.

    Arguments
    ---------
    wavs : torch.Tensor
        (batch, samples) waveforms, full scale 1.
    lengths : torch.Tensor
        (batch,) int64 valid samples of each row.
    min_samples : int
        The fewest valid samples the features accept.

    Returns
    -------
    usable : torch.Tensor
        (batch,) bool.

    Example
    -------
    >>> wavs = 0.01 * torch.randn(4, 400)
    >>> wavs[1] = 0.0  # digital zero
    >>> wavs[2] *= 0.01  # -80 dBFS
    >>> usable_rows(wavs, torch.tensor([400, 400, 400, 400]), 201)
    tensor([ True, False, False,  True])
    >>> usable_rows(wavs, torch.tensor([100, 400, 400, 401]), 201)
    tensor([False, False, False, False])
    """
    steps = torch.arange(wavs.shape[1], device=wavs.device)
    counts = (steps[None, :] < lengths[:, None]).sum(dim=1)
    # counts == lengths: the lengths lie in [0, samples]
    in_range = (counts == lengths) & (lengths >= max(int(min_samples), 1))
    levels = signal_levels(wavs, lengths)
    return in_range & torch.isfinite(levels) & (levels >= SILENCE_FLOOR)


def level_problem(level):
    """Why a row of this level has no usable signal, or None when it has
    (at or above ``SILENCE_FLOOR_DBFS``).

    Arguments
    ---------
    level : float
        The RMS of the valid samples about their mean (``signal_levels``).

    Returns
    -------
    problem : str or None

    Example
    -------
    >>> level_problem(0.1) is None
    True
    >>> level_problem(0.0)
    'no usable signal: digital zero or a constant (level -inf dBFS, the floor is -70 dBFS)'
    >>> level_problem(1e-4)
    'no usable signal: near-silence (level -80.0 dBFS, the floor is -70 dBFS)'
    >>> level_problem(float("nan"))
    'non-finite samples'
    """
    import math

    floor = f"the floor is {SILENCE_FLOOR_DBFS:g} dBFS"
    if not math.isfinite(level):
        return "non-finite samples"
    if level >= SILENCE_FLOOR:
        return None
    if level <= 0.0:
        return (
            "no usable signal: digital zero or a constant (level -inf "
            f"dBFS, {floor})"
        )
    return (
        f"no usable signal: near-silence (level {20 * math.log10(level):.1f} "
        f"dBFS, {floor})"
    )
