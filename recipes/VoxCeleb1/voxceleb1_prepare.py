"""Data preparation for VoxCeleb1 speaker-embedding training and verification.

Reads the official layout (what vox1_dev_wav.zip and vox1_test_wav.zip unpack
to, both into the same ``wav`` folder)::

    data_folder/wav/idNNNNN/<video>/<nnnnn>.wav

Training speakers are all speakers on disk that never appear in the trial
list (the 1,211 VoxCeleb1 dev speakers for veri_test2.txt). A seeded
``calibration_speakers`` fraction of them (at least 5, when at least 20 are
available: ``calibration_speaker_count``) is held out whole for score
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

Durations come from the WAV headers (``speechbrain_mrmha.dataio.audio``'s
``audio_info``: RIFF ``fmt `` and ``data`` chunks, never decoding audio),
read by a pool of worker processes; what a VoxCeleb2 preparation would also
need (header reading, the training-audio checks, the calibration speakers,
the listing digest, CSV writing) is ``speechbrain_mrmha.dataio.preparation``.

Run alone as::

    python voxceleb1_prepare.py --data_folder DIR --save_folder DIR \\
        --verification_file DIR/meta/veri_test2.txt

Authors
 * speechbrain_mrmha contributors
"""

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
from typing import NamedTuple

from speechbrain_mrmha.dataio.files import atomic_write, write_text_atomic
from speechbrain_mrmha.dataio.preparation import (
    MIN_SPEAKERS_FOR_CALIBRATION,
    calibration_speaker_count,
    check_training_audio,
    choose_calibration_speakers,
    listing_digest,
    write_csv,
)
from speechbrain_mrmha.dataio.trials import read_trials, trial_files

logger = logging.getLogger(__name__)
OPTIONS_FILE = "prepare_options.json"
_VERSION = 4  # 4: calibration speakers held out (calibration.csv)


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


def _examples(items):
    return f"{len(items)}, e.g. " + ", ".join(repr(x) for x in items[:5])


def _utt_id(rel):
    return rel[:-4].replace("/", "--")


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
        "files_sha1": listing_digest(prefix, files),
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

    write_csv(
        out.train_csv,
        ["ID", "duration", "wav", "spk_id"],
        rows([f for f in train_files if f not in valid]),
    )
    write_csv(
        out.valid_csv,
        ["ID", "duration", "wav", "spk_id"],
        rows([f for f in train_files if f in valid]),
    )
    write_csv(
        out.calibration_csv,
        ["ID", "duration", "wav", "spk_id"],
        rows(calibration_files),
    )
    write_csv(
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
