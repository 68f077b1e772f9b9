"""Length bookkeeping between samples, feature frames and SpeechBrain's
relative lengths, written once for the encoder, the extraction, the recipe
and the pretrained interface.

SpeechBrain passes ``lengths`` relative to the padded time axis, in (0, 1].
The encoder needs absolute valid frame counts to mask, and must hand the
pooling relative lengths that every mask convention turns back into the
same counts. ``EncoderClassifier.encode_batch`` hands the modules after the
features lengths relative to the padded *samples* (``wav_lens``); only the
padded sample count turns those into the exact frames of each signal, and
``FrameExactLengths`` supplies it (docs/EQUATIONS.md, "Lengths and
masking").

Authors
 * speechbrain-mrmha developers
"""

import weakref

import torch

__all__ = [
    "HOP_SAMPLES",
    "ONE_ULP_DOWN",
    "frame_counts",
    "valid_frame_counts",
    "sample_frame_counts",
    "relative_lengths",
    "FrameExactLengths",
]

HOP_SAMPLES = 160  # Fbank hop of 10 ms at 16 kHz
# x - x * 2**-24 is the float32 below a positive normal x (relative_lengths)
ONE_ULP_DOWN = 2.0**-24


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
    round(l * num_samples) samples has ``frame_counts`` of them, the frames
    Fbank gives it alone.

    A length that is no whole number of samples, l * num_samples, but a
    whole number k of frames, l * T with T = 1 + num_samples // hop (both up
    to float rounding), is read as k frames: so frame-exact lengths
    (``relative_lengths``, as ``extraction.encode_signals`` passes them)
    keep their counts. Exact for float32 lengths of batches up to 2**22
    samples (262 s at 16 kHz); see docs/EQUATIONS.md.

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths in (0, 1], shape (batch,).
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
    >>> sample_frame_counts(relative_lengths(torch.tensor([51, 7]), 101), 16100)
    tensor([51,  7])
    """
    num_frames = 1 + num_samples // hop
    # in float64 on the CPU (some devices have none): l * num_samples keeps
    # every digit of a float32 l
    rel = lengths.detach().to("cpu", torch.float64)
    # a float32 l is within 1 ulp of n / num_samples (one or two roundings)
    # and within 1.5 ulp of k / T (relative_lengths may move it down one)
    eps = torch.finfo(lengths.dtype).eps
    samples, frames = rel * num_samples, rel * num_frames
    whole_samples, whole_frames = torch.round(samples), torch.round(frames)
    in_samples = (samples - whole_samples).abs() <= eps * samples
    in_frames = (frames - whole_frames).abs() <= 2 * eps * frames
    counts = torch.where(
        in_frames & ~in_samples,
        whole_frames.long(),
        frame_counts(whole_samples.long(), hop),
    )
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
    normalised features). Any other call passes unchanged. Frame-exact
    lengths stay as they are (see ``sample_frame_counts``).

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
        if (
            num_samples is None
            or not torch.is_tensor(lengths)
            or lengths.shape != args[0].shape[:1]
            or not bool(((lengths > 0) & (lengths <= 1 + 1e-6)).all())
        ):
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
