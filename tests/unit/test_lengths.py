"""Tests of the length bookkeeping (speechbrain_mrmha/layers/lengths.py): samples to
feature frames, relative lengths to frame counts and back, SpeechBrain's
sample-relative lengths to exact frame counts (a relative length given with
waveforms always means samples), the one check of relative lengths, and the
hooks that hand exact counts to the modules after the features."""

import functools
import gc
import math
import weakref

import pytest
import torch
from speechbrain.dataio.dataio import length_to_mask
from speechbrain.lobes.features import Fbank
from torch import nn

from speechbrain_mrmha.layers.lengths import (
    HOP_SAMPLES,
    ONE_ULP_DOWN,
    RELATIVE_TOLERANCE,
    FrameExactLengths,
    check_relative_lengths,
    frame_counts,
    relative_lengths,
    sample_frame_counts,
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


def _relative_lengths_with_nextafter(counts, num_frames):
    """The former ``relative_lengths``, with ``torch.nextafter``."""
    target = counts.float()
    rel = target / num_frames
    above = rel * num_frames > target
    return torch.where(above, torch.nextafter(rel, torch.zeros_like(rel)), rel)


def test_relative_lengths_bit_identical_to_the_nextafter_form():
    """The exportable ulp step equals torch.nextafter bit for bit: on every
    count of every padded length up to 3000 frames and on 2**20 random
    positive float32 values over many binades (powers of two included)."""
    for steps in range(1, 3001):
        counts = torch.arange(0, steps + 1)
        new = relative_lengths(counts, steps)
        old = _relative_lengths_with_nextafter(counts, steps)
        assert torch.equal(new.view(torch.int32), old.view(torch.int32))
    generator = torch.Generator().manual_seed(0)
    exponents = torch.randint(-100, 1, (2**20,), generator=generator)
    mantissa = 1 + torch.rand(2**20, generator=generator, dtype=torch.float64)
    values = (mantissa * 2.0**exponents).float()
    values = torch.cat([values, 2.0 ** torch.arange(-100, 1).float()])
    stepped = values - values * ONE_ULP_DOWN
    towards_zero = torch.nextafter(values, torch.zeros_like(values))
    assert torch.equal(
        stepped.view(torch.int32), towards_zero.view(torch.int32)
    )


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


def test_sample_relative_lengths_need_the_padded_sample_count():
    """The same relative length and padded frames come from signals with
    different frame counts: no rule on (l, T) alone is exact."""
    samples = torch.tensor([12120, 12237])
    padded = torch.tensor([16160, 16316])
    rel = samples / padded
    assert rel[0] == rel[1] == 0.75
    assert (frame_counts(padded) == 102).all()
    assert frame_counts(samples).tolist() == [76, 77]
    for i in range(2):
        counts = sample_frame_counts(rel[i : i + 1], int(padded[i]))
        assert counts.item() == frame_counts(samples)[i].item()


def test_sample_frame_counts_exact_for_sample_relative_lengths():
    """Exact for SpeechBrain's wav_lens (samples / padded samples), float32
    and float64, also when the padded length ends one sample short of a hop
    (the tightest case). A frame-relative length (relative_lengths, or
    plain k / T) is no exception: it is read as relative to the samples,
    round(l * M) samples, never guessed to count frames."""
    generator = torch.Generator().manual_seed(0)
    padded = torch.randint(
        100, 2**22 // HOP_SAMPLES, (300,), generator=generator
    )
    padded = padded * HOP_SAMPLES + torch.tensor([159, 0, 80]).repeat(100)
    guessed = 0
    for num_samples in padded.tolist():
        num_frames = 1 + num_samples // HOP_SAMPLES
        samples = torch.randint(1, num_samples + 1, (40,), generator=generator)
        samples[:8] = (samples[:8] // HOP_SAMPLES * HOP_SAMPLES).clamp(min=1)
        samples[-1] = num_samples
        expected = frame_counts(samples)
        for rel in (samples / num_samples, samples.double() / num_samples):
            counts = sample_frame_counts(rel, num_samples)
            assert torch.equal(counts, expected), num_samples
        for rel in (
            relative_lengths(expected, num_frames),
            expected.float() / num_frames,
        ):
            counts = sample_frame_counts(rel, num_samples)
            as_samples = torch.round(rel.double() * num_samples).long()
            assert torch.equal(counts, frame_counts(as_samples)), num_samples
            guessed += int((counts != expected).sum())
    # read as samples, frame-relative lengths often miss their own count
    assert guessed > 0


def test_one_check_of_relative_lengths_with_one_tolerance():
    """(0, 1] up to RELATIVE_TOLERANCE above 1, one value per row; the
    encoder, the poolings and the hooks all apply this check."""
    from speechbrain_mrmha.layers.pooling import (
        MaskedStatisticsPooling,
        MultiResolutionMultiHeadAttentionPooling,
    )
    from speechbrain_mrmha.layers.resnet import ResNet34

    edge = torch.tensor([1.0 + RELATIVE_TOLERANCE, 0.5])
    beyond = torch.tensor([1.0 + 2 * RELATIVE_TOLERANCE, 0.5])
    assert check_relative_lengths(edge, 2) is edge
    model = ResNet34(
        n_mels=24, channels=[2, 2, 2, 2], block_counts=[1, 1, 1, 1]
    ).eval()
    users = [
        lambda lengths: check_relative_lengths(lengths, 2),
        lambda lengths: model(torch.randn(2, 20, 24), lengths),
        lambda lengths: MaskedStatisticsPooling()(
            torch.randn(2, 5, 3), lengths
        ),
        lambda lengths: MultiResolutionMultiHeadAttentionPooling(
            input_size=4, num_heads=2
        )(torch.randn(2, 5, 4), lengths),
    ]
    for use in users:
        with torch.no_grad():
            use(edge)
        for bad in (
            beyond,
            torch.tensor([0.0, 0.5]),
            torch.tensor([math.nan, 1.0]),
        ):
            with pytest.raises(
                ValueError, match=r"relative lengths in \(0, 1\]"
            ):
                use(bad)
        with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
            use(torch.ones(3))
    # the hooks hand on lengths beyond the tolerance unchanged
    fbank, frames = Fbank(n_mels=40), CountedFrames()
    hooks = FrameExactLengths(fbank, [frames])
    seen = []
    frames.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    feats = fbank(torch.zeros(2, 16100))
    for lengths in (edge, beyond):
        frames(feats, lengths)
        assert (seen[-1] is lengths) == (lengths is beyond)
    hooks.remove()


class CountedFrames(nn.Module):
    """A consumer that returns the frames it would count."""

    def forward(self, feats, lengths=None):
        return valid_frame_counts(lengths, feats.shape[1])


def padded_batch(samples):
    generator = torch.Generator().manual_seed(0)
    wavs = torch.zeros(len(samples), max(samples))
    for row, n in enumerate(samples):
        wavs[row, :n] = 0.1 * torch.randn(n, generator=generator)
    return wavs, torch.tensor(samples) / max(samples)


def test_hooks_count_the_frames_of_each_signal_alone():
    samples = [16100, 8000, 1000, 8150]
    fbank, norm, frames = Fbank(n_mels=40), PassOn(), CountedFrames()
    wavs, wav_lens = padded_batch(samples)
    feats = fbank(wavs)
    assert valid_frame_counts(wav_lens, feats.shape[1]).tolist() == [
        101,
        50,
        6,
        51,
    ]
    hooks = FrameExactLengths(fbank, [norm, frames])
    alone = frame_counts(torch.tensor(samples)).tolist()
    assert alone == [101, 51, 7, 51]
    feats = fbank(wavs)
    # positional and keyword lengths, directly and after a consumer
    assert frames(feats, wav_lens).tolist() == alone
    assert frames(feats, lengths=wav_lens).tolist() == alone
    assert frames(norm(feats, wav_lens), wav_lens).tolist() == alone
    # any other tensor, even equal, passes unchanged
    assert frames(feats.clone(), wav_lens).tolist() == [101, 50, 6, 51]
    hooks.remove()
    assert frames(fbank(wavs), wav_lens).tolist() == [101, 50, 6, 51]


class PassOn(nn.Module):
    """A consumer that returns its features (as a normalisation would)."""

    def forward(self, feats, lengths=None):
        return feats * 1.0


def test_hooks_leave_missing_and_invalid_lengths_to_the_module():
    fbank, frames = Fbank(n_mels=40), CountedFrames()
    hooks = FrameExactLengths(fbank, [frames])
    wavs, _ = padded_batch([16100, 8000])
    feats = fbank(wavs)
    seen = []
    frames.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    for lengths in (None, torch.tensor([1.0, 1.5]), torch.tensor([1.0])):
        try:
            frames(feats, lengths)
        except (RuntimeError, TypeError, AttributeError):
            pass
        assert seen[-1] is lengths
    hooks.remove()


def test_hooks_keep_nothing_alive():
    fbank, frames = Fbank(n_mels=40), CountedFrames()
    hooks = FrameExactLengths(fbank, [frames])
    wavs, wav_lens = padded_batch([16100, 8000])
    feats = fbank(wavs)
    frames(feats, wav_lens)
    ref = weakref.ref(feats)
    del feats
    gc.collect()
    assert ref() is None
    hooks.remove()


def test_hooks_need_a_centred_stft():
    with pytest.raises(ValueError, match="centred STFT"):
        FrameExactLengths(nn.Identity(), [CountedFrames()])
    fbank = Fbank(n_mels=40)
    fbank.compute_STFT.center = False
    with pytest.raises(ValueError, match="Fbank"):
        FrameExactLengths(fbank, [CountedFrames()])


def test_padding_never_changes_an_embedding_with_sample_relative_lengths():
    """Fbank -> SpeechBrain's sentence InputNormalization -> ResNet34 with
    the hooks: every signal of a padded batch embeds as alone."""
    from speechbrain.processing.features import InputNormalization

    from speechbrain_mrmha.layers.pooling import (
        MultiResolutionMultiHeadAttentionPooling,
    )
    from speechbrain_mrmha.layers.resnet import ResNet34

    torch.manual_seed(0)
    fbank = Fbank(n_mels=40)
    norm = InputNormalization(norm_type="sentence", std_norm=False)
    model = ResNet34(
        channels=[4, 8, 16, 32],
        block_counts=[1, 1, 1, 1],
        lin_neurons=16,
        pooling=functools.partial(
            MultiResolutionMultiHeadAttentionPooling, num_heads=2
        ),
    ).eval()
    with torch.no_grad():
        model.pooling.score_weight.mul_(30.0)  # a peaky attention
    hooks = FrameExactLengths(fbank, [norm, model])
    samples = [16100, 8000, 1000, 8150, 12345]
    wavs, wav_lens = padded_batch(samples)

    def embed(wavs, lengths):
        feats = fbank(wavs)
        return model(norm(feats, lengths), lengths).squeeze(1)

    with torch.no_grad():
        batched = embed(wavs, wav_lens)
        for row, n in enumerate(samples):
            alone = embed(wavs[row : row + 1, :n], torch.ones(1))
            torch.testing.assert_close(
                batched[row], alone[0], rtol=0, atol=1e-4
            )
    hooks.remove()
