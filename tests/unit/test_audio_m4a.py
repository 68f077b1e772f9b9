"""AAC in ``.m4a`` / ``.mp4`` / ``.aac`` files (VoxCeleb2 dev) read by
speechbrain_mrmha/dataio/audio.py with PyAV: the decoded signal is the
encoded one (length within the documented tolerance, correlation above 0.99
once aligned by the measured encoder delay), stereo and other rates come
back mono at the requested rate, the header length (``container_info`` /
``audio_info``) is the decoded one, crops are slices of the whole file, and
truncated, damaged or non-audio files, and a missing PyAV, give errors that
name the file. The files are written here with PyAV's own AAC encoder."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchaudio

from speechbrain_mrmha.dataio.audio import (
    audio_info,
    audio_seconds,
    container_info,
    load_audio,
)

PRIMING = 1024  # AAC encoder delay of FFmpeg's encoder, in samples


@pytest.fixture
def av():
    return pytest.importorskip("av")


def make_signal(rate, seconds, channels=1, seed=0):
    """(channels, samples) float32: a 440 Hz tone plus low-passed noise,
    different in each channel, so cross-correlation has one sharp peak."""
    rng = np.random.default_rng(seed)
    samples = round(rate * seconds)
    tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)
    kernel = np.hanning(max(3, rate // 2000))
    rows = [
        tone
        + 0.3
        * np.convolve(rng.standard_normal(samples), kernel, "same")
        / kernel.sum()
        * np.sqrt(len(kernel))
        for _ in range(channels)
    ]
    return np.stack(rows).astype(np.float32)


def write_aac(
    av, path, signal, rate, skip_priming=True, faststart=False, fmt="ipod"
):
    """Encode ``signal`` (channels, samples) with PyAV's AAC encoder. With
    ``skip_priming`` the first frame has pts 0, so the encoder's first
    packet is at -1024 and the mp4 muxer writes an edit list that skips the
    priming, as the ffmpeg command does; without, PyAV counts pts from the
    first packet and the priming stays in the presentation."""
    layout = "mono" if signal.shape[0] == 1 else "stereo"
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, options=options) as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(signal), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        if skip_priming:
            frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def delay_and_correlation(decoded, original, max_lag=2 * PRIMING):
    """The lag (decoded[lag + i] ~ original[i]) of the cross-correlation
    peak within +-max_lag, and the correlation coefficient there."""
    size = len(decoded) + len(original)
    spectrum = np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(original, size))
    cross = np.fft.irfft(spectrum, size)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]
    lag = int(lags[np.argmax(cross[lags])])
    a, b = decoded[max(lag, 0) :], original[max(-lag, 0) :]
    common = min(len(a), len(b))
    return lag, float(np.corrcoef(a[:common], b[:common])[0, 1])


@pytest.mark.parametrize("suffix", [".m4a", ".mp4", ".M4A"])
def test_m4a_decodes_to_the_encoded_signal(tmp_path, av, suffix):
    """With the edit list FFmpeg writes, the priming is skipped: no delay,
    the length within one movie-time-scale tick (1 ms, 16 samples)."""
    original = make_signal(16000, 4.0037)[0]
    path = write_aac(av, tmp_path / f"a{suffix}", original[None], 16000)
    decoded = load_audio(path).numpy()
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - len(original)) <= 16
    lag, correlation = delay_and_correlation(decoded, original)
    assert lag == 0
    assert correlation > 0.99


def test_without_an_edit_list_the_priming_is_kept(tmp_path, av):
    """The 1024 priming samples are counted by the header and decoded: the
    audio is 1024 samples longer and delayed by as much (measured)."""
    original = make_signal(16000, 3.0)[0]
    path = write_aac(av, tmp_path / "a.m4a", original[None], 16000, False)
    decoded = load_audio(path).numpy()
    assert container_info(path) == (len(original) + PRIMING, 16000, 1)
    assert len(decoded) == len(original) + PRIMING
    lag, correlation = delay_and_correlation(decoded, original)
    assert lag == PRIMING
    assert correlation > 0.99


def test_adts_aac_is_counted_by_its_packets(tmp_path, av):
    """A raw ADTS file has no length in its header: container_info sums its
    packets, which is the decoded length: priming plus end padding, 1024 to
    2047 samples more than encoded."""
    original = make_signal(16000, 3.0037)[0]
    path = write_aac(av, tmp_path / "a.aac", original[None], 16000, fmt="adts")
    frames, rate, channels = container_info(path)
    decoded = load_audio(path).numpy()
    assert (rate, channels) == (16000, 1) and frames == len(decoded)
    assert PRIMING <= frames - len(original) < 2 * PRIMING
    lag, correlation = delay_and_correlation(decoded, original)
    assert lag == PRIMING and correlation > 0.99


@pytest.mark.parametrize(
    "rate, channels, samples",
    [
        (16000, 1, 12345),
        (16000, 1, 16001),
        (16000, 1, 48100),
        (16000, 1, 64 * 1024),
        (44100, 2, 2 * 44100 + 17),
        (48000, 2, 144017),
    ],
)
def test_header_length_is_the_decoded_length(
    tmp_path, av, rate, channels, samples
):
    """container_info / audio_info read the header (no decoding): the same
    length load_audio decodes at the file's rate (shorter only by the edit
    list's rounding, within 2 ms), and the encoded length within one tick
    of FFmpeg's 1 ms movie time scale."""
    signal = make_signal(rate, samples / rate, channels)
    path = write_aac(av, tmp_path / "a.m4a", signal, rate)
    frames, file_rate, file_channels = container_info(path)
    assert (file_rate, file_channels) == (rate, channels)
    assert audio_info(path) == (frames, rate)
    assert audio_seconds(path, min_seconds=0) == frames / rate
    decoded = load_audio(path, sample_rate=rate, min_seconds=0)
    assert 0 <= frames - len(decoded) <= 0.002 * rate
    if rate == 16000:
        assert len(decoded) == frames
    assert abs(frames - samples) <= rate / 1000


