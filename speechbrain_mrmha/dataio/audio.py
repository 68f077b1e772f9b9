"""Audio in: headers (the one WAV header reader, and an MP4 box reader)
and audio reading (whole files or crops, mono, resampled) with errors that
name the file. WAV, FLAC and the other soundfile formats are read by
soundfile; AAC in ``.m4a`` / ``.mp4`` / ``.aac`` files (VoxCeleb2 dev) by
PyAV, imported only when such a file is read (``pip install av``: its
wheels carry FFmpeg, no system ffmpeg needed). ``load_audio`` also reads
audio in memory (bytes or a binary file object, with its extension, as a
WebDataset shard holds it) through the same readers. Files written
atomically and content digests are ``dataio.files``.

The MP4 box reader gives ``audio_info`` the length of an ``.m4a`` /
``.mp4`` file's AAC track from its ``moov`` boxes (ISO/IEC 14496-12:
``mvhd`` and ``mdhd`` time scales and durations, ``stts`` sample
durations, the ``edts/elst`` edit list; the rate from the ``esds``
AudioSpecificConfig, ISO/IEC 14496-3), combined as FFmpeg's mov demuxer
combines them, so its frames are what ``load_audio`` decodes. It reads a
header about 10 times faster than PyAV opens the file
(bench/vox2_prepare.py), which matters at VoxCeleb2's 1.09 million files.
It leaves to PyAV any file it does not read with certainty: several
tracks, fragments, HE-AAC (SBR or PS signalled in the header), another
codec, a damaged or missing ``moov``. One thing it cannot see: SBR
signalled only inside the audio data (implicit HE-AAC), where FFmpeg may
report twice the header's rate.

Authors
 * speechbrain-mrmha developers
"""

import io
import math
import os
import struct
from fractions import Fraction

import numpy
import soundfile
import torch
import torchaudio

