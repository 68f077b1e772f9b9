"""Tests of the length bookkeeping (speechbrain_mrmha/lengths.py): samples to
feature frames, relative lengths to frame counts and back."""

import torch
from speechbrain.dataio.dataio import length_to_mask
from speechbrain.lobes.features import Fbank

from speechbrain_mrmha.lengths import (
    HOP_SAMPLES,
    frame_counts,
    relative_lengths,
    valid_frame_counts,
)


def test_relative_lengths_recovered_by_both_mask_conventions():
    for steps in range(1, 400):
        counts = torch.arange(1, steps + 1)
        rel = relative_lengths(counts, steps)
        assert torch.equal(torch.round(rel * steps).long(), counts)
        mask = length_to_mask(rel * steps, steps)
        assert torch.equal(mask.sum(dim=1).long(), counts)
        assert rel[-1].item() == 1.0
        assert torch.all(rel <= counts / steps)


def test_valid_frame_counts_round_like_speechbrain():
    lengths = torch.tensor([1.0, 0.55, 0.04, 0.051])
    counts = valid_frame_counts(lengths, 10)
    # SpeechBrain's StatisticsPooling: int(torch.round(lengths * T)), >= 1
    expected = [max(1, int(torch.round(x * 10))) for x in lengths]
    assert counts.tolist() == expected


def test_frame_counts_equal_speechbrain_fbank_frames():
    """The count of every signal length is the number of frames SpeechBrain's
    Fbank (centred STFT, 10 ms hop at 16 kHz) gives that signal alone."""
    fbank = Fbank(n_mels=40)
    samples = torch.tensor([400, 8000, 15999, 16000, 16159, 16160, 23457])
    expected = [fbank(torch.zeros(1, int(n))).shape[1] for n in samples]
    assert HOP_SAMPLES == 160
    assert frame_counts(samples).tolist() == expected
