"""Training augmentation (speechbrain_mrmha.training.augment): feature masks
stay inside the valid frames and depend on (seed, step) only; noise and
reverberation come from local folders, with a clear error for an empty
one."""

import numpy as np
import pytest
import soundfile
import torch

from speechbrain_mrmha.training.augment import (
    FeatureMasking,
    mask_features,
    noise_and_reverb,
)


def test_feature_masks_stay_inside_the_valid_frames():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 60, 40) + 5.0  # no feature is 0 before masking
    copy = feats.clone()
    lengths = torch.tensor([1.0, 0.5, 0.25, 0.8, 1.0, 0.1, 0.6, 0.9])
    for _ in range(20):
        out = mask_features(feats, lengths, 2, 10, 2, 5, gen)
        assert out.shape == feats.shape and not torch.equal(out, feats)
        for b, length in enumerate(lengths):
            valid = int(round(float(length) * 60))
            # padded frames are never changed
            assert torch.equal(out[b, valid:], feats[b, valid:])
            zero = out[b, :valid] == 0
            frames = zero.all(dim=1)  # time-masked frames
            bands = zero[~frames].all(dim=0) if (~frames).any() else None
            assert frames.sum() <= 2 * 10
            if bands is not None:
                assert bands.sum() <= 2 * 5
                # every zero is in a masked frame or a masked band
                assert torch.equal(zero, frames[:, None] | bands[None, :])
    assert torch.equal(feats, copy)  # the caller's tensor is left alone


def test_feature_masking_draws_from_seed_and_step():
    """The masks of a step are those of mask_features with the generator
    seeded by (seed, step): a resumed run masks its steps alike."""
    feats = torch.randn(4, 50, 40) + 5.0
    lengths = torch.tensor([1.0, 0.7, 0.4, 0.9])
    masking = FeatureMasking(2, 10, 2, 5, seed=3)
    out = masking(feats, lengths, step=11)
    generator = torch.Generator().manual_seed(3 * 1_000_003 + 11)
    assert torch.equal(
        out, mask_features(feats, lengths, 2, 10, 2, 5, generator)
    )
    assert torch.equal(out, FeatureMasking(2, 10, 2, 5, 3)(feats, lengths, 11))
    assert not torch.equal(out, masking(feats, lengths, step=12))
    assert not torch.equal(
        out, FeatureMasking(2, 10, 2, 5, 4)(feats, lengths, 11)
    )
    assert list(masking.parameters()) == []


def test_noise_and_reverb_from_local_folders(tmp_path):
    noise, rir = tmp_path / "noise", tmp_path / "rir" / "sub"
    noise.mkdir()
    rir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        soundfile.write(noise / f"n{i}.wav", rng.standard_normal(16000), 16000)
    impulse = np.zeros(800)
    impulse[0], impulse[400] = 1.0, 0.5
    soundfile.write(rir / "r.wav", impulse, 16000)
    assert noise_and_reverb(None, None, tmp_path / "csv", 0.6) is None
    assert not (tmp_path / "csv").exists()
    augment = noise_and_reverb(noise, rir.parent, tmp_path / "csv", 1.0)
    lines = (tmp_path / "csv" / "noise.csv").read_text().splitlines()
    assert lines[0] == "ID,duration,wav,wav_format,wav_opts"
    assert [line.split(",")[2] for line in lines[1:]] == [
        str(noise / "n0.wav"),
        str(noise / "n1.wav"),
    ]
    assert str(rir / "r.wav") in (tmp_path / "csv" / "rir.csv").read_text()
    assert len(augment.augmentations) == 2
    signal = torch.randn(2, 16000) * 0.1
    augmented, lengths = augment(signal, torch.ones(2))
    assert augmented.shape == signal.shape and not torch.equal(
        augmented, signal
    )
    with pytest.raises(FileNotFoundError, match=r"rir_folder .*: no \.wav"):
        noise_and_reverb(None, tmp_path / "csv", tmp_path / "csv2", 0.6)
