"""Data preparation for VoxCeleb1 speaker-embedding training and verification.

Reads the official layout (what vox1_dev_wav.zip and vox1_test_wav.zip unpack
to, both into the same ``wav`` folder)::

    data_folder/wav/idNNNNN/<video>/<nnnnn>.wav

Training speakers are all speakers on disk that never appear in the trial
list (the 1,211 VoxCeleb1 dev speakers for veri_test2.txt). A seeded
``calibration_speakers`` fraction of them (at least
``MIN_CALIBRATION_SPEAKERS``, when at least ``MIN_SPEAKERS_FOR_CALIBRATION``
are available) is held out whole for score
calibration, never trained on; of the others, a seeded
``valid_utterances_per_speaker`` utterances per speaker are held out for
validation. Written into ``save_folder`` (each file atomically):

* ``train.csv``, ``valid.csv``: ``ID,duration,wav,spk_id`` (SpeechBrain CSV;
  the training script derives its speaker labels from train.csv)
* ``calibration.csv``: the same columns, every utterance of the calibration
  speakers (only the header when none are held out)
* a copy of the trial list and ``trials_files.csv`` (``ID,duration,wav``,
  every file of the trial list once)
* ``prepare_options.json``: written last; a rerun with the same options
  (and the same trial-list content) skips the work.

Durations come from the WAV headers (RIFF ``fmt `` and ``data`` chunks, never
decoding audio), read by a pool of worker processes; non-PCM or unusual files
fall back to ``soundfile.info``.

Run alone as::

    python voxceleb1_prepare.py --data_folder DIR --save_folder DIR \\
        --verification_file DIR/meta/veri_test2.txt

Authors
 * speechbrain_mrmha contributors
"""

import argparse
import csv
import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import random
import shutil
import struct
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import NamedTuple

from speechbrain_mrmha.dataio.audio import (
    atomic_write,
    audio_info,
    write_text_atomic,
)
from speechbrain_mrmha.dataio.trials import read_trials, trial_files

logger = logging.getLogger(__name__)
OPTIONS_FILE = "prepare_options.json"
SHOWN = 20  # problems listed in one error
_VERSION = 4  # 4: calibration speakers held out (calibration.csv)
# At least this many calibration speakers: their different-speaker trials
# come from only n * (n - 1) / 2 speaker pairs, and with 2 speakers (1 pair)
# the calibration measured on the synthetic corpus was worse than none at
# p_target 0.01 (actDCF 1.76), with 5 close to minDCF (README).
MIN_CALIBRATION_SPEAKERS = 5
# fewer candidate speakers than this: no hold-out (it would take over a
# quarter of the training speakers)
MIN_SPEAKERS_FOR_CALIBRATION = 20
_BLOCK_ALIGNED = {1, 3, 6, 7, 0xFFFE}  # PCM, float, A-law, mu-law, extensible


class PrepareResult(NamedTuple):
    """What :func:`prepare_voxceleb1` wrote (or found up to date).

    Arguments
    ---------
    train_csv, valid_csv, verification_file, trials_csv, calibration_csv : str
        Paths of the outputs in ``save_folder``.
    skipped : bool
        True when the outputs were up to date and nothing was done.
    """

    train_csv: str
    valid_csv: str
    verification_file: str
    trials_csv: str
    calibration_csv: str
    skipped: bool


