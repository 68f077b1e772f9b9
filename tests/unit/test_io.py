"""Audio reading of speechbrain_mrmha/dataio/audio.py: crops equal slices of the whole
file (at the file's rate and resampled), mono mixdown, header info, errors
that name the file (non-finite samples included), the header-only length
check that agrees with the loader's, and content digests. (The atomic
writers are covered by their doctests, by every writer's tests and by
tests/unit/test_permissions.py.)"""

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from speechbrain_mrmha.dataio.audio import audio_info, audio_seconds, load_audio
from speechbrain_mrmha.dataio.files import content_digest


def write_noise(path, rate, seconds=1.3, channels=1, seed=0):
    data = 0.2 * np.random.default_rng(seed).standard_normal(
        (int(rate * seconds), channels)
    )
    soundfile.write(path, data.astype("float32"), rate, subtype="FLOAT")
    return path, data.astype("float32")


CROPS = [
    (0, 800),
    (1, 799),
    (4321, 8000),
    (7, None),
    (20700, None),
    (20750, 500),
]


@pytest.mark.parametrize("offset, num_samples", CROPS)
def test_crop_at_the_native_rate_is_the_exact_slice(
    tmp_path, offset, num_samples
):
    path, _ = write_noise(tmp_path / "a.wav", 16000)
    whole = load_audio(path)
    crop = load_audio(
        path, min_seconds=0, offset=offset, num_samples=num_samples
    )
    end = None if num_samples is None else offset + num_samples
    assert torch.equal(crop, whole[offset:end])


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("offset, num_samples", CROPS)
def test_resampled_crop_equals_the_slice_of_the_resampled_file(
    tmp_path, rate, offset, num_samples
):
    """Counted at the target rate; the read carries enough context for the
    resampling filter, so even the crop's edges match."""
    path, data = write_noise(tmp_path / "a.wav", rate, channels=2)
    whole = load_audio(path)
    expected = torchaudio.functional.resample(
        torch.from_numpy(data).mean(dim=1), rate, 16000
    )
    assert torch.equal(whole, expected)
    crop = load_audio(
        path, min_seconds=0, offset=offset, num_samples=num_samples
    )
    end = None if num_samples is None else offset + num_samples
    assert crop.shape == whole[offset:end].shape
    torch.testing.assert_close(crop, whole[offset:end], atol=1e-6, rtol=0)


def test_crop_reads_only_the_frames_it_needs(tmp_path, monkeypatch):
    path, _ = write_noise(tmp_path / "a.wav", 16000, seconds=3.0)
    requested = []
    original = soundfile.SoundFile.read

    def recording(self, frames=-1, *args, **kwargs):
        requested.append((self.tell(), frames))
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(soundfile.SoundFile, "read", recording)
    load_audio(path, offset=16000, num_samples=8000)
    assert requested == [(16000, 8000)]


def test_stereo_is_mixed_down(tmp_path):
    path = tmp_path / "stereo.wav"
    left = np.linspace(-0.5, 0.5, 16000, dtype="float32")
    soundfile.write(
        path,
        np.stack([left, np.full_like(left, 0.25)], axis=1),
        16000,
        subtype="FLOAT",
    )
    signal = load_audio(path)
    torch.testing.assert_close(signal, torch.from_numpy(left + 0.25) / 2)


def test_audio_info_reads_the_header(tmp_path):
    path, _ = write_noise(tmp_path / "a.wav", 22050, seconds=0.5, channels=2)
    assert audio_info(path) == (11025, 22050)


def test_errors_name_the_file(tmp_path):
    path, _ = write_noise(tmp_path / "short.wav", 16000, seconds=0.2)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio\n")
    missing = tmp_path / "missing.wav"
    cases = [
        (
            lambda: load_audio(missing),
            f"{missing}: cannot read audio (file does not exist)",
        ),
        (lambda: load_audio(not_audio), f"{not_audio}: cannot read audio ("),
        (
            lambda: load_audio(path),
            f"{path}: audio too short (0.20 s, need at least 0.5 s)",
        ),
        (
            lambda: load_audio(path, min_seconds=0, offset=3200),
            f"{path}: crop offset 3200 is past the end of the audio (3200 samples at 16000 Hz)",
        ),
        (
            lambda: load_audio(path, offset=-1),
            f"{path}: a crop needs offset >= 0",
        ),
        (
            lambda: load_audio(path, num_samples=0),
            f"{path}: a crop needs offset >= 0",
        ),
        (
            lambda: audio_info(missing),
            f"{missing}: cannot read audio header (file does not exist)",
        ),
        (
            lambda: audio_info(not_audio),
            f"{not_audio}: cannot read audio header (",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value).startswith(message), (str(error.value), message)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_audio_is_refused_naming_the_file(tmp_path, bad):
    """A float WAV with a NaN or infinite sample is an error naming the file
    (it used to give a NaN embedding, then a score of nan), for whole files,
    crops and stereo files alike."""
    data = 0.1 * np.ones((16000, 2), dtype="float32")
    data[12345, 1] = bad
    path = tmp_path / "bad.wav"
    soundfile.write(path, data, 16000, subtype="FLOAT")
    for call in (
        lambda: load_audio(path),
        lambda: load_audio(path, min_seconds=0, offset=12000, num_samples=800),
    ):
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value) == (
            f"{path}: audio has non-finite samples (1 NaN or inf values)"
        )
    # a crop that does not reach the bad sample is fine
    assert load_audio(path, min_seconds=0, num_samples=800).shape == (800,)


@pytest.mark.parametrize(
    "rate, frames",
    [(16000, 7999), (16000, 8000), (8000, 3999), (8000, 4000), (44100, 22049)],
)
def test_header_length_check_agrees_with_the_loader(tmp_path, rate, frames):
    """audio_seconds refuses exactly the files load_audio refuses as too
    short, with the same message, from the header alone."""
    path = tmp_path / "a.wav"
    soundfile.write(path, np.zeros(frames, dtype="float32"), rate)
    try:
        load_audio(path)
        loader = None
    except ValueError as error:
        loader = str(error)
    try:
        assert audio_seconds(path) == frames / rate
        header = None
    except ValueError as error:
        header = str(error)
    assert header == loader
    # measured at the model's rate, after resampling: ceil(frames * 16 kHz / rate)
    assert (loader is None) == (-(-frames * 16000 // rate) >= 8000)


def test_content_digest_is_the_sha256_of_the_bytes(tmp_path):
    import hashlib

    path = tmp_path / "a.bin"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # 3 chunks +
    path.write_bytes(data)
    assert content_digest(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert content_digest(tmp_path / "empty") == hashlib.sha256().hexdigest()