def test_stereo_48k_comes_back_mono_at_the_requested_rate(tmp_path, av):
    """Channels averaged, then resampled as a WAV file would be: close to
    the mean of the encoded channels resampled to 16 kHz."""
    signal = make_signal(48000, 3.0, channels=2, seed=1)
    path = write_aac(av, tmp_path / "stereo.m4a", signal, 48000)
    assert container_info(path)[1:] == (48000, 2)
    decoded = load_audio(path, sample_rate=16000)
    expected = torchaudio.functional.resample(
        torch.from_numpy(signal).mean(dim=0), 48000, 16000
    ).numpy()
    assert decoded.dtype == torch.float32 and decoded.ndim == 1
    assert abs(len(decoded) - len(expected)) <= 16
    lag, correlation = delay_and_correlation(decoded.numpy(), expected)
    assert lag == 0 and correlation > 0.99
    # the same as decoding at the file's rate and resampling after
    native = load_audio(path, sample_rate=48000)
    torch.testing.assert_close(
        decoded, torchaudio.functional.resample(native, 48000, 16000)
    )


@pytest.mark.parametrize("rate", [16000, 48000])
@pytest.mark.parametrize(
    "offset, num_samples", [(0, 800), (1, 799), (4321, 8000), (7, None)]
)
def test_crop_equals_the_slice_of_the_whole_file(
    tmp_path, av, rate, offset, num_samples
):
    """Counted at 16 kHz; exact at the file's own rate, up to float
    rounding when resampling (as for WAV)."""
    signal = make_signal(rate, 2.0, channels=1 if rate == 16000 else 2)
    path = write_aac(av, tmp_path / "a.m4a", signal, rate)
    whole = load_audio(path)
    crop = load_audio(
        path, min_seconds=0, offset=offset, num_samples=num_samples
    )
    end = None if num_samples is None else offset + num_samples
    assert crop.shape == whole[offset:end].shape
    if rate == 16000:
        assert torch.equal(crop, whole[offset:end])
    else:
        torch.testing.assert_close(crop, whole[offset:end], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="past the end of the audio"):
        load_audio(path, min_seconds=0, offset=len(whole), num_samples=10)


