"""WebDataset tar shards of an annotation: written in parallel, resumably,
after every input file is checked; read back by a manifest.

A shard ``shard-000012.tar`` holds, per utterance, ``<ID>.<ext>`` (the
audio) and ``<ID>.json`` (``id``, ``spk_id``, ``duration``, ``wav``: the
original path), as SpeechBrain's VoxLingua107 recipe and WeSpeaker store
them, so ``webdataset.WebDataset`` reads them too. The audio is, by
``audio_format``:

* None (the default): the file's bytes as they are (``.m4a``, ``.wav``,
  ``.flac``), never re-encoded;
* ``"flac"``: the file decoded once (``audio.load_audio``, mono, at its own
  rate) and stored as 16-bit FLAC (``.flac``), encoded in memory: a sample
  is the decoded one rounded to the nearest multiple of 1/32768 (clipped
  to [-1, 1 - 1/32768]). For AAC (VoxCeleb2's ``.m4a``) this moves the
  decoding out of training: a loader reads FLAC with a quarter to a third
  of the cores m4a needs (bench/m4a_decode.py).

Assignment. The IDs are sorted, then shuffled with ``seed``, then cut into
shards of ``samples_per_shard`` in that order: the shards depend on the set
of rows and the seed only (not on the order a preparation listed them in),
and each holds utterances of many speakers. Shards cut from the sorted IDs
would each hold about 5 speakers (VoxCeleb IDs start with the speaker, and
VoxCeleb2 dev has 182 utterances per speaker), and a loader reading a few
shards at a time would fill its batches from a handful of speakers.

Resuming. Each shard is written under a temporary name and renamed into
place, then its record ``shard-000012.json`` (the digest of the rows it
holds, the audio format, its sample count, size and sha256) is written
next to it. A rerun keeps a shard whose record names the same rows and
format and whose size matches (``verify=True`` also re-hashes it), and
rewrites any other: a truncated shard is found by its size, and a copied
folder (new modification times) is kept. The rows (ID, wav path, speaker,
duration) are what is digested: audio files changed in place under the
same names are not noticed. The manifest ``shards.json`` is written last,
atomically: the digest of the input rows, the seed, the shard size, the
audio format, the speakers and every shard's record. A folder with a
manifest is complete. One writer per folder at a time (under DDP, the
main process: SpeechBrain's ``run_on_main``).

Another input. A rerun with other rows, seed, shard size or audio format
rewrites the shards (a warning names both row counts and digests): the
old manifest is removed before the first shard is written, and shards the
new plan does not have are deleted before the new manifest is written, so
the folder never holds a manifest that does not describe its shards.
Nothing is touched when the new rows fail their checks.

Checks. Before anything is written, the header of every file to be written
is read (``preparation.read_headers``, in parallel); every unreadable or
empty file (and, given ``sample_rate``, every file at another rate) is
listed in one error, and the folder is left as it was. A file that fails
while its shard is written (gone, or, converted to FLAC, damaged audio
past a readable header) keeps that shard from being finished; the other
files of the shard are still read, and every such file of every shard is
named in one error, with no manifest written.

Authors
 * speechbrain-mrmha developers
"""

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import numpy
import soundfile
from webdataset import TarWriter

from speechbrain_mrmha.dataio.audio import load_audio
from speechbrain_mrmha.dataio.files import (
    atomic_write,
    content_digest,
    write_text_atomic,
)
from speechbrain_mrmha.dataio.preparation import audio_problems, read_headers
from speechbrain_mrmha.dataio.problems import list_problems, raise_problems

__all__ = [
    "AUDIO_FORMATS",
    "MANIFEST",
    "ShardPlan",
    "plan_shards",
    "write_shards",
    "read_manifest",
]

logger = logging.getLogger(__name__)
MANIFEST = "shards.json"
AUDIO_FORMATS = (None, "flac")  # what write_shards' audio_format takes
_FORMAT = "speechbrain_mrmha shards 1"
_SHARD = re.compile(r"shard-(\d{6})\.(tar|json)")
# a WebDataset key: its first "." starts the extension, "__x__" names are
# metadata, and a tar member name has no whitespace trouble or empty part
_KEY = re.compile(r"(?!__)[^./\s](?:[^.\s]*[^./\s])?")
_EXT = re.compile(r"[a-z0-9]+")
_SPACE = re.compile(r"[^\S\n]")  # whitespace but a newline


