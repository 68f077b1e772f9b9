"""Data preparation for VoxCeleb2 speaker-embedding training.

Reads the official layout of the dev set (what the zip made by
concatenating the vox2_dev_aac_parta* files unpacks to)::

    data_folder/dev/aac/idNNNNN/<video>/<nnnnn>.m4a

(5,994 speakers, 1,092,009 AAC files at 16 kHz). Every speaker is a
training speaker: VoxCeleb2 dev speakers are disjoint from VoxCeleb1's, so
no trial list is read or written (VoxCeleb1's lists test a model trained
here). A seeded ``calibration_speakers`` fraction of the speakers (at least
5, when at least 20: ``calibration_speaker_count``) is held out whole for
score calibration; of the others, a seeded ``valid_utterances_per_speaker``
utterances per speaker are held out for validation. Written into
``save_folder``, each file atomically:

* ``train.csv``, ``valid.csv``, ``calibration.csv`` (every utterance of
  the calibration speakers; only the header when none are held out):
  ``ID,duration,wav,spk_id``, IDs ``idNNNNN--<video>--<nnnnn>``, wav as
  ``$data_root/dev/aac/...`` (the CSVs move with the data);
* ``shards/`` (``use_shards``): WebDataset shards of train.csv's rows only
  (``dataio.shards.write_shards``, seeded with ``seed``, resumable,
  ``shards.json`` last), read in training by ``ShardStream``;
* ``prepare_options.json``, last: a rerun with the same options and the
  same listing (file names, sizes, modification times: ``listing_digest``)
  skips the work; any other rerun redoes it (shards of other rows are
  rewritten; an interrupted shard writing resumes).

Shard format. ``shard_format="flac"`` (the default) decodes every m4a once
and stores 16-bit FLAC: decoding AAC on the fly measured 3.6-4.8 loader
cores per GPU against 0.9-1.5 for FLAC (bench/m4a_decode.py), so the
decoding is paid once here, not in every epoch. None stores the m4a bytes
as they are (smaller; training then decodes AAC).

Checks. Every file's header is read (``audio_info``: an MP4 box reader,
PyAV for what it leaves, in worker processes); every unreadable, empty,
truncated or wrong-rate file, and every speaker with too few utterances,
is named in one error before anything is written. The durations are the
lengths ``load_audio`` decodes.

Run alone as::

    python voxceleb2_prepare.py --data_folder VOX2 --save_folder DIR

Authors
 * speechbrain_mrmha contributors
"""

import argparse
import glob
import json
import logging
import os
import random
import sys
from typing import NamedTuple, Optional

from speechbrain_mrmha.dataio.files import write_text_atomic
from speechbrain_mrmha.dataio.preparation import (
    MIN_SPEAKERS_FOR_CALIBRATION,
    audio_problems,
    calibration_speaker_count,
    choose_calibration_speakers,
    listing_digest,
    read_headers,
    write_csv,
)
from speechbrain_mrmha.dataio.problems import raise_problems
from speechbrain_mrmha.dataio.shards import (
    AUDIO_FORMATS,
    read_manifest,
    write_shards,
)

logger = logging.getLogger(__name__)
OPTIONS_FILE = "prepare_options.json"
CSV_COLUMNS = ["ID", "duration", "wav", "spk_id"]
AAC_FOLDER = os.path.join("dev", "aac")
_VERSION = 1


class PrepareResult(NamedTuple):
    """What :func:`prepare_voxceleb2` wrote (or found up to date).

    Arguments
    ---------
    train_csv, valid_csv, calibration_csv : str
        Paths of the CSVs in ``save_folder``.
    shard_folder : str or None
        The finished shards of train.csv's rows; None without shards.
    skipped : bool
        True when the outputs were up to date and nothing was done.
    """

    train_csv: str
    valid_csv: str
    calibration_csv: str
    shard_folder: Optional[str]
    skipped: bool


def _scan(aac_root):
    """Relative paths ``spk/video/utt.m4a`` under aac_root, sorted."""
    found = glob.glob(os.path.join(glob.escape(aac_root), "id*", "*", "*.m4a"))
    return sorted(path[len(aac_root) + 1 :] for path in found)


def _utt_id(rel):
    return rel[:-4].replace("/", "--")


def _up_to_date(options_path, options, out):
    """Whether the outputs exist and were made with these options."""
    csvs = (out.train_csv, out.valid_csv, out.calibration_csv)
    if not os.path.isfile(options_path) or not all(map(os.path.isfile, csvs)):
        return False
    with open(options_path) as fh:
        if json.load(fh) != options:
            return False
    if out.shard_folder is not None:
        try:
            read_manifest(out.shard_folder)
        except (OSError, ValueError):
            return False
    return True


