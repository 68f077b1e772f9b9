"""Audio in memory (speechbrain_mrmha/dataio/audio.py ``load_audio`` and the
crop path of speechbrain_mrmha/training/crops.py): bytes and binary file
objects of a WAV, FLAC or m4a file give exactly the tensor the file gives,
whole and cropped, resampled or not, and so do the training crops; errors
name what the caller calls the audio; audio in memory needs its
extension. The m4a files are written with PyAV's own AAC encoder, as in
tests/unit/test_audio_m4a.py (skipped without PyAV)."""

import io

import numpy as np
import pytest
import soundfile
import torch
from test_audio_m4a import make_signal, write_aac

from speechbrain_mrmha.dataio.audio import load_audio
from speechbrain_mrmha.training.crops import RandomCrops, crop

SECONDS = 1.3
CROPS = [(0, None), (0, 800), (1, 799), (4321, 8000), (20000, None)]


def write_soundfile(path, rate, channels, subtype):
    signal = make_signal(rate, SECONDS, channels)
    soundfile.write(path, signal.T, rate, subtype=subtype)
    return path


def write_m4a(path, rate, channels):
    av = pytest.importorskip("av")
    return write_aac(av, path, make_signal(rate, SECONDS, channels), rate)


# (file name, writer): 16 kHz as read, other rates resampled, stereo mixed
FILES = [
    ("pcm16.wav", lambda p: write_soundfile(p, 16000, 1, "PCM_16")),
    ("float_stereo.wav", lambda p: write_soundfile(p, 16000, 2, "FLOAT")),
    ("pcm16_22k.wav", lambda p: write_soundfile(p, 22050, 1, "PCM_16")),
    ("a.flac", lambda p: write_soundfile(p, 16000, 1, "PCM_16")),
    ("a_48k_stereo.flac", lambda p: write_soundfile(p, 48000, 2, "PCM_24")),
    ("a.m4a", lambda p: write_m4a(p, 16000, 1)),
    ("a_44k_stereo.m4a", lambda p: write_m4a(p, 44100, 2)),
]


def in_memory(data):
    """The same content as every kind of in-memory audio."""
    return {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "BytesIO": io.BytesIO(data),
    }


@pytest.mark.parametrize("name, write", FILES, ids=[f[0] for f in FILES])
@pytest.mark.parametrize("offset, num_samples", CROPS)
def test_bytes_give_exactly_the_tensor_of_the_file(
    tmp_path, name, write, offset, num_samples
):
    path = write(tmp_path / name)
    extension = path.suffix[1:]
    expected = load_audio(
        path, min_seconds=0, offset=offset, num_samples=num_samples
    )
    for kind, source in in_memory(path.read_bytes()).items():
        for _ in range(2):  # a file object is read from its start again
            got = load_audio(
                source,
                min_seconds=0,
                offset=offset,
                num_samples=num_samples,
                extension=extension,
            )
            assert torch.equal(got, expected), kind
    with open(path, "rb") as handle:  # an open file, extension with a dot
        handle.read(10)
        got = load_audio(
            handle,
            min_seconds=0,
            offset=offset,
            num_samples=num_samples,
            extension=path.suffix.upper(),
        )
        assert torch.equal(got, expected)
        assert not handle.closed  # the caller's to close


@pytest.mark.parametrize("name, write", FILES, ids=[f[0] for f in FILES])
def test_training_crops_from_bytes_equal_those_of_the_file(
    tmp_path, name, write
):
    """The crop and speed copy of every utterance and epoch, and the fixed
    validation crop; a file shorter than the crop is repeated alike."""
    path = write(tmp_path / name)
    data, extension = path.read_bytes(), path.suffix[1:]
    crops = RandomCrops(7, sentence_len=0.5, speeds=[1.0, 0.9, 1.1])
    for epoch in range(3):
        crops.epoch = epoch
        for utterance in ("u1", "u2", "u3"):
            sig, copy = crops.read(utterance, path, SECONDS)
            got, got_copy = crops.read(
                utterance, data, SECONDS, extension=extension
            )
            assert torch.equal(got, sig) and got_copy == copy
    longer = crop(path, SECONDS, 2.0, 16000, start=0)  # repeated
    assert torch.equal(
        crop(data, SECONDS, 2.0, 16000, start=0, extension=extension), longer
    )


def test_errors_name_the_audio_as_the_caller_calls_it(tmp_path):
    name = "shard-000003.tar: utterance id1/a (from /data/id1/a.wav)"
    path = write_soundfile(tmp_path / "a.wav", 16000, 1, "PCM_16")
    data = path.read_bytes()
    cases = [
        ({"source": b"not audio", "extension": "wav"}, "cannot read audio ("),
        ({"source": data[:30], "extension": "wav"}, "cannot read audio ("),
        (
            {"source": data, "extension": "wav", "offset": 30000},
            "crop offset 30000 is past the end of the audio",
        ),
        (
            {"source": data, "extension": "wav", "min_seconds": 2},
            "audio too short (1.30 s, need at least 2 s)",
        ),
        (
            {"source": data, "extension": "wav", "offset": -1},
            "a crop needs offset >= 0",
        ),
        (
            {"source": data},
            "audio in memory needs its extension (e.g. extension='wav'",
        ),
    ]
    for kwargs, problem in cases:
        with pytest.raises(ValueError) as error:
            load_audio(name=name, **kwargs)
        assert str(error.value).startswith(f"{name}: {problem}"), error.value
    nan = np.full(8000, np.nan, dtype="float32")
    buffer = io.BytesIO()
    soundfile.write(buffer, nan, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(ValueError) as error:
        load_audio(buffer.getvalue(), extension="wav", name=name)
    assert str(error.value) == (
        f"{name}: audio has non-finite samples (8000 NaN or inf values)"
    )
    with pytest.raises(ValueError, match=r"^<wav audio in memory>: cannot"):
        load_audio(b"not audio", extension="wav")
    with pytest.raises(TypeError, match="a path, bytes or a seekable binary"):
        load_audio(123)


def test_damaged_m4a_in_memory_names_the_audio(tmp_path):
    """Cut before its end, or in its header at the end (a file without
    faststart): refused naming the audio, as the file is."""
    path = write_m4a(tmp_path / "a.m4a", 16000, 1)
    data = path.read_bytes()
    for cut in (data[: len(data) // 2], data[:-500], b"\0" * 100):
        (tmp_path / "cut.m4a").write_bytes(cut)
        with pytest.raises(ValueError) as from_file:
            load_audio(tmp_path / "cut.m4a")
        with pytest.raises(ValueError) as from_memory:
            load_audio(cut, extension="m4a", name="utterance u1")
        problem = str(from_file.value).removeprefix(f"{tmp_path / 'cut.m4a'}")
        assert str(from_memory.value) == f"utterance u1{problem}"