class ShardPlan(NamedTuple):
    """What ``plan_shards`` decides: which rows go to which shard.

    Arguments
    ---------
    input_digest : str
        sha256 of the rows (ID, wav, spk_id, duration) in ID order: the
        same for the same rows in any order.
    shards : list of tuple
        Per shard ``(name, digest, samples)``: its name without ``.tar``,
        the sha256 of its rows in order, and the rows as
        ``(ID, wav, spk_id, duration, ext)``.
    speakers : list of str
        Sorted.
    seconds : float
        Total duration.

    Example
    -------
    >>> plan = plan_shards({"u1": {"wav": "a.wav", "spk_id": "s",
    ...                            "duration": 1.0}}, 10)
    >>> plan.shards[0][0], plan.shards[0][2], plan.speakers
    ('shard-000000', [('u1', 'a.wav', 's', 1.0, 'wav')], ['s'])
    """

    input_digest: str
    shards: list
    speakers: list
    seconds: float


def _good_keys(ids):
    """Whether every ID matches ``_KEY``: searched in all IDs at once."""
    text = "\n".join(ids)
    return not (
        text.count("\n") != len(ids) - 1
        or "." in text
        or _SPACE.search(text)
        or text.startswith(("/", "__", "\n"))
        or text.endswith(("/", "\n"))
        or any(part in text for part in ("\n/", "/\n", "\n__", "\n\n"))
        or not text
    )


def _digest(lines, indices):
    """sha256 of the rows ``indices``, in that order, as lines."""
    text = "".join(map(lines.__getitem__, indices))
    return hashlib.sha256(text.encode()).hexdigest()


