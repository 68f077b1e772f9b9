"""The MP4 box reader behind ``audio_info`` for ``.m4a`` / ``.mp4``
(speechbrain_mrmha/dataio/audio.py). For AAC files written by PyAV's
encoder (lengths on and off the 1024-sample AAC frame; FFmpeg's edit list
that skips the encoder delay, an empty edit before the media, no edit list;
moov first or last; the ipod, mp4 and mov muxers; other rates, stereo, a
media time scale other than the rate) it reads, without PyAV, the frames
and rate ``container_info`` (PyAV) gives, and at 16 kHz the length
``load_audio`` decodes. Files it does not read with certainty get PyAV's
answer; truncated, cut, damaged and non-audio files give an error naming
the file."""

import struct
import sys

import numpy as np
import pytest
from test_audio_m4a import make_signal

from speechbrain_mrmha.dataio.audio import (
    audio_info,
    container_info,
    load_audio,
)


@pytest.fixture
def av():
    return pytest.importorskip("av")


def encode(
    av,
    path,
    samples,
    rate=16000,
    channels=1,
    edit="priming",
    faststart=False,
    fmt="ipod",
    tracks=1,
):
    """Encode ``samples`` frames of a test signal with PyAV's AAC encoder.
    ``edit``: ``"priming"`` (first pts 0: FFmpeg's edit list skips the
    encoder delay), ``"delay"`` (first pts 1600: an empty edit, then the
    media), ``"none"`` (no edit list: the delay is presented)."""
    signal = make_signal(rate, samples / rate, channels)
    layout = "mono" if channels == 1 else "stereo"
    options = {"movflags": "faststart"} if faststart else {}
    if edit == "none":
        options["use_editlist"] = "0"
    with av.open(str(path), "w", format=fmt, options=options) as container:
        streams = [
            container.add_stream("aac", rate=rate, layout=layout)
            for _ in range(tracks)
        ]
        for stream in streams:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(signal), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            frame.pts = {"priming": 0, "delay": 1600}.get(edit)
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
    return path


def header_without_pyav(path, monkeypatch):
    """``audio_info`` with ``import av`` failing: only the box reader can
    answer."""
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "av", None)
        return audio_info(path)


@pytest.mark.parametrize("faststart", [False, True])
@pytest.mark.parametrize("edit", ["priming", "delay", "none"])
@pytest.mark.parametrize(
    "samples", [1000, 1024, 1025, 2047, 12345, 16000, 16001, 48100, 65543]
)
def test_header_is_pyavs_and_the_decoded_length(
    tmp_path, av, monkeypatch, samples, edit, faststart
):
    path = encode(
        av, tmp_path / "a.m4a", samples, edit=edit, faststart=faststart
    )
    frames, rate = header_without_pyav(path, monkeypatch)
    assert (frames, rate) == container_info(path)[:2]
    assert rate == 16000
    assert frames == len(load_audio(path, sample_rate=16000, min_seconds=0))


@pytest.mark.parametrize(
    "rate, channels", [(8000, 1), (22050, 2), (44100, 2), (48000, 1)]
)
@pytest.mark.parametrize("edit", ["priming", "none"])
def test_other_rates_and_stereo(
    tmp_path, av, monkeypatch, rate, channels, edit
):
    """The header is PyAV's; load_audio decodes it, but for the edit list's
    rounding to the movie time scale (within 2 ms, container_info says)."""
    path = encode(av, tmp_path / "a.m4a", rate + 4321, rate, channels, edit)
    frames, file_rate = header_without_pyav(path, monkeypatch)
    assert (frames, file_rate) == container_info(path)[:2]
    assert file_rate == rate
    decoded = load_audio(path, sample_rate=rate, min_seconds=0)
    assert 0 <= frames - len(decoded) <= 0.002 * rate


@pytest.mark.parametrize("fmt, suffix", [("mp4", ".mp4"), ("mov", ".m4a")])
def test_mp4_and_quicktime_muxers(tmp_path, av, monkeypatch, fmt, suffix):
    """mov nests the esds in a ``wave`` box of a version 1 description."""
    path = encode(av, tmp_path / f"a{suffix}", 23456, fmt=fmt)
    header = header_without_pyav(path, monkeypatch)
    assert header == container_info(path)[:2]
    assert header[0] == len(load_audio(path, min_seconds=0))


def box_at(data, kind):
    """Payload offset of the first box of ``kind`` in a faststart file
    (its moov comes before the audio data)."""
    return data.index(kind) + 4