def read_wav_header(path):
    """Frames and sample rate of a WAV file, from its RIFF header only.

    Finds the ``fmt `` and ``data`` chunks; frames = data bytes // block
    align (PCM of any width, float, A/mu-law; a data size beyond the end of
    the file is clamped to it). Other formats, RF64 or damaged headers fall
    back to ``soundfile.info``.

    Arguments
    ---------
    path : str
        The WAV file.

    Returns
    -------
    frames : int
        Samples per channel.
    sample_rate : int

    Raises
    ------
    ValueError
        If neither the header nor soundfile can read the file (names it).

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> f = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> soundfile.write(f, numpy.zeros(24000), 16000, subtype="PCM_16")
    >>> read_wav_header(f)
    (24000, 16000)
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        reason = (
            "file does not exist" if not os.path.exists(path) else e.strerror
        )
        raise ValueError(
            f"{path}: cannot read audio header ({reason})"
        ) from None
    try:
        head, size = os.read(fd, 512), os.fstat(fd).st_size
        if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            pos, fmt = 12, None
            while pos + 8 <= size:
                chunk = (
                    head[pos : pos + 24]
                    if pos + 24 <= len(head)
                    else os.pread(fd, 24, pos)
                )
                if len(chunk) < 8:
                    break
                cid, csize = chunk[:4], struct.unpack_from("<I", chunk, 4)[0]
                if cid == b"fmt " and csize >= 16 and len(chunk) >= 24:
                    fmt = struct.unpack_from(
                        "<HHIIH", chunk, 8
                    )  # tag, ch, rate, bytes/s, align
                elif cid == b"data":
                    if (
                        fmt is None
                        or fmt[0] not in _BLOCK_ALIGNED
                        or fmt[2] == 0
                        or fmt[4] == 0
                    ):
                        break
                    available = size - pos - 8
                    data = (
                        available
                        if csize in (0, 0xFFFFFFFF)
                        else min(csize, available)
                    )
                    return data // fmt[4], fmt[2]
                pos += 8 + csize + (csize & 1)
    finally:
        os.close(fd)
    return audio_info(path)  # the plugin's reader; names the file


def read_wav_duration(path):
    """Duration in seconds of a WAV file, from its header (see
    ``read_wav_header``).

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> f = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> soundfile.write(f, numpy.zeros(8000), 16000, subtype="PCM_16")
    >>> read_wav_duration(f)
    0.5
    """
    frames, rate = read_wav_header(path)
    return frames / rate


def _headers_chunk(paths):
    """Header of each file, or the problem (a message naming the file)."""
    headers = []
    for path in paths:
        try:
            headers.append(read_wav_header(path))
        except ValueError as error:
            headers.append(str(error))
    return headers


def read_headers(paths, num_workers=None):
    """Headers of many WAV files, in parallel; never raises for a file.

    Worker processes (fork where available) read chunks of files: about 2x
    faster than one process with warm caches on 2 cores, and more on cold
    ones, where extra workers overlap the disk waits. If this module cannot
    be pickled by name (e.g. loaded from a file path without registering it
    in ``sys.modules``), threads are used instead.

    Arguments
    ---------
    paths : list of str
        WAV files.
    num_workers : int, optional
        Worker processes (default: twice the CPU count, at most 16); 1 reads
        serially in this process.

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
    >>> read_headers([f, "/nonexistent.wav"], num_workers=1)[0]
    (800, 16000)
    """
    workers = (
        min(16, 2 * (os.cpu_count() or 1))
        if num_workers is None
        else int(num_workers)
    )
    if workers <= 1 or len(paths) <= 2048:
        return _headers_chunk(paths)
    step = max(256, len(paths) // (8 * workers) + 1)
    chunks = [paths[i : i + step] for i in range(0, len(paths), step)]
    try:
        pickle.dumps(_headers_chunk)
        methods = multiprocessing.get_all_start_methods()
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context(
                "fork" if "fork" in methods else None
            ),
        )
    except (pickle.PicklingError, AttributeError, TypeError):
        pool = ThreadPoolExecutor(workers)
    with pool:
        return [h for part in pool.map(_headers_chunk, chunks) for h in part]


def audio_problems(paths, headers, sample_rate, allow_resampling=False):
    """What makes each file unusable for training: an unreadable header, no
    samples, or (unless ``allow_resampling``) another sample rate.

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

    Example
    -------
    >>> check_training_audio(["/nonexistent.wav"], num_workers=1)
    Traceback (most recent call last):
    ...
    ValueError: 1 of 1 training audio files cannot be used:
      /nonexistent.wav: cannot read audio header (file does not exist)
    """
    headers = read_headers(paths, num_workers)
    problems = audio_problems(paths, headers, sample_rate, allow_resampling)
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:SHOWN])
        more = len(problems) - SHOWN
        raise ValueError(
            f"{len(problems)} of {len(paths)} training audio files cannot be "
            f"used:\n{shown}" + (f"\n  ... and {more} more" if more > 0 else "")
        )
    return headers


def _scan(wav_root):
    """Relative paths ``spk/video/utt.wav`` under wav_root, sorted."""
    found = []
    for spk in os.scandir(wav_root):
        if not spk.is_dir():
            continue
        for video in os.scandir(spk.path):
            if video.is_dir():
                found.extend(
                    f"{spk.name}/{video.name}/{e.name}"
                    for e in os.scandir(video.path)
                    if e.name.endswith(".wav") and e.is_file()
                )
    return sorted(found)


def _listing_digest(prefix, files):
    """A digest of the file names, sizes and modification times: files
    added, removed or rewritten change it."""
    digest = hashlib.sha1()
    for name in files:
        stat = os.stat(prefix + name)
        digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _examples(items):
    return f"{len(items)}, e.g. " + ", ".join(repr(x) for x in items[:5])


def _write_csv(path, header, rows):
    """Write a CSV atomically."""
    with atomic_write(path) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _utt_id(rel):
    return rel[:-4].replace("/", "--")


def calibration_speaker_count(n_speakers, fraction):
    """How many of ``n_speakers`` candidate training speakers to hold out
    for calibration: ``round(fraction * n_speakers)``, at least
    ``MIN_CALIBRATION_SPEAKERS`` (5), and none when ``fraction`` is 0 or
    fewer than ``MIN_SPEAKERS_FOR_CALIBRATION`` (20) speakers are available.

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


