"""Audio in: headers (the one WAV header reader) and audio reading (whole
files or crops, mono, resampled) with errors that name the file. Files
written atomically and content digests are ``dataio.files``.

Authors
 * speechbrain-mrmha developers
"""

import math
import os
import struct

import numpy
import soundfile
import torch
import torchaudio

__all__ = [
    "MIN_SECONDS",
    "audio_info",
    "audio_seconds",
    "load_audio",
]

MIN_SECONDS = 0.5  # shortest audio load_audio accepts by default
# Extra native-rate context read around a crop before resampling, in units of
# the longer sample period: torchaudio's default sinc filter reaches 6 zero
# crossings of the lower rate (lowpass_filter_width=6, rolloff 0.99).
_RESAMPLE_ZEROS = 8
# WAV format tags whose frames are data bytes // block align: PCM, float,
# A-law, mu-law, extensible
_BLOCK_ALIGNED = {1, 3, 6, 7, 0xFFFE}


def _riff_header(fd, size):
    """(frames, sample_rate) from the RIFF ``fmt `` and ``data`` chunks of
    an open WAV file, or None when the header is not one this parser reads
    (not RIFF/WAVE, RF64, a compressed format, a damaged chunk list)."""
    head = os.read(fd, 512)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= size:
        if pos + 24 <= len(head):
            chunk = head[pos : pos + 24]
        else:
            chunk = os.pread(fd, 24, pos)
        if len(chunk) < 8:
            return None
        cid, csize = chunk[:4], struct.unpack_from("<I", chunk, 4)[0]
        if cid == b"fmt " and csize >= 16 and len(chunk) >= 24:
            # format tag, channels, rate, bytes per second, block align
            fmt = struct.unpack_from("<HHIIH", chunk, 8)
        elif cid == b"data":
            tag, _, rate, _, align = fmt or (None, 0, 0, 0, 0)
            if tag not in _BLOCK_ALIGNED or rate == 0 or align == 0:
                return None
            available = size - pos - 8
            data = (
                available if csize in (0, 0xFFFFFFFF) else min(csize, available)
            )
            return data // align, rate
        pos += 8 + csize + (csize & 1)
    return None