def test_a_media_time_scale_other_than_the_rate(tmp_path, av, monkeypatch):
    """The media header's time scale, its duration, the sample durations and
    the edit's media time all doubled: the same audio, counted in half
    samples, and the same frames, as PyAV counts them."""
    path = encode(av, tmp_path / "a.m4a", 12345, faststart=True)
    before = header_without_pyav(path, monkeypatch)
    data = bytearray(path.read_bytes())
    mdhd = box_at(data, b"mdhd")
    assert data[mdhd] == 0  # version 0: 32-bit time scale and duration
    scale, duration = struct.unpack_from(">II", data, mdhd + 12)
    struct.pack_into(">II", data, mdhd + 12, 2 * scale, 2 * duration)
    stts = box_at(data, b"stts")
    (entries,) = struct.unpack_from(">I", data, stts + 4)
    for i in range(entries):
        at = stts + 12 + 8 * i
        struct.pack_into(
            ">I", data, at, 2 * struct.unpack_from(">I", data, at)[0]
        )
    elst = box_at(data, b"elst")
    time = struct.unpack_from(">i", data, elst + 12)[0]
    struct.pack_into(">i", data, elst + 12, 2 * time)
    path.write_bytes(bytes(data))
    after = header_without_pyav(path, monkeypatch)
    assert after == container_info(path)[:2]
    assert after == before


@pytest.mark.parametrize("change", [-3000, -1, 1, 3000])
def test_the_shorter_of_media_header_and_sample_table(
    tmp_path, av, monkeypatch, change
):
    """Without an edit list, the media header's duration moved off the sum
    of the sample durations: the shorter one counts, as PyAV counts it."""
    path = encode(av, tmp_path / "a.m4a", 23456, edit="none", faststart=True)
    before = header_without_pyav(path, monkeypatch)
    data = bytearray(path.read_bytes())
    mdhd = box_at(data, b"mdhd")
    duration = struct.unpack_from(">I", data, mdhd + 16)[0]
    assert duration == before[0]  # time scale = rate, no edit list
    struct.pack_into(">I", data, mdhd + 16, duration + change)
    path.write_bytes(bytes(data))
    after = header_without_pyav(path, monkeypatch)
    assert after == container_info(path)[:2]
    assert after[0] == min(before[0], before[0] + change)


@pytest.mark.parametrize("case", ["two tracks", "edit rounded to nothing"])
def test_files_it_does_not_read_get_pyavs_answer(
    tmp_path, av, monkeypatch, case
):
    """Left to PyAV: without it, audio_info cannot read them."""
    if case == "two tracks":
        path = encode(av, tmp_path / "a.m4a", 16000, tracks=2)
    else:  # one sample at 44.1 kHz: an edit of 0 ms
        path = encode(av, tmp_path / "a.m4a", 1, rate=44100)
    assert audio_info(path) == container_info(path)[:2]
    with pytest.raises(ImportError, match="pip install av"):
        header_without_pyav(path, monkeypatch)


def test_truncated_audio_data_is_named_without_pyav(tmp_path, av, monkeypatch):
    """moov first, the file cut anywhere in its audio data: the sample table
    runs past the end, which the header alone shows."""
    path = encode(av, tmp_path / "a.m4a", 40000, faststart=True)
    data = path.read_bytes()
    frames = audio_info(path)[0]
    moov = data.index(b"moov") - 4
    data_start = moov + struct.unpack_from(">I", data, moov)[0] + 16
    for cut in np.linspace(data_start, len(data) - 1, 12).astype(int):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError) as error:
            header_without_pyav(path, monkeypatch)
        assert str(error.value) == (
            f"{path}: truncated audio (its samples end at byte {len(data)}, "
            f"the file has {cut} bytes)"
        )
    path.write_bytes(data)
    assert header_without_pyav(path, monkeypatch)[0] == frames


@pytest.mark.parametrize("faststart", [False, True])
def test_cut_headers_and_non_audio_are_named(tmp_path, av, faststart):
    """A cut moov (or none: cut before it), an empty file, text: the box
    reader leaves them to PyAV, whose error names the file."""
    path = encode(av, tmp_path / "a.m4a", 40000, faststart=faststart)
    data = path.read_bytes()
    moov = data.index(b"moov") - 4
    moov_end = moov + struct.unpack_from(">I", data, moov)[0]
    cuts = [0, 20, moov + 8, (moov + moov_end) // 2]
    for content in [data[:cut] for cut in cuts] + [b"not audio\n" * 100]:
        path.write_bytes(content)
        with pytest.raises(ValueError) as error:
            audio_info(path)
        assert str(error.value).startswith(f"{path}: cannot read audio header")


def test_damaged_headers_are_pyavs_or_named(tmp_path, av):
    """Random bytes written over a moov: audio_info either names the file in
    a ValueError or gives PyAV's answer (when PyAV reads one); never another
    exception."""
    path = encode(av, tmp_path / "a.m4a", 30000, faststart=True)
    data = path.read_bytes()
    moov = data.index(b"moov") - 4
    moov_end = moov + struct.unpack_from(">I", data, moov)[0]
    rng = np.random.default_rng(0)
    agreed = 0
    for _ in range(60):
        damaged = bytearray(data)
        at = rng.integers(moov, moov_end, 3)
        damaged[at[0] : at[0] + 1] = rng.integers(0, 256, 1, np.uint8).tobytes()
        for i in at[1:]:
            damaged[i] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        try:
            header = audio_info(path)
        except ValueError as error:
            assert str(error).startswith(f"{path}: ")
            continue
        try:
            expected = container_info(path)[:2]
        except ValueError:
            continue
        assert header == expected
        agreed += 1
    assert agreed > 0