def prepare_voxceleb1(
    data_folder,
    save_folder,
    verification_file,
    valid_utterances_per_speaker=2,
    seed=1234,
    num_workers=None,
    sample_rate=16000,
    allow_resampling=False,
    calibration_speakers=0.02,
):
    """Write train/valid/calibration CSVs and trial files for VoxCeleb1.

    Arguments
    ---------
    data_folder : str
        Folder holding ``wav/idNNNNN/<video>/<nnnnn>.wav`` (or the ``wav``
        folder itself).
    save_folder : str
        Where the outputs go (created if needed).
    verification_file : str
        Trial list in the official ``label enrol test`` form; its speakers
        are excluded from training.
    valid_utterances_per_speaker : int
        Utterances per training speaker held out for validation (>= 1).
    seed : int
        Seed of the validation draw.
    num_workers : int, optional
        Processes reading WAV headers (default: twice the CPU count, at
        most 16); 1 reads serially.
    sample_rate : int
        The recipe's sample rate: files at another rate are an error...
    allow_resampling : bool
        ... unless this is True (training then resamples them).
    calibration_speakers : float
        Fraction of the training speakers held out whole for calibration
        (``calibration.csv``; see ``calibration_speaker_count``); 0 holds
        out none.

    Returns
    -------
    PrepareResult
        Output paths and whether the work was skipped.

    Raises
    ------
    FileNotFoundError
        Missing data folder, trial list, or trial files missing from disk.
    ValueError
        No WAV file, no training speaker, a speaker with too few
        utterances, or an unreadable WAV header (each message names files).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mrmha.app.synthetic import generate_corpus
    >>> tmp = tempfile.mkdtemp()
    >>> c = generate_corpus(os.path.join(tmp, "vox"), speakers=4, videos=2,
    ...                     utterances=2, min_duration=0.5, max_duration=0.6)
    >>> r = prepare_voxceleb1(c.root, os.path.join(tmp, "save"),
    ...                       c.verification_file, valid_utterances_per_speaker=1)
    >>> r.skipped, prepare_voxceleb1(c.root, os.path.join(tmp, "save"),
    ...     c.verification_file, valid_utterances_per_speaker=1).skipped
    (False, True)
    """
    data_folder, save_folder = (
        os.path.abspath(data_folder),
        os.path.abspath(save_folder),
    )
    verification_file = os.path.abspath(verification_file)
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(
            f"VoxCeleb1 data_folder {data_folder!r} does not exist"
        )
    if int(valid_utterances_per_speaker) < 1:
        raise ValueError(
            f"valid_utterances_per_speaker must be >= 1, got "
            f"{valid_utterances_per_speaker}"
        )
    trials = read_trials(verification_file)
    with open(verification_file, "rb") as fh:
        trials_sha1 = hashlib.sha1(fh.read()).hexdigest()
    wav_root = os.path.join(data_folder, "wav")
    if not os.path.isdir(wav_root):
        wav_root = data_folder
    files = _scan(wav_root)
    prefix = os.path.join(wav_root, "")
    options = {
        "version": _VERSION,
        "data_folder": data_folder,
        "verification_file": verification_file,
        "verification_sha1": trials_sha1,
        "seed": int(seed),
        "valid_utterances_per_speaker": int(valid_utterances_per_speaker),
        "sample_rate": int(sample_rate),
        "allow_resampling": bool(allow_resampling),
        "calibration_speakers": float(calibration_speakers),
        "files_sha1": _listing_digest(prefix, files),
    }
    out = PrepareResult(
        *(
            os.path.join(save_folder, name)
            for name in (
                "train.csv",
                "valid.csv",
                os.path.basename(verification_file),
                "trials_files.csv",
                "calibration.csv",
            )
        ),
        skipped=False,
    )
    calibration_speaker_count(0, calibration_speakers)  # checks the fraction
    options_path = os.path.join(save_folder, OPTIONS_FILE)
    if os.path.isfile(options_path) and all(os.path.isfile(p) for p in out[:5]):
        with open(options_path) as fh:
            if json.load(fh) == options:
                logger.info(
                    "VoxCeleb1 preparation up to date in %s, skipping",
                    save_folder,
                )
                return out._replace(skipped=True)
    os.makedirs(save_folder, exist_ok=True)
    if os.path.exists(options_path):
        os.remove(options_path)  # outputs are about to change

    if not files:
        raise ValueError(
            f"no WAV files found as {wav_root}/idNNNNN/<video>/<nnnnn>.wav"
        )
    on_disk = set(files)
    needed = trial_files(trials)
    missing = [f for f in needed if f not in on_disk]
    if missing:
        raise FileNotFoundError(
            f"{verification_file}: trial files missing from {wav_root}: "
            f"{_examples(missing)}"
        )
    trial_speakers = {f.split("/")[0] for f in needed}
    train_files = [f for f in files if f.split("/")[0] not in trial_speakers]
    if not train_files:
        raise ValueError(
            f"no training speaker in {wav_root}: every speaker is in "
            f"{verification_file}"
        )

    all_paths = train_files + needed
    headers = check_training_audio(
        [prefix + f for f in all_paths],
        sample_rate,
        allow_resampling,
        num_workers,
    )
    duration = {
        f: frames / rate for f, (frames, rate) in zip(all_paths, headers)
    }
    by_speaker = {}
    for f in train_files:
        by_speaker.setdefault(f.split("/")[0], []).append(f)
    held_out = choose_calibration_speakers(
        by_speaker, calibration_speakers, seed
    )
    if calibration_speakers and not held_out:
        logger.warning(
            "calibration_speakers=%s: only %d training speakers (fewer than "
            "%d), none held out for calibration; calibration.csv is empty",
            calibration_speakers,
            len(by_speaker),
            MIN_SPEAKERS_FOR_CALIBRATION,
        )
    calibration_files = [f for s in held_out for f in by_speaker.pop(s)]
    train_files = [f for f in train_files if f.split("/")[0] in by_speaker]
    k = int(valid_utterances_per_speaker)
    short = [f"{s} ({len(v)})" for s, v in by_speaker.items() if len(v) <= k]
    if short:
        raise ValueError(
            f"valid_utterances_per_speaker={k} needs more than {k} utterances "
            f"per training speaker; too few in {_examples(short)}"
        )
    rng = random.Random(seed)
    valid = {
        f for s in sorted(by_speaker) for f in rng.sample(by_speaker[s], k)
    }

    def rows(subset, with_speaker=True):
        return [
            [_utt_id(f), repr(duration[f]), prefix + f]
            + ([f.split("/")[0]] if with_speaker else [])
            for f in subset
        ]

    _write_csv(
        out.train_csv,
        ["ID", "duration", "wav", "spk_id"],
        rows([f for f in train_files if f not in valid]),
    )
    _write_csv(
        out.valid_csv,
        ["ID", "duration", "wav", "spk_id"],
        rows([f for f in train_files if f in valid]),
    )
    _write_csv(
        out.calibration_csv,
        ["ID", "duration", "wav", "spk_id"],
        rows(calibration_files),
    )
    _write_csv(
        out.trials_csv,
        ["ID", "duration", "wav"],
        rows(needed, with_speaker=False),
    )
    with (
        open(verification_file, "rb") as fin,
        atomic_write(out.verification_file, "wb") as fout,
    ):
        shutil.copyfileobj(fin, fout)
    write_text_atomic(options_path, json.dumps(options, indent=1))
    logger.info(
        "VoxCeleb1 prepared in %s: %d speakers, %d train, %d valid, "
        "%d trial files, %d calibration files of %d speakers",
        save_folder,
        len(by_speaker),
        len(train_files) - len(valid),
        len(valid),
        len(needed),
        len(calibration_files),
        len(held_out),
    )
    return out


def main(argv=None):
    """Command line entry point (see the module docstring).

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    PrepareResult
        As :func:`prepare_voxceleb1`.
    """
    parser = argparse.ArgumentParser(
        description="Prepare VoxCeleb1 CSVs for SpeechBrain."
    )
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--save_folder", required=True)
    parser.add_argument("--verification_file", required=True)
    parser.add_argument("--valid_utterances_per_speaker", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--calibration_speakers",
        type=float,
        default=0.02,
        help="fraction of training speakers held out for calibration (0: none)",
    )
    parser.add_argument("--num_workers", type=int, default=None)
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument(
        "--allow_resampling",
        action="store_true",
        help="accept other sample rates (training resamples them)",
    )
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = prepare_voxceleb1(
        a.data_folder,
        a.save_folder,
        a.verification_file,
        valid_utterances_per_speaker=a.valid_utterances_per_speaker,
        seed=a.seed,
        num_workers=a.num_workers,
        sample_rate=a.sample_rate,
        allow_resampling=a.allow_resampling,
        calibration_speakers=a.calibration_speakers,
    )
    print(
        f"{'up to date' if result.skipped else 'prepared'}: {os.path.dirname(result.train_csv)}"
    )
    return result


if __name__ == "__main__":
    main()
