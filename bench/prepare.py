"""Benchmark: VoxCeleb1 data preparation at full size.

Builds (once, cached) a tree of tiny valid WAV files with the size of
VoxCeleb1: 1,251 speakers (1,211 dev + 40 test), 22,496 videos, 148,642 dev
+ 4,874 test files, and a 37,611-line balanced trial list over the test
files (target pairs across videos), as veri_test2.txt. Then times
``prepare_voxceleb1`` on it (first run with the data pages of the tree
dropped from the page cache, rerun that skips, forced redos with 1, 2 and
the default number of worker processes) against the peer measured in the same run: reading
every duration with ``soundfile.info`` one file after the other, as typical
recipes do (``torchaudio.info`` is gone from torchaudio >= 2.9). The peer
runs on a subset and is extrapolated to the full file count.

Usage::

    python bench/prepare.py [--cache bench/_data] [--peer-files 20000]

The cache folder (default ``bench/_data/``, about 0.7 GB of 4 KiB blocks) is
not part of the repository.
"""

import argparse
import importlib.util
import os
import platform
import shutil
import struct
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speechbrain_mrmha.app.synthetic import make_trials
from speechbrain_mrmha.dataio.preparation import read_headers
from speechbrain_mrmha.dataio.trials import write_trials

HERE = Path(__file__).resolve().parent
DEV_SPEAKERS, TEST_SPEAKERS = 1211, 40
DEV_FILES, TEST_FILES = 148642, 4874
DEV_VIDEOS, TEST_VIDEOS = 21819, 677
TRIALS = 37611
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def load_prepare():
    spec = importlib.util.spec_from_file_location(
        "voxceleb1_prepare",
        HERE.parent / "recipes" / "VoxCeleb1" / "voxceleb1_prepare.py",
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["voxceleb1_prepare"] = (
        module  # as `from voxceleb1_prepare import ...` does
    )
    spec.loader.exec_module(module)
    return module


def tiny_wav(frames):
    data = b"\x00\x01" * frames
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def split(total, parts):
    return [total // parts + (i < total % parts) for i in range(parts)]


def build_tree(root):
    """Write the full-size tree into root (atomically); return the trial list path."""
    marker = root / "complete"
    if marker.is_file():
        return root / "meta" / "veri_test2.txt"
    if root.exists():
        shutil.rmtree(root)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(0)
    blobs = [tiny_wav(n) for n in range(1, 65)]
    test_files = []
    start = time.perf_counter()
    layout = [
        (DEV_SPEAKERS, DEV_FILES, DEV_VIDEOS, False),
        (TEST_SPEAKERS, TEST_FILES, TEST_VIDEOS, True),
    ]
    spk = 10001
    for speakers, files, videos, is_test in layout:
        for n_files, n_videos in zip(
            split(files, speakers), split(videos, speakers)
        ):
            vids = set()
            while len(vids) < n_videos:
                vids.add("".join(rng.choice(list(ID_CHARS), 11)))
            for video, n_utts in zip(sorted(vids), split(n_files, n_videos)):
                folder = tmp / "wav" / f"id{spk}" / video
                folder.mkdir(parents=True)
                for u in range(1, n_utts + 1):
                    (folder / f"{u:05d}.wav").write_bytes(
                        blobs[rng.integers(64)]
                    )
                    if is_test:
                        test_files.append(f"id{spk}/{video}/{u:05d}.wav")
            spk += 1
    (tmp / "meta").mkdir()
    trials = make_trials(test_files, TRIALS, np.random.default_rng(1))
    write_trials(tmp / "meta" / "veri_test2.txt", trials)
    (tmp / "complete").write_text("ok\n")
    tmp.rename(root)
    print(
        f"built {DEV_FILES + TEST_FILES} files in {time.perf_counter() - start:.1f} s"
    )
    return root / "meta" / "veri_test2.txt"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def evict(paths):
    """Drop these files' data pages from the page cache (cold-ish reads)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default=str(HERE / "_data"))
    parser.add_argument("--peer-files", type=int, default=20000)
    args = parser.parse_args()
    prep = load_prepare()
    root = Path(args.cache).resolve() / "voxceleb1_full"
    trials = build_tree(root)
    save = Path(args.cache).resolve() / "prepare_out"
    shutil.rmtree(save, ignore_errors=True)
    every = prep._scan(str(root / "wav"))
    n_files = len(every)
    all_paths = [str(root / "wav" / f) for f in every]
    subset = all_paths[:: max(1, n_files // args.peer_files)]
    scale = n_files / len(subset)

    def run(workers):
        return prep.prepare_voxceleb1(
            str(root), str(save), str(trials), num_workers=workers
        )

    def durations(paths):
        return [f / r for f, r in read_headers(paths, num_workers=1)]

    rows = []  # (what, seconds, peer seconds)
    # peers first, cold then warm, on the subset; extrapolated to every file
    evict(subset)
    peer_cold = timed(lambda: [sf.info(p).duration for p in subset])[0] * scale
    peer_warm = timed(lambda: [sf.info(p).duration for p in subset])[0] * scale
    evict(subset)
    ours_cold = timed(lambda: durations(subset))[0] * scale
    t, ours = timed(lambda: durations(subset))
    assert ours == [sf.info(p).duration for p in subset]
    rows.append(
        (
            "durations only, header reader serially, cold-ish (extrapolated)",
            ours_cold,
            peer_cold,
        )
    )
    rows.append(
        (
            "durations only, header reader serially, warm (extrapolated)",
            t * scale,
            peer_warm,
        )
    )
    default = min(16, 2 * (os.cpu_count() or 1))
    import speechbrain.dataio.encoder  # noqa: F401  (its import is not preparation time)

    evict(all_paths)
    t, r = timed(lambda: run(None))
    assert not r.skipped
    rows.append(
        (
            f"prepare_voxceleb1, first run, cold-ish, {default} processes (default)",
            t,
            peer_cold,
        )
    )
    t, r = timed(lambda: run(None))
    assert r.skipped
    rows.append(("prepare_voxceleb1, rerun (skips)", t, peer_warm))
    for workers in (default, 2, 1):
        os.remove(save / prep.OPTIONS_FILE)
        t, r = timed(lambda w=workers: run(w))
        assert not r.skipped
        rows.append(
            (
                f"prepare_voxceleb1, forced redo, warm, {workers} process(es)",
                t,
                peer_warm,
            )
        )
    evict(all_paths)
    os.remove(save / prep.OPTIONS_FILE)
    t, r = timed(lambda: run(1))
    rows.append(
        ("prepare_voxceleb1, forced redo, cold-ish, 1 process", t, peer_cold)
    )
    print(
        f"\nVoxCeleb1-size tree: {n_files} files, {TRIALS} trials; {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, Python {platform.python_version()}; peer = soundfile.info "
        f"serially on {len(subset)} files, extrapolated x{scale:.2f}"
    )
    print("| what | seconds | peer seconds (same cache state) | speed-up |")
    print("|---|---|---|---|")
    for what, seconds, peer in rows:
        print(
            f"| {what} | {seconds:.2f} | {peer:.1f} | {peer / seconds:.1f}x |"
        )


if __name__ == "__main__":
    main()