__all__ = [
    "CONTAINER_EXTENSIONS",
    "MIN_SECONDS",
    "audio_info",
    "audio_seconds",
    "container_info",
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
# Files read with PyAV (FFmpeg) instead of soundfile, chosen by extension
CONTAINER_EXTENSIONS = (".aac", ".m4a", ".mp4")
# What load_audio takes as audio in memory (file objects: by their methods)
_IN_MEMORY = (bytes, bytearray, memoryview)
# How far a container's stream may decode short of the length its header
# declares before it is refused as truncated, in seconds: above the rounding
# of an mp4 edit list to its movie time scale (a tick is 1 ms from FFmpeg,
# 1/600 s from QuickTime); a lost packet goes unseen only if it is the last
# and holds less real audio than this
_HEADER_SLACK_SECONDS = 0.002


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
    one WAV header reader of the package. A ``.m4a`` / ``.mp4`` file is
    read by the MP4 box reader (see the module docstring; the same frames
    and rate as ``container_info``, which reads what it leaves, and PyAV is
    then not needed), which also refuses a file whose sample table runs
    past its end (truncated). A ``.aac`` file is read by
    ``container_info`` (PyAV; see there how exact its length is). Other
    formats, RF64, compressed WAV or damaged headers are read by
    ``soundfile.info``.

    Arguments
    ---------
    path : str or Path
        An audio file soundfile or (by extension) PyAV can read.

    Returns
    -------
    frames : int
        Samples per channel.
    sample_rate : int

    Raises
    ------
    ValueError
        When neither reader can read the header, or an ``.m4a`` / ``.mp4``
        file is truncated; the message names the file.
    ImportError
        For a ``.m4a`` / ``.mp4`` / ``.aac`` file PyAV must read when PyAV
        is missing.

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
    if _is_container(path):
        if os.path.splitext(path)[1].lower() in _MP4_EXTENSIONS:
            header = _mp4_header(path)
            if header is not None:
                return header
        return container_info(path)[:2]
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


def _is_container(path):
    """Whether ``path`` is read with PyAV rather than soundfile."""
    return os.path.splitext(path)[1].lower() in CONTAINER_EXTENSIONS


def _import_av(name, extension):
    """PyAV, imported on first use, or an ImportError naming the audio and
    the fix."""
    try:
        import av
    except ImportError:
        raise ImportError(
            f"{name}: reading {extension} audio needs PyAV, which is not "
            "installed: pip install av (or speechbrain-mrmha[m4a])"
        ) from None
    return av


def _reason(error):
    """The message of a PyAV (FFmpeg) error without its errno and file."""
    return getattr(error, "strerror", None) or str(error) or repr(error)


def _open_stream(av, source, name, what):
    """(open container, its first audio stream) of ``source`` (a path or a
    file object), or a ValueError saying ``cannot read <what>`` for
    ``name``."""
    try:
        container = av.open(source, metadata_errors="ignore")
    except Exception as error:  # PyAV raises FFmpegError subclasses, OSError
        raise ValueError(
            f"{name}: cannot read {what} ({_reason(error)})"
        ) from None
    if not container.streams.audio:
        container.close()
        raise ValueError(f"{name}: cannot read {what} (no audio stream)")
    stream = container.streams.audio[0]
    if stream.codec_context is None or not stream.codec_context.sample_rate:
        container.close()  # e.g. an mp4 header cut in its sample description
        raise ValueError(
            f"{name}: cannot read {what} (its audio stream has no codec or "
            "sample rate: damaged or truncated header?)"
        )
    return container, stream


def _header_frames(container, stream):
    """Frames an mp4-family header declares for the stream at its own rate
    (the edit list's presentation duration when there is one), or None for
    other containers, whose FFmpeg duration is only a bit-rate estimate."""
    if "mp4" not in container.format.name.split(",") or not stream.duration:
        return None
    rate = stream.codec_context.sample_rate
    return round(stream.duration * stream.time_base * rate)


# The MP4 box reader (``_mp4_header``): the extensions it reads, the boxes
# it descends into, and the AAC sampling frequencies by index (ISO/IEC
# 14496-3, 1.6.3.4)
_MP4_EXTENSIONS = (".m4a", ".mp4")
_MP4_CONTAINERS = (b"trak", b"mdia", b"minf", b"stbl", b"edts")
_MP4_READ = {  # the boxes it reads in the track, by path
    b"trak/" + path
    for path in (b"edts/elst", b"mdia/mdhd", b"mdia/hdlr")
    + tuple(
        b"mdia/minf/stbl/" + kind
        for kind in (b"stsd", b"stts", b"stsz", b"stsc", b"stco", b"co64")
    )
}
_MP4_HEAD = 4096  # the first read: holds a faststart moov of a short file
_MP4_MAX_MOOV = 1 << 26  # a larger moov is left to PyAV
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050)
_AAC_RATES += (16000, 12000, 11025, 8000, 7350)


class _NotUnderstood(Exception):
    """A file the MP4 box reader leaves to PyAV."""


def _boxes(data, start, end):
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    boxes = []
    while start < end:
        size, kind = struct.unpack_from(">I4s", data, start)
        head = 8
        if size == 1:  # a 64-bit size follows the type
            size, head = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:  # to the end of its parent
            size = end - start
        if size < head or start + size > end:
            raise _NotUnderstood
        boxes.append((kind, start + head, start + size))
        start += size
    return boxes


def _find_moov(fd, size):
    """The payload of the file's first top-level ``moov`` box, found by
    walking the top-level box headers (``mdat`` is skipped by its size)."""
    head, pos = os.pread(fd, _MP4_HEAD, 0), 0
    while pos + 8 <= size:
        header = head[pos : pos + 16]
        if len(header) < 16:
            header = os.pread(fd, 16, pos)
        box, kind = struct.unpack_from(">I4s", header)
        skip = 8
        if box == 1:
            box, skip = struct.unpack_from(">Q", header, 8)[0], 16
        elif box == 0:
            box = size - pos
        if kind == b"moov" and skip <= box <= min(size - pos, _MP4_MAX_MOOV):
            moov = head[pos + skip : pos + box]
            if len(moov) < box - skip:
                moov = os.pread(fd, box - skip, pos + skip)
            return moov
        if box < skip:
            break
        pos += box
    raise _NotUnderstood  # no moov: damaged, cut, or another format


def _descriptor(data, pos, end):
    """(tag, payload start, payload end) of the MPEG-4 descriptor at pos
    (ISO/IEC 14496-1: a tag byte, then a length of 7 bits per byte)."""
    tag, length = data[pos], 0
    for byte in range(pos + 1, pos + 5):
        length = length << 7 | data[byte] & 0x7F
        if data[byte] < 0x80:
            break
    if data[byte] >= 0x80 or byte + 1 + length > end:
        raise _NotUnderstood
    return tag, byte + 1, byte + 1 + length


