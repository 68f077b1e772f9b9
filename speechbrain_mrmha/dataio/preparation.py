"""What every corpus preparation shares (VoxCeleb1 today, VoxCeleb2 next):
audio headers of many files read in parallel, the checks that make a file
unusable for training (all bad files in one error), the seeded choice of
the speakers held out for calibration and the reading of their annotation,
a digest of a file listing (a rerun redoes the work when files change) and
atomic CSV writing.

Authors
 * speechbrain-mrmha developers
"""

import csv
import hashlib
import logging
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from speechbrain_mrmha.dataio.annotation import read_annotation
from speechbrain_mrmha.dataio.audio import audio_info
from speechbrain_mrmha.dataio.files import atomic_write
from speechbrain_mrmha.dataio.problems import SHOWN, raise_problems

__all__ = [
    "MIN_CALIBRATION_SPEAKERS",
    "MIN_SPEAKERS_FOR_CALIBRATION",
    "read_headers",
    "audio_problems",
    "check_training_audio",
    "calibration_speaker_count",
    "choose_calibration_speakers",
    "calibration_utterances",
    "listing_digest",
    "write_csv",
]

logger = logging.getLogger(__name__)
# At least this many calibration speakers: their different-speaker trials
# come from only n * (n - 1) / 2 speaker pairs, and with 2 speakers (1 pair)
# the calibration measured on the synthetic corpus was worse than none at
# p_target 0.01 (actDCF 1.76), with 5 close to minDCF (recipe README).
MIN_CALIBRATION_SPEAKERS = 5
# fewer candidate speakers than this: no hold-out (it would take over a
# quarter of the training speakers)
MIN_SPEAKERS_FOR_CALIBRATION = 20
_SERIAL_FILES = 2048  # fewer files than this are read in this process


def _headers_chunk(paths):
    """Header of each file, or the problem (a message naming the file)."""
    headers = []
    for path in paths:
        try:
            headers.append(audio_info(path))
        except ValueError as error:
            headers.append(str(error))
    return headers