def audio_info(path):
    """Frames and sample rate of an audio file, from its header only.

    A WAV file is read by its RIFF ``fmt `` and ``data`` chunks (PCM of any
    width, float, A/mu-law: frames = data bytes // block align; a data size
    beyond the end of the file is clamped to it), never decoding audio: the
    one WAV header reader of the package. Other formats, RF64, compressed
    WAV or damaged headers are read by ``soundfile.info``.

    Arguments
    ---------
    path : str or Path
        An audio file soundfile can read.

    Returns
    -------
    frames : int
        Samples per channel.
    sample_rate : int

    Raises
    ------
    ValueError
        When neither reader can read the header; the message names the file.

    Example
    -------
    >>> import tempfile
    >>> from pathlib import Path
    >>> wav = Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(wav, torch.zeros(8000, 2).numpy(), 8000)
    >>> audio_info(wav)
    (8000, 8000)
    >>> audio_info("/nonexistent.wav")
    Traceback (most recent call last):
    ...
    ValueError: /nonexistent.wav: cannot read audio header (file does not exist)
    """
    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"{path}: cannot read audio header (file does not exist)"
        )
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        raise ValueError(
            f"{path}: cannot read audio header ({error.strerror})"
        ) from None
    try:
        header = _riff_header(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    if header is not None:
        return header
    try:
        info = soundfile.info(path)
    except Exception as error:  # soundfile raises several types
        raise ValueError(
            f"{path}: cannot read audio header ({error})"
        ) from None
    return int(info.frames), int(info.samplerate)


def audio_seconds(path, sample_rate=16000, min_seconds=MIN_SECONDS):
    """Duration of an audio file from its header, refusing a file that
    ``load_audio`` would refuse as too short (the same test and message), so
    a caller can list every bad file before any audio is decoded.

    Arguments
    ---------
    path : str or Path
        An audio file soundfile can read.
    sample_rate : int
        The rate ``load_audio`` will resample to.
    min_seconds : float
        Shorter files are refused.

    Returns
    -------
    seconds : float

    Example
    -------
    >>> import tempfile
    >>> from pathlib import Path
    >>> wav = Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(wav, torch.zeros(800).numpy(), 16000)
    >>> audio_seconds(wav, min_seconds=0)
    0.05
    >>> audio_seconds(wav)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: /.../a.wav: audio too short (0.05 s, need at least 0.5 s)
    """
    frames, rate = audio_info(path)
    # the length torchaudio's resampler gives: ceil(frames * new / old)
    _check_length(
        path, -(-frames * sample_rate // rate), sample_rate, min_seconds
    )
    return frames / rate


def _check_length(path, samples, sample_rate, min_seconds):
    """The one "too short" test of ``load_audio`` and ``audio_seconds``."""
    if samples < min_seconds * sample_rate:
        raise ValueError(
            f"{path}: audio too short ({samples / sample_rate:.2f} s, "
            f"need at least {min_seconds} s)"
        )


def _native_span(offset, num_samples, rate, sample_rate, frames):
    """The native-rate frames [start, stop) to read for target samples
    [offset, offset + num_samples), and the index of ``offset`` in the
    resampled read. With resampling, the read starts on a sample that falls
    on the target grid and carries enough context for the sinc filter, so the
    crop equals the same slice of the resampled whole file."""
    end = None if num_samples is None else offset + num_samples
    if rate == sample_rate:
        return offset, frames if end is None else min(end, frames), 0
    common = math.gcd(rate, sample_rate)
    up, down = (
        rate // common,
        sample_rate // common,
    )  # one period: up native, down target
    margin = up + math.ceil(_RESAMPLE_ZEROS * up / min(up, down))
    start = max(0, (offset * up // down - margin) // up * up)
    stop = frames if end is None else min(frames, -(-end * up // down) + margin)
    return start, stop, offset - start // up * down


def load_audio(
    path, sample_rate=16000, min_seconds=MIN_SECONDS, offset=0, num_samples=None
):
    """Read a file, or a crop of it, as mono float32 at ``sample_rate``.

    Channels are averaged, other sample rates are resampled; audio with a
    NaN or infinite sample is refused (a ValueError naming the file, never
    a NaN embedding or score downstream). A crop reads
    only the frames it needs (plus a little context when resampling) and
    equals the same slice of the whole file's result (exactly at the file's
    own rate, up to float rounding when resampling).

    Arguments
    ---------
    path : str or Path
        An audio file soundfile can read.
    sample_rate : int
        The model's sample rate.
    min_seconds : float
        Shorter results are refused (too few frames for a ResNet embedding).
    offset : int
        First sample of the crop, counted at ``sample_rate``.
    num_samples : int or None
        Samples of the crop at ``sample_rate`` (fewer when the file ends
        first); None reads to the end.

    Returns
    -------
    signal : torch.Tensor
        (samples,) float32.

    Example
    -------
    >>> import tempfile
    >>> from pathlib import Path
    >>> wav = Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(wav, torch.rand(16000).numpy() - 0.5, 16000, subtype="FLOAT")
    >>> whole = load_audio(wav)
    >>> crop = load_audio(wav, min_seconds=0, offset=100, num_samples=400)
    >>> crop.shape, torch.equal(crop, whole[100:500])
    (torch.Size([400]), True)
    >>> load_audio("/nonexistent.wav")
    Traceback (most recent call last):
    ...
    ValueError: /nonexistent.wav: cannot read audio (file does not exist)
    """
    path = str(path)
    if offset < 0 or (num_samples is not None and num_samples < 1):
        raise ValueError(
            f"{path}: a crop needs offset >= 0 and num_samples >= 1, got "
            f"offset={offset}, num_samples={num_samples}"
        )
    if not os.path.isfile(path):
        raise ValueError(f"{path}: cannot read audio (file does not exist)")
    try:
        audio = soundfile.SoundFile(path)
    except Exception as error:  # soundfile raises several types
        raise ValueError(f"{path}: cannot read audio ({error})") from None
    with audio:
        rate, frames = audio.samplerate, audio.frames
        available = -(-frames * sample_rate // rate)  # samples at sample_rate
        if offset and offset >= available:
            raise ValueError(
                f"{path}: crop offset {offset} is past the end of the audio "
                f"({available} samples at {sample_rate} Hz)"
            )
        start, stop, skip = _native_span(
            offset, num_samples, rate, sample_rate, frames
        )
        try:
            audio.seek(start)
            data = audio.read(
                -1 if num_samples is None else stop - start,
                dtype="float32",
                always_2d=True,
            )
        except Exception as error:
            raise ValueError(f"{path}: cannot read audio ({error})") from None
    finite = numpy.isfinite(data)
    if not finite.all():  # only float files can hold NaN / inf
        raise ValueError(
            f"{path}: audio has non-finite samples "
            f"({data.size - int(finite.sum())} NaN or inf values)"
        )
    signal = torch.from_numpy(data).mean(dim=1)
    if rate != sample_rate:
        signal = torchaudio.functional.resample(signal, rate, sample_rate)
    signal = (
        signal[skip:]
        if num_samples is None
        else signal[skip : skip + num_samples]
    )
    _check_length(path, signal.shape[0], sample_rate, min_seconds)
    return signal