def _aac_rate(data, start, end):
    """The sample rate FFmpeg gives the AAC stream an ``esds`` box payload
    describes: AAC Main, LC or LTP only (SBR and PS change the rate), its
    AudioSpecificConfig's frequency, unless a sync extension signals SBR."""
    tag, pos, end = _descriptor(data, start + 4, end)  # ES descriptor
    flags = data[pos + 2]  # after the ES ID: dependence, URL, OCR stream
    pos += 3 + 2 * (flags >> 7) + 2 * (flags >> 5 & 1)
    if flags & 0x40:
        pos += 1 + data[pos]
    if tag != 3:
        raise _NotUnderstood
    tag, pos, end = _descriptor(data, pos, end)  # decoder configuration
    if tag != 4 or data[pos] != 0x40:  # MPEG-4 audio
        raise _NotUnderstood
    tag, pos, end = _descriptor(data, pos + 13, end)  # its specific info
    if tag != 5 or end - pos < 2:
        raise _NotUnderstood
    bits, left = int.from_bytes(data[pos:end], "big"), 8 * (end - pos) - 13
    aot, index, channels = (
        bits >> left + 8,
        bits >> left + 4 & 15,
        bits >> left & 15,
    )
    if aot not in (1, 2, 4) or index > 12 or not 1 <= channels <= 7:
        raise _NotUnderstood
    while left > 15:  # FFmpeg looks for a sync extension bit by bit
        if bits >> left - 11 & 0x7FF == 0x2B7:
            if bits >> left - 16 & 31 == 5 and bits >> left - 17 & 1:
                raise _NotUnderstood  # SBR present: a doubled rate
            break
        left -= 1
    return _AAC_RATES[index]


def _mp4_track(moov):
    """Where the boxes the reader uses are in a moov of one track: type
    path (``b"mvhd"``, ``b"trak/mdia/mdhd"``, ...) -> (payload start,
    payload end)."""
    top = _boxes(moov, 0, len(moov))
    kinds = [kind for kind, _, _ in top]
    if kinds.count(b"trak") != 1 or kinds.count(b"mvhd") != 1:
        raise _NotUnderstood  # several tracks
    if b"mvex" in kinds:
        raise _NotUnderstood  # fragmented: lengths in the fragments
    found = {kind: (start, end) for kind, start, end in top}
    todo = [(b"trak/", *found[b"trak"])]
    while todo:
        path, start, end = todo.pop()
        for kind, first, last in _boxes(moov, start, end):
            if kind in _MP4_CONTAINERS:
                todo.append((path + kind + b"/", first, last))
            elif path + kind in found:
                raise _NotUnderstood  # a box it reads, twice
            elif path + kind in _MP4_READ:
                found[path + kind] = (first, last)
    return found


def _u32(data, pos, count=1):
    """``count`` big-endian unsigned 32-bit integers at ``pos``."""
    return struct.unpack_from(f">{count}I", data, pos)


