"""Length bookkeeping between samples, feature frames and SpeechBrain's
relative lengths, written once for the encoder, the extraction and the
recipe.

SpeechBrain passes ``lengths`` relative to the padded time axis, in (0, 1].
The encoder needs absolute valid frame counts to mask, and must hand the
pooling relative lengths that every mask convention turns back into the
same counts.

Authors
 * speechbrain-mrmha developers
"""

import torch

__all__ = [
    "HOP_SAMPLES",
    "frame_counts",
    "valid_frame_counts",
    "relative_lengths",
]

HOP_SAMPLES = 160  # Fbank hop of 10 ms at 16 kHz


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


def relative_lengths(counts, num_frames):
    """Converts valid frame counts back into relative lengths that every mask
    convention recovers exactly: ``round(rel * T) == count`` and also
    ``arange(T) < rel * T`` (SpeechBrain's ``length_to_mask``) selects exactly
    ``count`` frames. The plain float32 quotient ``count / T`` often has
    ``(count / T) * T`` one ulp above ``count``, which would let the float
    comparison admit one padded frame; such values are moved down one ulp.

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
    return torch.where(above, torch.nextafter(rel, torch.zeros_like(rel)), rel)