def truncate(av, path, cut):
    """Cut an m4a: moov at the end, cut in half (no header left); moov
    first, cut in a packet (decoding fails) or between packets (the stream
    ends early)."""
    with av.open(str(path)) as container:
        positions = [p.pos for p in container.demux(audio=0) if p.size]
    data = path.read_bytes()
    middle = positions[len(positions) // 2]
    end = {"half": len(data) // 2, "in a packet": middle + 3}.get(cut, middle)
    path.write_bytes(data[:end])


def test_crop_decodes_only_up_to_its_end(tmp_path, av):
    """A file cut inside a packet after its second second still gives a
    crop from its first (the stream is decoded only to the crop's end, never
    reaching the damage), while the whole file is refused."""
    path = write_aac(
        av, tmp_path / "a.m4a", make_signal(16000, 4.0), 16000, faststart=True
    )
    whole = load_audio(path)
    truncate(av, path, "in a packet")
    crop = load_audio(path, offset=1000, num_samples=16000)
    assert torch.equal(crop, whole[1000:17000])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_audio(path)


@pytest.mark.parametrize(
    "faststart, cut, problem",
    [
        (False, "half", "Invalid data"),
        (True, "in a packet", "truncated or damaged?"),
        (True, "between packets", "truncated?"),
    ],
)
def test_truncated_m4a_is_refused_naming_the_file(
    tmp_path, av, faststart, cut, problem
):
    path = write_aac(
        av, tmp_path / "a.m4a", make_signal(16000, 4.0), 16000, True, faststart
    )
    truncate(av, path, cut)
    with pytest.raises(ValueError) as error:
        load_audio(path)
    message = str(error.value)
    assert message.startswith(f"{path}: cannot read audio (")
    assert problem in message


def test_damaged_payload_is_refused_naming_the_file(tmp_path, av):
    path = write_aac(
        av, tmp_path / "a.m4a", make_signal(16000, 4.0), 16000, faststart=True
    )
    data = bytearray(path.read_bytes())
    middle = len(data) * 2 // 3
    noise = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)
    data[middle : middle + 2000] = noise.tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as error:
        load_audio(path)
    assert str(error.value).startswith(f"{path}: cannot read audio (")
    assert "damaged" in str(error.value)


def test_non_audio_files_are_refused_naming_the_file(tmp_path, av):
    text = tmp_path / "notes.m4a"
    text.write_text("not audio\n" * 100)
    video = tmp_path / "video.mp4"
    with av.open(str(video), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        image = np.zeros((32, 32, 3), dtype=np.uint8)
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    cases = [
        (lambda: load_audio(text), f"{text}: cannot read audio (Invalid"),
        (lambda: audio_info(text), f"{text}: cannot read audio header ("),
        (lambda: container_info(text), f"{text}: cannot read audio header"),
        (
            lambda: load_audio(video),
            f"{video}: cannot read audio (no audio stream)",
        ),
        (
            lambda: audio_info(video),
            f"{video}: cannot read audio header (no audio stream)",
        ),
    ]
    for call, start in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value).startswith(start), str(error.value)


def test_missing_pyav_says_how_to_install_it(tmp_path, monkeypatch):
    """Needs no PyAV: an m4a read without it is an ImportError naming the
    file and ``pip install av``; WAV reading never needs it."""
    path = tmp_path / "a.m4a"
    path.write_bytes(b"\0" * 100)
    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails
    for call in (load_audio, audio_info, container_info):
        with pytest.raises(ImportError) as error:
            call(path)
        assert str(error.value).startswith(f"{path}: reading .m4a audio")
        assert "pip install av" in str(error.value)


def test_the_package_imports_without_pyav():
    code = (
        "import sys; sys.modules['av'] = None\n"
        "import speechbrain_mrmha.dataio.audio\n"
        "print('imported')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert result.stdout.strip() == "imported", result.stderr