def _mp4_ticks(moov, box):
    """(the track's presentation length in its time scale, time scale, its
    sample count), as FFmpeg's mov demuxer takes them: the smaller of the
    media header's duration and the samples' durations, and of that and
    the edit list's total (each edit rescaled to the media time scale,
    rounded half up, as ``av_rescale``)."""
    mdhd = box[b"trak/mdia/mdhd"][0]
    if moov[mdhd] == 1:
        scale, declared = struct.unpack_from(">IQ", moov, mdhd + 20)
    else:
        scale, declared = _u32(moov, mdhd + 12, 2)
    stts = box[b"trak/mdia/minf/stbl/stts"][0]
    table = _u32(moov, stts + 8, 2 * _u32(moov, stts + 4)[0])
    counts, deltas = table[::2], table[1::2]
    samples, ticks = sum(counts), sum(map(int.__mul__, counts, deltas))
    if not scale or not samples or max(deltas) >= 1 << 31:
        raise _NotUnderstood  # FFmpeg reads such deltas as negative
    if declared in (0, (1 << 32) - 1, (1 << 64) - 1):
        raise _NotUnderstood  # no duration in the media header
    if len(counts) > 1 and counts[-1] == 1 and samples > 101:
        if deltas[-1] // 10 > (ticks - deltas[-1]) // (samples - 1):
            raise _NotUnderstood  # FFmpeg would shorten that last sample
    ticks = min(declared, ticks)
    if b"trak/edts/elst" in box:
        elst = box[b"trak/edts/elst"][0]
        wide, count = moov[elst], _u32(moov, elst + 4)[0]
        form, step = (">QqI", 20) if wide else (">IiI", 12)
        edits = [
            struct.unpack_from(form, moov, elst + 8 + step * i)
            for i in range(count)
        ]
        mvhd = box[b"mvhd"][0]
        movie = _u32(moov, mvhd + 12 + 8 * (moov[mvhd] == 1))[0]
        if edits and (
            not movie
            or all(time == -1 for _, time, _ in edits)
            or any(
                time < -1
                or length >= 1 << 62
                or (time >= 0 and rate != 1 << 16)
                for length, time, rate in edits
            )
        ):
            raise _NotUnderstood
        if edits:
            ticks = min(
                ticks,
                sum(
                    (length * scale + movie // 2) // movie
                    for length, _, _ in edits
                ),
            )
    if ticks <= 0:
        raise _NotUnderstood
    return ticks, scale, samples


def _mp4_data_end(moov, box, samples):
    """The byte after the last sample of the track's last chunk."""
    stbl = b"trak/mdia/minf/stbl/"
    fixed, count = _u32(moov, box[stbl + b"stsz"][0] + 4, 2)
    stsc = box[stbl + b"stsc"][0]
    runs = _u32(moov, stsc + 4)[0]
    table = _u32(moov, stsc + 8, 3 * runs)
    if stbl + b"co64" in box:
        co64 = box[stbl + b"co64"][0]
        chunks = _u32(moov, co64 + 4)[0]
        offset = struct.unpack_from(">Q", moov, co64 + 8 * chunks)[0]
    else:
        stco = box[stbl + b"stco"][0]
        chunks = _u32(moov, stco + 4)[0]
        offset = _u32(moov, stco + 4 * chunks + 4)[0]
    firsts, per_chunk = table[::3] + (chunks + 1,), table[1::3]
    counted = sum(
        (after - first) * n
        for first, after, n in zip(firsts, firsts[1:], per_chunk)
    )
    if count != samples or counted != samples or not runs:
        raise _NotUnderstood  # tables that do not agree
    last = per_chunk[-1]
    if fixed:
        return offset + fixed * last
    return offset + sum(
        _u32(moov, box[stbl + b"stsz"][0] + 12 + 4 * (count - last), last)
    )


def _mp4_header(path):
    """(frames, sample rate) of the AAC track of an MP4 file from its
    boxes, the length FFmpeg gives it (so ``load_audio`` decodes), or None
    for a file this reader does not understand. Raises a ValueError naming
    the file when the samples its tables place run past its end."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        moov = _find_moov(fd, size)
        box = _mp4_track(moov)
        hdlr = box[b"trak/mdia/hdlr"][0]
        stsd = box[b"trak/mdia/minf/stbl/stsd"][0]
        entry = stsd + 8  # the one sample description
        version = struct.unpack_from(">H", moov, entry + 16)[0]
        if (
            moov[hdlr + 8 : hdlr + 12] != b"soun"
            or _u32(moov, stsd + 4)[0] != 1
            or moov[entry + 4 : entry + 8] != b"mp4a"
            or version > 1
        ):
            raise _NotUnderstood
        children = _boxes(
            moov, entry + 36 + 16 * version, entry + _u32(moov, entry)[0]
        )
        children += [  # QuickTime nests the esds in a wave box
            box
            for kind, first, last in children
            if kind == b"wave"
            for box in _boxes(moov, first, last)
        ]
        (esds,) = [(s, e) for kind, s, e in children if kind == b"esds"]
        rate = _aac_rate(moov, *esds)
        ticks, scale, samples = _mp4_ticks(moov, box)
        end = _mp4_data_end(moov, box, samples)
    except (_NotUnderstood, struct.error, IndexError, KeyError, ValueError):
        return None
    finally:
        os.close(fd)
    if end > size:
        raise ValueError(
            f"{path}: truncated audio (its samples end at byte {end}, the "
            f"file has {size} bytes)"
        )
    return round(Fraction(ticks * rate, scale)), rate


def container_info(path):
    """Frames, sample rate and channels of the first audio stream of a file
    PyAV opens (AAC in ``.m4a`` / ``.mp4`` / ``.aac``), without decoding it.

    An mp4-family file (``.m4a``, ``.mp4``) gives them from its ``moov``
    header: the frames are the stream's presentation duration (from its
    edit list, as FFmpeg writes one, else from its sample table). A raw
    ADTS ``.aac`` has no length in its header: it is demuxed (read, not
    decoded) and its packet durations summed.

    How exact: the frames are the length ``load_audio`` returns at the
    file's own rate (it cuts the encoder's end padding at this length, and
    refuses a stream that decodes more than 2 ms short of it as truncated;
    a shortfall within that, possible only from the edit list's rounding to
    the movie time scale, is returned as decoded). The header is not
    checked against the data: a truncated file is found by ``load_audio``.
    Against the signal that was encoded, AAC adds 1024 priming samples (the
    encoder delay) and pads the end to a whole 1024-sample frame:

    * mp4 with an edit list (FFmpeg, iTunes): FFmpeg skips the priming and
      the length is the encoded one rounded to the movie time scale, within
      one tick of it (1 ms from FFmpeg: 16 samples at 16 kHz, measured in
      tests/unit/test_audio_m4a.py);
    * mp4 without an edit list: the priming is counted and decoded, so the
      audio is 1024 samples (64 ms at 16 kHz) longer and delayed by as
      much;
    * ADTS ``.aac``: priming and end padding are counted and decoded, 1024
      to 2047 samples longer.

    Arguments
    ---------
    path : str or Path
        A file PyAV can open (``pip install av``).

    Returns
    -------
    frames : int
        Samples per channel at ``sample_rate``.
    sample_rate : int
    channels : int

    Raises
    ------
    ValueError
        When the file does not exist, PyAV cannot open it, it has no audio
        stream or no length; the message names the file.
    ImportError
        When PyAV is missing.

    Example
    -------
    The error path (needs no PyAV); tests/unit/test_audio_m4a.py writes and
    reads real ``.m4a`` files.

    >>> container_info("/nonexistent.m4a")
    Traceback (most recent call last):
    ...
    ValueError: /nonexistent.m4a: cannot read audio header (file does not exist)
    """
    path = str(path)
    what = "audio header"
    if not os.path.isfile(path):
        raise ValueError(f"{path}: cannot read {what} (file does not exist)")
    av = _import_av(path, os.path.splitext(path)[1])
    container, stream = _open_stream(av, path, path, what)
    with container:
        rate = stream.codec_context.sample_rate
        channels = len(stream.codec_context.layout.channels)
        frames = _header_frames(container, stream)
        if frames is None:
            try:
                ticks = sum(p.duration or 0 for p in container.demux(stream))
            except Exception as error:  # FFmpegError subclasses
                raise ValueError(
                    f"{path}: cannot read {what} ({_reason(error)})"
                ) from None
            if ticks == 0:
                raise ValueError(
                    f"{path}: cannot read {what} (no length in the header or "
                    "the packets)"
                )
            frames = round(ticks * stream.time_base * rate)
    return frames, rate, channels


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


def _check_offset(path, offset, frames, rate, sample_rate):
    """Refuse a crop that starts past the end of the audio."""
    available = -(-frames * sample_rate // rate)  # samples at sample_rate
    if offset and offset >= available:
        raise ValueError(
            f"{path}: crop offset {offset} is past the end of the audio "
            f"({available} samples at {sample_rate} Hz)"
        )


def _read_soundfile(source, name, sample_rate, offset, num_samples):
    """(native frames (frames, channels) float32, native rate, index of
    ``offset`` in their resampled version) for a crop of audio soundfile
    reads (``source``: a path or a file object); only the frames
    ``_native_span`` asks for are read."""
    try:
        audio = soundfile.SoundFile(source)
    except Exception as error:  # soundfile raises several types
        raise ValueError(f"{name}: cannot read audio ({error})") from None
    with audio:
        rate, frames = audio.samplerate, audio.frames
        _check_offset(name, offset, frames, rate, sample_rate)
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
            raise ValueError(f"{name}: cannot read audio ({error})") from None
    return data, rate, skip


def _decode(av, name, container, stream, stop, frames):
    """The stream decoded from its start to native frame ``stop`` or, for
    None, to its end, as float32 (channels, frames); a decoding error is a
    ValueError naming the audio and where it stopped (of ``frames``)."""
    to_float = av.AudioResampler(format="fltp")  # passes AAC's fltp through
    channels = len(stream.codec_context.layout.channels)
    chunks, decoded = [[] for _ in range(channels)], 0

    def keep(output):  # the planes' floats, without to_ndarray's vstack
        nonlocal decoded
        for frame in output:
            if len(frame.planes) != channels:
                raise ValueError(
                    f"channels change from {channels} to {len(frame.planes)}"
                )
            for chunk, plane in zip(chunks, frame.planes):
                chunk.append(
                    numpy.frombuffer(plane, numpy.float32, frame.samples)
                )
            decoded += frame.samples

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():  # the last, empty packet flushes
                keep(to_float.resample(frame))
            if stop is not None and decoded >= stop:
                break
        else:
            keep(to_float.resample(None))
        if decoded == 0:
            return numpy.zeros((channels, 0), dtype=numpy.float32)
        return numpy.stack([numpy.concatenate(chunk) for chunk in chunks])
    except Exception as error:  # FFmpegError subclasses, numpy errors
        declared = "" if frames is None else f" of the {frames} declared"
        raise ValueError(
            f"{name}: cannot read audio ({_reason(error)} after {decoded} "
            f"frames{declared}: truncated or damaged?)"
        ) from None


def _read_container(av, source, name, sample_rate, offset, num_samples):
    """``_read_soundfile`` for audio PyAV reads. AAC has no sample-exact
    seek, so the stream is decoded from its start to the crop's end, and
    cut at the length its header declares (``container_info``)."""
    container, stream = _open_stream(av, source, name, "audio")
    with container:
        rate = stream.codec_context.sample_rate
        frames, stop = _header_frames(container, stream), None
        if frames is not None:
            _check_offset(name, offset, frames, rate, sample_rate)
            start, stop, skip = _native_span(
                offset, num_samples, rate, sample_rate, frames
            )
        data = _decode(av, name, container, stream, stop, frames)
    if frames is None:  # no length in the header: all of it was decoded
        frames = data.shape[1]
        _check_offset(name, offset, frames, rate, sample_rate)
        start, stop, skip = _native_span(
            offset, num_samples, rate, sample_rate, frames
        )
    elif data.shape[1] < stop - _HEADER_SLACK_SECONDS * rate:
        raise ValueError(
            f"{name}: cannot read audio (the stream ends after "
            f"{data.shape[1]} of the {frames} frames its header declares: "
            "truncated?)"
        )
    return data[:, start:stop].T, rate, skip


def _audio_source(source, extension, name):
    """(what the readers open: a path string or a file object at its start,
    the name messages give, the extension with its dot) of ``load_audio``'s
    arguments, or an error when they do not say what to read."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not isinstance(path, str):  # a bytes path is in-memory audio's
            raise TypeError(f"{path!r}: give an audio path as str or Path")
        name = path if name is None else str(name)
        if not os.path.isfile(path):
            raise ValueError(f"{name}: cannot read audio (file does not exist)")
        if extension is None:
            extension = os.path.splitext(path)[1]
        return path, name, "." + extension.lstrip(".")
    if isinstance(source, _IN_MEMORY):
        stream = io.BytesIO(source)  # shares the bytes, copies nothing
    elif callable(getattr(source, "read", None)) and callable(
        getattr(source, "seek", None)
    ):
        stream = source
        stream.seek(0)
    else:
        raise TypeError(
            f"{name or 'load_audio'}: audio must be a path, bytes or a "
            f"seekable binary file object, got {type(source).__name__}"
        )
    if not extension:
        raise ValueError(
            f"{name or 'audio in memory'}: audio in memory needs its "
            "extension (e.g. extension='wav', 'flac' or 'm4a') to be read"
        )
    extension = "." + extension.lstrip(".")
    name = f"<{extension[1:]} audio in memory>" if name is None else str(name)
    return stream, name, extension