def prepare_voxceleb2(
    data_folder,
    save_folder,
    valid_utterances_per_speaker=2,
    calibration_speakers=0.01,
    seed=1986,
    num_workers=None,
    sample_rate=16000,
    allow_resampling=False,
    use_shards=True,
    samples_per_shard=1000,
    shard_format="flac",
):
    """Write train/valid/calibration CSVs (and the training shards) for
    the VoxCeleb2 dev set; see the module docstring.

    Arguments
    ---------
    data_folder : str
        Folder holding ``dev/aac/idNNNNN/<video>/<nnnnn>.m4a``.
    save_folder : str
        Where the outputs go (created if needed).
    valid_utterances_per_speaker : int
        Utterances per training speaker held out for validation (>= 1).
    calibration_speakers : float
        Fraction of the speakers held out whole for calibration
        (``calibration.csv``; see ``calibration_speaker_count``); 0: none.
    seed : int
        Seed of the calibration and validation draws and of the shards.
    num_workers : int, optional
        Processes reading headers and writing shards (default: as
        ``read_headers`` and ``write_shards``); 1 works in this process.
    sample_rate : int
        The recipe's sample rate: files at another rate are an error...
    allow_resampling : bool
        ... unless this is True (training then resamples them).
    use_shards : bool
        Also write ``save_folder/shards`` from train.csv's rows.
    samples_per_shard : int
        Utterances per shard.
    shard_format : str or None
        ``"flac"``: the audio decoded once and stored as 16-bit FLAC; None:
        the m4a bytes as they are.

    Returns
    -------
    PrepareResult
        Output paths and whether the work was skipped.

    Raises
    ------
    FileNotFoundError
        No ``data_folder`` or no ``dev/aac`` in it.
    ValueError
        Bad options, no m4a file, a speaker with too few utterances, or
        unusable audio files (each message names every one).

    Example
    -------
    >>> import tempfile
    >>> prepare_voxceleb2(tempfile.mkdtemp(), tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    FileNotFoundError: VoxCeleb2: no dev/aac folder in ...
    """
    data_folder = os.path.abspath(data_folder)
    save_folder = os.path.abspath(save_folder)
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(
            f"VoxCeleb2 data_folder {data_folder!r} does not exist"
        )
    aac_root = os.path.join(data_folder, AAC_FOLDER)
    if not os.path.isdir(aac_root):
        raise FileNotFoundError(
            f"VoxCeleb2: no dev/aac folder in {data_folder} (looked for "
            f"{aac_root}/idNNNNN/<video>/<nnnnn>.m4a). The zip of the "
            "vox2_dev_aac_parta* files concatenated unpacks to dev/aac/...: "
            "data_folder is the folder it was unzipped in"
        )
    problems = [
        f"{name} must be >= 1, got {value}"
        for name, value in [
            ("valid_utterances_per_speaker", valid_utterances_per_speaker),
            ("samples_per_shard", samples_per_shard),
        ]
        if int(value) < 1
    ]
    if shard_format not in AUDIO_FORMATS:
        problems.append(
            f"shard_format must be one of {AUDIO_FORMATS}, got {shard_format!r}"
        )
    try:
        calibration_speaker_count(0, calibration_speakers)
    except ValueError as error:
        problems.append(str(error))
    raise_problems(problems, "options of prepare_voxceleb2 are wrong")
    files = _scan(aac_root)
    prefix = os.path.join(aac_root, "")
    options = {
        "version": _VERSION,
        "data_folder": data_folder,
        "seed": int(seed),
        "valid_utterances_per_speaker": int(valid_utterances_per_speaker),
        "calibration_speakers": float(calibration_speakers),
        "sample_rate": int(sample_rate),
        "allow_resampling": bool(allow_resampling),
        "use_shards": bool(use_shards),
        "samples_per_shard": int(samples_per_shard),
        "shard_format": shard_format,
        "files_sha1": listing_digest(prefix, files),
    }
    out = PrepareResult(
        *(
            os.path.join(save_folder, name)
            for name in ("train.csv", "valid.csv", "calibration.csv")
        ),
        os.path.join(save_folder, "shards") if use_shards else None,
        skipped=False,
    )
    options_path = os.path.join(save_folder, OPTIONS_FILE)
    if _up_to_date(options_path, options, out):
        logger.info(
            "VoxCeleb2 preparation up to date in %s, skipping", save_folder
        )
        return out._replace(skipped=True)
    if not files:
        raise ValueError(
            f"no .m4a files found as {aac_root}/idNNNNN/<video>/<nnnnn>.m4a"
        )

    by_speaker = {}
    for f in files:
        by_speaker.setdefault(f.split("/")[0], []).append(f)
    held_out = choose_calibration_speakers(
        by_speaker, calibration_speakers, seed
    )
    calibration_files = [f for s in held_out for f in by_speaker.pop(s)]
    k = int(valid_utterances_per_speaker)
    problems = [
        f"{s}: {len(v)} utterances, valid_utterances_per_speaker={k} needs "
        f"more than {k}"
        for s, v in by_speaker.items()
        if len(v) <= k
    ]
    logger.info("reading the headers of %d files", len(files))
    paths = [prefix + f for f in files]
    headers = read_headers(paths, num_workers)
    problems += audio_problems(paths, headers, sample_rate, allow_resampling)
    raise_problems(problems, "problems with the VoxCeleb2 files (none written)")
    duration = {f: frames / rate for f, (frames, rate) in zip(files, headers)}
    if calibration_speakers and not held_out:
        logger.warning(
            "calibration_speakers=%s: fewer than %d speakers, none held out; "
            "calibration.csv is empty",
            calibration_speakers,
            MIN_SPEAKERS_FOR_CALIBRATION,
        )
    rng = random.Random(seed)
    valid = {
        f for s in sorted(by_speaker) for f in rng.sample(by_speaker[s], k)
    }
    train_files = [
        f for s in sorted(by_speaker) for f in by_speaker[s] if f not in valid
    ]

    def rows(subset):
        root = "$data_root/dev/aac/"
        return [
            [_utt_id(f), repr(duration[f]), root + f, f.split("/")[0]]
            for f in subset
        ]

    os.makedirs(save_folder, exist_ok=True)
    if os.path.exists(options_path):
        os.remove(options_path)  # outputs are about to change
    write_csv(out.train_csv, CSV_COLUMNS, rows(train_files))
    write_csv(out.valid_csv, CSV_COLUMNS, rows(sorted(valid)))
    write_csv(out.calibration_csv, CSV_COLUMNS, rows(calibration_files))
    if use_shards:
        shard_rows = {
            _utt_id(f): {"wav": prefix + f, "duration": duration[f]}
            for f in train_files
        }
        for f, row in zip(train_files, shard_rows.values()):
            row["spk_id"] = f.split("/")[0]
        write_shards(
            shard_rows,
            out.shard_folder,
            samples_per_shard=samples_per_shard,
            seed=seed,
            workers=num_workers,
            sample_rate=None if allow_resampling else sample_rate,
            audio_format=shard_format,
        )
    elif os.path.isdir(os.path.join(save_folder, "shards")):
        logger.warning(
            "use_shards=False: %s/shards is left from an earlier preparation "
            "and does not follow train.csv",
            save_folder,
        )
    write_text_atomic(options_path, json.dumps(options, indent=1))
    logger.info(
        "VoxCeleb2 prepared in %s: %d train, %d valid, %d calibration files",
        save_folder,
        *map(len, (train_files, valid, calibration_files)),
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
        As :func:`prepare_voxceleb2`.
    """
    parser = argparse.ArgumentParser(
        description="Prepare VoxCeleb2 dev CSVs and shards for SpeechBrain."
    )
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--save_folder", required=True)
    for name, kind, default in [
        ("valid_utterances_per_speaker", int, 2),
        ("calibration_speakers", float, 0.01),  # 0: none held out
        ("seed", int, 1986),
        ("num_workers", int, None),
        ("sample_rate", int, 16000),
        ("samples_per_shard", int, 1000),
    ]:
        parser.add_argument(f"--{name}", type=kind, default=default)
    parser.add_argument(
        "--allow_resampling",
        action="store_true",
        help="accept other sample rates (training resamples them)",
    )
    parser.add_argument("--no_shards", action="store_true", help="CSVs only")
    parser.add_argument(
        "--shard_format",
        choices=["flac", "null", "m4a"],
        default="flac",
        help="flac: decode once, store 16-bit FLAC; null (the yaml's "
        "spelling) or m4a: the files' bytes as they are",
    )
    kwargs = vars(parser.parse_args(argv))
    kwargs["use_shards"] = not kwargs.pop("no_shards")
    if kwargs["shard_format"] in ("null", "m4a"):
        kwargs["shard_format"] = None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = prepare_voxceleb2(**kwargs)
    state = "up to date" if result.skipped else "prepared"
    print(f"{state}: {os.path.dirname(result.train_csv)}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