def read_headers(paths, num_workers=None):
    """Headers of many audio files (``audio_info``), in parallel; never
    raises for a file.

    Worker processes (fork where available) read chunks of files: about 2x
    faster than one process with warm caches on 2 cores, and more on cold
    ones, where extra workers overlap the disk waits.

    Arguments
    ---------
    paths : list of str
        Audio files.
    num_workers : int, optional
        Worker processes (default: twice the CPU count, at most 16); 1 reads
        serially in this process, as do lists of fewer than 2048 files.

    Returns
    -------
    list
        Per path, in order: ``(frames, sample_rate)``, or a message naming
        the file when its header cannot be read.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> f = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> soundfile.write(f, numpy.zeros(800), 16000, subtype="PCM_16")
    >>> read_headers([f, "/nonexistent.wav"], num_workers=1)
    [(800, 16000), '/nonexistent.wav: cannot read audio header (file does not exist)']
    """
    workers = (
        min(16, 2 * (os.cpu_count() or 1))
        if num_workers is None
        else int(num_workers)
    )
    if workers <= 1 or len(paths) <= _SERIAL_FILES:
        return _headers_chunk(paths)
    step = max(256, len(paths) // (8 * workers) + 1)
    chunks = [paths[i : i + step] for i in range(0, len(paths), step)]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return [h for part in pool.map(_headers_chunk, chunks) for h in part]


def audio_problems(paths, headers, sample_rate, allow_resampling=False):
    """What makes each file unusable for training: an unreadable header, no
    samples, or (unless ``allow_resampling``) another sample rate.

    Arguments
    ---------
    paths : list of str
        The files.
    headers : list
        What ``read_headers`` returned for them.
    sample_rate : int
        The recipe's sample rate.
    allow_resampling : bool
        True accepts other sample rates (training resamples them).

    Returns
    -------
    problems : list of str
        One line per unusable file, naming it.

    Example
    -------
    >>> audio_problems(["a.wav", "b.wav", "c.wav"],
    ...                [(16000, 16000), (0, 16000), (8000, 8000)], 16000)
    ['b.wav: no samples', 'c.wav: 8000 Hz, the recipe trains at 16000 Hz (allow_resampling: True resamples on the fly)']
    """
    problems = []
    for path, header in zip(paths, headers):
        if isinstance(header, str):
            problems.append(header)
        elif header[0] <= 0:
            problems.append(f"{path}: no samples")
        elif header[1] != sample_rate and not allow_resampling:
            problems.append(
                f"{path}: {header[1]} Hz, the recipe trains at {sample_rate} Hz "
                "(allow_resampling: True resamples on the fly)"
            )
    return problems


def check_training_audio(
    paths, sample_rate=16000, allow_resampling=False, num_workers=None
):
    """Raise one ValueError listing every unusable training file (see
    ``audio_problems``); return the headers otherwise.

    Arguments
    ---------
    paths : list of str
        The training files.
    sample_rate : int
        The recipe's sample rate.
    allow_resampling : bool
        True accepts other sample rates.
    num_workers : int, optional
        As ``read_headers``.

    Returns
    -------
    headers : list of (int, int)
        ``(frames, sample_rate)`` per path.

    Example
    -------
    >>> check_training_audio(["/nonexistent.wav"], num_workers=1)
    Traceback (most recent call last):
    ...
    ValueError: 1 of 1 training audio files cannot be used:
      /nonexistent.wav: cannot read audio header (file does not exist)
    """
    headers = read_headers(paths, num_workers)
    raise_problems(
        audio_problems(paths, headers, sample_rate, allow_resampling),
        "training audio files cannot be used",
        total=len(paths),
    )
    return headers


def calibration_speaker_count(n_speakers, fraction):
    """How many of ``n_speakers`` candidate training speakers to hold out
    for calibration: ``round(fraction * n_speakers)``, at least
    ``MIN_CALIBRATION_SPEAKERS`` (5), and none when ``fraction`` is 0 or
    fewer than ``MIN_SPEAKERS_FOR_CALIBRATION`` (20) speakers are available.

    Arguments
    ---------
    n_speakers : int
        Candidate training speakers.
    fraction : float
        The ``calibration_speakers`` option, in [0, 0.5].

    Returns
    -------
    count : int

    Example
    -------
    >>> [calibration_speaker_count(n, 0.02) for n in (19, 48, 1211)]
    [0, 5, 24]
    >>> calibration_speaker_count(1211, 0.0)
    0
    """
    if not 0.0 <= float(fraction) <= 0.5:
        raise ValueError(
            f"calibration_speakers must be a fraction in [0, 0.5], got {fraction}"
        )
    if fraction == 0 or n_speakers < MIN_SPEAKERS_FOR_CALIBRATION:
        return 0
    return max(MIN_CALIBRATION_SPEAKERS, round(float(fraction) * n_speakers))


def choose_calibration_speakers(speakers, fraction, seed):
    """The seeded choice of calibration speakers among ``speakers`` (sorted
    first, so the choice depends on the set only).

    Arguments
    ---------
    speakers : iterable of str
        Candidate training speakers.
    fraction : float
        As ``calibration_speaker_count``.
    seed : int
        The draw's seed.

    Returns
    -------
    chosen : list of str
        Sorted.

    Example
    -------
    >>> names = [f"id{i:05d}" for i in range(40)]
    >>> chosen = choose_calibration_speakers(names, 0.1, seed=1)
    >>> len(chosen), chosen == choose_calibration_speakers(names[::-1], 0.1, 1)
    (5, True)
    """
    speakers = sorted(speakers)
    count = calibration_speaker_count(len(speakers), fraction)
    return sorted(random.Random(f"calibration:{seed}").sample(speakers, count))


def calibration_utterances(
    path,
    speakers,
    data_folder=None,
    train_annotation=None,
    missing_ok=False,
    check_audio=None,
):
    """The utterances of the held-out calibration speakers, checked before
    any training: ID -> (wav, duration, speaker), or None (with a warning)
    when there is nothing to calibrate on.

    Arguments
    ---------
    path : str or None
        The calibration annotation CSV (``ID,duration,wav,spk_id``); None
        means no calibration.
    speakers : list of str
        The training speakers: a calibration speaker among them is an error.
    data_folder : str, optional
        Replaces ``$data_root`` in the CSV's ``wav`` values.
    train_annotation : str, optional
        The training CSV, named in the error.
    missing_ok : bool
        True: a missing CSV means no calibration (a warning), not an error.
    check_audio : callable, optional
        Called with the list of wav files (e.g. ``check_training_audio``).

    Returns
    -------
    utterances : dict or None
        None when the CSV is None, missing (``missing_ok``) or holds fewer
        than 2 speakers.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("a.wav", "b.wav"):
    ...     (folder / name).touch()
    >>> _ = (folder / "c.csv").write_text("ID,duration,wav,spk_id\\n"
    ...     "u1,1.0,$data_root/a.wav,s1\\nu2,2.0,$data_root/b.wav,s2\\n")
    >>> found = calibration_utterances(folder / "c.csv", ["s3"], folder)
    >>> found["u2"] == (f"{folder}/b.wav", 2.0, "s2")
    True
    >>> calibration_utterances(folder / "c.csv", ["s2"], folder, "t.csv")
    Traceback (most recent call last):
    ...
    ValueError: calibration_annotation ...c.csv: speakers also in train_annotation t.csv: s2
    """
    if path is None or (missing_ok and not Path(path).is_file()):
        logger.warning(
            "no calibration: calibration_annotation is %s; the pretrained "
            "folder will have no calibration.json (no calibrated scores)",
            "null" if path is None else f"{path}, which does not exist",
        )
        return None
    lines = Path(path).read_text(encoding="utf-8").split("\n")[1:]
    if not any(line.strip() for line in lines):  # only the header
        rows = {}
    else:
        rows = read_annotation(path, data_folder)
    shared = sorted({row["spk_id"] for row in rows.values()} & set(speakers))
    if shared:
        raise ValueError(
            f"calibration_annotation {path}: speakers also in train_annotation "
            f"{train_annotation}: {', '.join(shared[:SHOWN])}"
        )
    if check_audio is not None:
        check_audio([row["wav"] for row in rows.values()])
    if len({row["spk_id"] for row in rows.values()}) < 2:
        logger.warning(
            "no calibration: calibration_annotation %s has fewer than 2 "
            "speakers; the pretrained folder will have no calibration.json",
            path,
        )
        return None
    return {
        key: (row["wav"], row["duration"], row["spk_id"])
        for key, row in rows.items()
    }


def listing_digest(prefix, files):
    """A digest of the files' names, sizes and modification times: files
    added, removed or rewritten change it.

    Arguments
    ---------
    prefix : str
        Prepended to each name to find the file.
    files : list of str
        The names, in a fixed order.

    Returns
    -------
    digest : str
        40 hex digits.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp() + "/"
    >>> _ = Path(folder, "a.wav").write_bytes(b"1")
    >>> before = listing_digest(folder, ["a.wav"])
    >>> _ = Path(folder, "a.wav").write_bytes(b"12")
    >>> before == listing_digest(folder, ["a.wav"])
    False
    """
    digest = hashlib.sha1()
    for name in files:
        stat = os.stat(prefix + name)
        digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def write_csv(path, header, rows):
    """Write a CSV atomically (see ``atomic_write``).

    Arguments
    ---------
    path : str or Path
        The output file.
    header : list of str
        Column names.
    rows : list of list
        The rows.

    Example
    -------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "a.csv"
    >>> write_csv(out, ["ID", "duration"], [["u1", 1.5]])
    >>> out.read_text().splitlines()
    ['ID,duration', 'u1,1.5']
    """
    with atomic_write(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