def _number(value):
    """``value`` as a float, NaN when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _row_problems(key, wav, spk_id, duration, ext):
    """What is wrong with one row, or an empty list."""
    problems = []
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        problems.append(
            f"ID {key!r}: not a shard key (no '.', whitespace, leading or "
            "trailing '/', or leading '__')"
        )
    if not _EXT.fullmatch(ext) or ext == "json":
        problems.append(
            f"ID {key}: wav {wav!r} has no usable extension (the tar member "
            "is <ID>.<extension>)"
        )
    if not spk_id:
        problems.append(f"ID {key}: empty spk_id")
    if not duration > 0:
        problems.append(f"ID {key}: duration must be a number > 0")
    return problems


def plan_shards(rows, samples_per_shard=1000, seed=0):
    """Decide the shards of ``rows`` without reading any audio: sorted IDs,
    shuffled with ``seed``, cut into shards of ``samples_per_shard`` (the
    last one shorter). O(n) but for one sort of the IDs; the rows are
    read column by column, and checked one by one only to name the bad
    ones.

    Arguments
    ---------
    rows : dict
        ID -> row with ``wav``, ``spk_id`` and ``duration`` (what
        ``annotation.read_annotation`` returns).
    samples_per_shard : int
        Utterances per shard.
    seed : int
        Seeds the shuffle.

    Returns
    -------
    plan : ShardPlan

    Raises
    ------
    ValueError
        Every bad row in one message: an ID that is not a WebDataset key
        (it holds a "."), a wav path without an extension, an empty
        speaker, a duration that is not > 0.

    Example
    -------
    >>> rows = {f"u{i}": {"wav": f"/d/{i}.wav", "spk_id": f"s{i % 3}",
    ...                   "duration": 2.0} for i in range(5)}
    >>> plan = plan_shards(rows, samples_per_shard=2, seed=1)
    >>> [len(samples) for _, _, samples in plan.shards]
    [2, 2, 1]
    >>> plan == plan_shards(dict(reversed(rows.items())), 2, seed=1)
    True
    >>> plan_shards({"a.b": {"wav": "x", "spk_id": "", "duration": 1}})
    Traceback (most recent call last):
    ...
    ValueError: 3 rows cannot be written to shards:
      ID 'a.b': not a shard key (no '.', whitespace, leading or trailing '/', or leading '__')
      ID a.b: wav 'x' has no usable extension (the tar member is <ID>.<extension>)
      ID a.b: empty spk_id
    """
    samples_per_shard = int(samples_per_shard)
    if samples_per_shard < 1:
        raise ValueError(
            f"samples_per_shard must be >= 1, got {samples_per_shard}"
        )
    if not rows:
        raise ValueError("no rows to write to shards")
    # column by column, in the rows' own order (where they lie in memory),
    # with C-level maps; the ID order is an index into the columns
    ids, table = list(rows), list(rows.values())
    wavs = list(map(str, map(itemgetter("wav"), table)))
    spks = list(map(str, map(itemgetter("spk_id"), table)))
    durations = list(map(itemgetter("duration"), table))
    try:
        durations = numpy.asarray(durations, dtype=float)
    except (TypeError, ValueError):
        durations = numpy.asarray(list(map(_number, durations)))
    exts = [w[i + 1 :] if (i := w.rfind(".")) >= 0 else "" for w in wavs]
    lower = {ext: ext.lower() for ext in set(exts)}
    if any(ext != low for ext, low in lower.items()):
        exts = list(map(lower.get, exts))
    by_id = sorted(range(len(ids)), key=ids.__getitem__)
    speakers = set(spks)
    if (
        not _good_keys(ids)
        or not all(_EXT.fullmatch(e) and e != "json" for e in lower.values())
        or "" in speakers
        or not (durations > 0).all()
    ):  # the slow way, only to name every bad row
        problems = []
        for i in by_id:
            problems += _row_problems(
                ids[i], wavs[i], spks[i], float(durations[i]), exts[i]
            )
        raise_problems(problems, "rows cannot be written to shards")
    # what a digest reads of a row, and what a writer gets: made in the
    # rows' order, then gathered by one reference per row (each gathered
    # object is a random touch of memory: the cost at a million rows)
    durations_list = durations.tolist()
    lines = list(
        map("{}\t{}\t{}\t{!r}\n".format, ids, wavs, spks, durations_list)
    )
    entries = list(zip(ids, wavs, spks, durations_list, exts))
    input_digest = _digest(lines, by_id)
    # numpy's RandomState: its streams never change (NEP 19)
    draw = hashlib.sha256(f"shards:{seed}".encode()).digest()
    shuffle = numpy.random.RandomState(int.from_bytes(draw[:4], "little"))
    order = list(map(by_id.__getitem__, shuffle.permutation(len(ids)).tolist()))
    shards = []
    for number, first in enumerate(range(0, len(order), samples_per_shard)):
        chosen = order[first : first + samples_per_shard]
        shards.append(
            (
                f"shard-{number:06d}",
                _digest(lines, chosen),
                list(map(entries.__getitem__, chosen)),
            )
        )
    seconds = float(durations.sum())
    return ShardPlan(input_digest, shards, sorted(speakers), seconds)


def _record_if_finished(folder, shard, verify, audio_format):
    """The record of a finished shard that holds the planned rows in
    ``audio_format``, or None when it must be (re)written."""
    name, digest, samples = shard
    try:
        record = json.loads((folder / f"{name}.json").read_text())
        size = (folder / f"{name}.tar").stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("digest") != digest:
        return None
    if record.get("audio_format") != audio_format:  # None: as they are
        return None
    if record.get("samples") != len(samples) or record.get("bytes") != size:
        return None
    if verify and content_digest(folder / f"{name}.tar") != record["sha256"]:
        return None
    return record


class _Unfinished(Exception):
    """Raised to drop a shard whose files could not all be converted."""


def _flac_bytes(wav, rate):
    """The audio of ``wav`` decoded (mono, at its own ``rate``) and encoded
    as 16-bit FLAC in memory."""
    signal = load_audio(wav, sample_rate=rate, min_seconds=0).numpy()
    pcm = numpy.clip(numpy.rint(signal * 32768.0), -32768, 32767)
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm.astype(numpy.int16), rate, format="FLAC")
    return buffer.getvalue()


def _write_shard(folder, shard, audio_format=None, rates=None):
    """Write one shard and its record; return the record, or the messages
    naming the shard and each file that could not be read or converted
    (``rates``: each file's sample rate, for ``audio_format``)."""
    name, digest, samples = shard
    path = folder / f"{name}.tar"
    wav, problems = None, []
    try:
        with atomic_write(path, "wb") as handle:
            tar = TarWriter(
                handle,
                user="",
                group="",
                encoder=False,
                mtime=0,  # the same rows give the same bytes
                format="PAX_FORMAT",
            )
            with tar:  # closed before the handle, also on an error
                for i, (key, wav, spk_id, duration, ext) in enumerate(samples):
                    if audio_format is None:
                        with open(wav, "rb") as fin:
                            audio = fin.read()
                    else:
                        try:
                            audio = _flac_bytes(wav, rates[i])
                        except ValueError as error:  # names the file
                            problems.append(f"{path} converting {error}")
                            continue
                        ext = audio_format
                    if problems:
                        continue  # only looking for more bad files
                    meta = {
                        "id": key,
                        "spk_id": spk_id,
                        "duration": duration,
                        "wav": wav,
                    }
                    tar.write(
                        {
                            "__key__": key,
                            ext: audio,
                            "json": json.dumps(meta, sort_keys=True).encode(),
                        }
                    )
                wav = None
                if problems:
                    raise _Unfinished
    except _Unfinished:
        return problems
    except OSError as error:
        where = f" reading {wav}" if wav else ""
        return [f"{path}{where}: {error.strerror or error}"]
    record = {
        "name": f"{name}.tar",
        "digest": digest,
        "audio_format": audio_format,
        "samples": len(samples),
        "bytes": path.stat().st_size,
        "sha256": content_digest(path),
    }
    write_text_atomic(folder / f"{name}.json", json.dumps(record) + "\n")
    return record


def _pool_map(function, items, workers):
    """``map`` over processes (fork where available), or in this process
    for one worker or one item."""
    if workers <= 1 or len(items) <= 1:
        return [function(*item) for item in items]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(
        min(workers, len(items)), mp_context=context
    ) as pool:
        return list(pool.map(function, *zip(*items)))


def _same_input(manifest, plan, samples_per_shard, seed, audio_format):
    return (
        manifest.get("format") == _FORMAT
        and manifest.get("input_digest") == plan.input_digest
        and manifest.get("samples_per_shard") == samples_per_shard
        and manifest.get("seed") == seed
        and manifest.get("audio_format") == audio_format
    )


def write_shards(
    rows,
    folder,
    samples_per_shard=1000,
    seed=0,
    workers=None,
    sample_rate=None,
    verify=False,
    audio_format=None,
):
    """Write (or finish, or bring up to date) the WebDataset shards of
    ``rows`` in ``folder``; see the module docstring for the layout, the
    assignment, the checks and what a rerun does.

    Arguments
    ---------
    rows : dict
        ID -> row with ``wav``, ``spk_id`` and ``duration`` (what
        ``annotation.read_annotation`` returns).
    folder : str or Path
        Where the shards and ``shards.json`` go.
    samples_per_shard : int
        Utterances per shard (SpeechBrain's VoxLingua107 recipe writes
        shards of a few hundred MB).
    seed : int
        Seeds the assignment of utterances to shards.
    workers : int, optional
        Processes writing shards and reading headers (default: the CPU
        count); 1 works in this process.
    sample_rate : int, optional
        Also refuse files at another sample rate.
    verify : bool
        A rerun also re-hashes finished shards (sha256) instead of only
        comparing their size with their record.
    audio_format : str, optional
        None stores each file's bytes as they are; ``"flac"`` decodes each
        file once and stores 16-bit mono FLAC at its own rate, under the
        ``.flac`` extension (the json's ``wav`` still names the original).

    Returns
    -------
    manifest : dict
        What ``shards.json`` holds: ``input_digest``, ``seed``,
        ``samples_per_shard``, ``audio_format``, ``utterances``,
        ``seconds``, ``speakers`` and ``shards`` (per shard ``name``,
        ``digest``, ``audio_format``, ``samples``, ``bytes``, ``sha256``).

    Raises
    ------
    ValueError
        Bad rows (see ``plan_shards``) or unusable audio files, every one
        in one message, before anything is written; files that could not be
        read (or converted) while writing, every one in one message, with no
        manifest written (a rerun finishes the job); an unknown
        ``audio_format``.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> soundfile.write(tmp / "a.wav", numpy.zeros(800), 16000)
    >>> rows = {"spk1/a": {"wav": str(tmp / "a.wav"), "spk_id": "spk1",
    ...                    "duration": 0.05}}
    >>> manifest = write_shards(rows, tmp / "shards", workers=1)
    >>> manifest["utterances"], [s["name"] for s in manifest["shards"]]
    (1, ['shard-000000.tar'])
    >>> import tarfile
    >>> tarfile.open(tmp / "shards" / "shard-000000.tar").getnames()
    ['spk1/a.json', 'spk1/a.wav']
    >>> flac = write_shards(rows, tmp / "flac", workers=1, audio_format="flac")
    >>> tar = tarfile.open(tmp / "flac" / "shard-000000.tar")
    >>> flac["audio_format"], tar.getnames()
    ('flac', ['spk1/a.flac', 'spk1/a.json'])
    >>> rows["spk1/b"] = {"wav": str(tmp / "b.wav"), "spk_id": "spk1",
    ...                   "duration": 1.0}
    >>> write_shards(rows, tmp / "shards", workers=1)
    Traceback (most recent call last):
    ...
    ValueError: 1 of 2 audio files cannot be written to shards:
      /.../b.wav: cannot read audio header (file does not exist)
    """
    folder = Path(folder)
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(
            f"audio_format must be one of {AUDIO_FORMATS}, got {audio_format!r}"
        )
    samples_per_shard, seed = int(samples_per_shard), int(seed)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    plan = plan_shards(rows, samples_per_shard, seed)
    try:
        old = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        old = None
    same = isinstance(old, dict) and _same_input(
        old, plan, samples_per_shard, seed, audio_format
    )
    checks = [(folder, shard, verify, audio_format) for shard in plan.shards]
    records = (
        _pool_map(_record_if_finished, checks, workers)
        if verify
        else [_record_if_finished(*check) for check in checks]
    )
    todo = [s for s, r in zip(plan.shards, records) if r is None]
    if same and not todo and old.get("shards") == records:
        logger.info("shards in %s are up to date", folder)
        return old
    paths = [sample[1] for _, _, samples in todo for sample in samples]
    headers = read_headers(paths, workers)
    raise_problems(
        audio_problems(paths, headers, sample_rate or 0, sample_rate is None),
        "audio files cannot be written to shards",
        total=len(paths),
    )
    if isinstance(old, dict) and not same:
        logger.warning(
            "%s holds shards of other rows (%s rows, input digest %.12s, "
            "seed %s, %s per shard, audio format %s): rewriting them for "
            "these %d rows (input digest %.12s, seed %d, %d per shard, "
            "audio format %s)",
            folder,
            old.get("utterances"),
            old.get("input_digest"),
            old.get("seed"),
            old.get("samples_per_shard"),
            old.get("audio_format"),
            sum(len(s[2]) for s in plan.shards),
            plan.input_digest,
            seed,
            samples_per_shard,
            audio_format,
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    for stale in folder.glob(".shard-*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    logger.info(
        "writing %d of %d shards to %s", len(todo), len(plan.shards), folder
    )
    rates, jobs = dict(zip(paths, (h[1] for h in headers))), []
    for shard in todo:
        wanted = [rates[sample[1]] for sample in shard[2]]
        jobs.append((folder, shard, audio_format, wanted))
    written = iter(_pool_map(_write_shard, jobs, workers))
    records = [r if r is not None else next(written) for r in records]
    unfinished = [r for r in records if isinstance(r, list)]
    if unfinished:  # each shard's files, all in one error
        raise ValueError(
            f"{len(unfinished)} of {len(records)} shards cannot be written "
            "(rerun to finish the others):\n"
            + list_problems([p for messages in unfinished for p in messages])
        )
    for path in folder.iterdir():
        match = _SHARD.fullmatch(path.name)
        if match and int(match[1]) >= len(plan.shards):
            path.unlink()
    manifest = {
        "format": _FORMAT,
        "input_digest": plan.input_digest,
        "seed": seed,
        "samples_per_shard": samples_per_shard,
        "audio_format": audio_format,
        "utterances": sum(r["samples"] for r in records),
        "seconds": plan.seconds,
        "speakers": plan.speakers,
        "shards": records,
    }
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(folder):
    """The manifest of a finished shard folder, with every shard checked to
    be there with its recorded size.

    Arguments
    ---------
    folder : str or Path
        A folder ``write_shards`` finished.

    Returns
    -------
    manifest : dict
        As ``write_shards`` returns.

    Raises
    ------
    FileNotFoundError
        No manifest (the shards were never finished).
    ValueError
        Missing or resized shards, all of them in one message.

    Example
    -------
    >>> import tempfile
    >>> read_manifest(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    FileNotFoundError: /.../shards.json does not exist: the shards were never finished (write_shards writes it last)
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the shards were never finished "
            "(write_shards writes it last)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != _FORMAT:
        raise ValueError(
            f"{path}: not a manifest of this package ({manifest.get('format')})"
        )
    problems = []
    for shard in manifest["shards"]:
        shard_path = Path(folder) / shard["name"]
        if not shard_path.is_file():
            problems.append(f"{shard_path}: missing")
        elif shard_path.stat().st_size != shard["bytes"]:
            problems.append(
                f"{shard_path}: {shard_path.stat().st_size} bytes, the "
                f"manifest says {shard['bytes']} (rerun write_shards)"
            )
    raise_problems(problems, f"shards of {path} are missing or changed")
    return manifest