def load_audio(
    source,
    sample_rate=16000,
    min_seconds=MIN_SECONDS,
    offset=0,
    num_samples=None,
    extension=None,
    name=None,
):
    """Read audio, or a crop of it, as mono float32 at ``sample_rate``:
    a file, or a file's bytes in memory (as a WebDataset shard holds them)
    with its ``extension``, through the same readers.

    Channels are averaged, other sample rates are resampled; audio with a
    NaN or infinite sample is refused (a ValueError naming the audio, never
    a NaN embedding or score downstream). A crop reads
    only the frames it needs (plus a little context when resampling) and
    equals the same slice of the whole file's result (exactly at the file's
    own rate, up to float rounding when resampling). Bytes give exactly
    what the file of those bytes gives.

    ``.m4a`` / ``.mp4`` / ``.aac`` audio (by extension) is decoded with
    PyAV (``pip install av``, imported only then): from its start to the
    crop's end, as AAC has no sample-exact seek, and to the length its
    header declares (``container_info`` says how exact that is); a stream
    that ends early is refused as truncated. Other extensions are read by
    soundfile, which finds the format in the data itself.

    Arguments
    ---------
    source : str, Path, bytes or binary file object
        An audio file soundfile can read, or (by extension) PyAV; or such a
        file's content: bytes (``bytearray``, ``memoryview``) or a seekable
        binary file object (``io.BytesIO``, an open file), read from its
        start.
    sample_rate : int
        The model's sample rate.
    min_seconds : float
        Shorter results are refused (too few frames for a ResNet embedding).
    offset : int
        First sample of the crop, counted at ``sample_rate``.
    num_samples : int or None
        Samples of the crop at ``sample_rate`` (fewer when the audio ends
        first); None reads to the end.
    extension : str, optional
        The format as a file extension (``"m4a"`` or ``".m4a"``): it picks
        the reader. Needed for audio in memory; a file's own by default.
    name : str, optional
        What error messages call the audio (default: the path, or
        ``<m4a audio in memory>``), e.g. a shard and an utterance.

    Returns
    -------
    signal : torch.Tensor
        (samples,) float32.

    Raises
    ------
    ValueError
        For missing, unreadable, truncated, non-finite or too short audio,
        a crop outside it, or audio in memory without an extension; the
        message starts with ``name``.
    ImportError
        For ``.m4a`` / ``.mp4`` / ``.aac`` audio when PyAV is missing.
    TypeError
        When ``source`` is none of the above.

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
    >>> torch.equal(load_audio(wav.read_bytes(), extension="wav"), whole)
    True
    >>> load_audio("/nonexistent.wav")
    Traceback (most recent call last):
    ...
    ValueError: /nonexistent.wav: cannot read audio (file does not exist)
    >>> load_audio(b"RIFF", extension="wav", name="shard-1.tar: utterance u1")
    Traceback (most recent call last):
    ...
    ValueError: shard-1.tar: utterance u1: cannot read audio (...)
    """
    if offset < 0 or (num_samples is not None and num_samples < 1):
        where = source if isinstance(source, (str, os.PathLike)) else None
        raise ValueError(
            f"{name or where or 'load_audio'}: a crop needs offset >= 0 and "
            f"num_samples >= 1, got offset={offset}, num_samples={num_samples}"
        )
    opened, name, extension = _audio_source(source, extension, name)
    if extension.lower() in CONTAINER_EXTENSIONS:
        av = _import_av(name, extension)
        data, rate, skip = _read_container(
            av, opened, name, sample_rate, offset, num_samples
        )
    else:
        data, rate, skip = _read_soundfile(
            opened, name, sample_rate, offset, num_samples
        )
    finite = numpy.isfinite(data)
    if not finite.all():  # only float files can hold NaN / inf
        raise ValueError(
            f"{name}: audio has non-finite samples "
            f"({data.size - int(finite.sum())} NaN or inf values)"
        )
    signal = torch.from_numpy(data)
    signal = signal[:, 0] if data.shape[1] == 1 else signal.mean(dim=1)
    if rate != sample_rate:
        signal = torchaudio.functional.resample(signal, rate, sample_rate)
    signal = (
        signal[skip:]
        if num_samples is None
        else signal[skip : skip + num_samples]
    )
    _check_length(name, signal.shape[0], sample_rate, min_seconds)
    return signal
