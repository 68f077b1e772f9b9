"""Benchmark: the cost of keying the embedding cache by file content, at
VoxCeleb1-O scale.

The verification recipe (``extraction.embed_files``) hashes every trial file
(``io.content_digest``, sha256 of the bytes read in 1 MiB chunks) on every
run, so that a file replaced under the same name is never served its old
embedding. This writes 4,874 WAV files (PCM 16-bit, 16 kHz, durations 4-20 s,
log-normal, mean about 8 s: the size of the Vox1-O test set) into a temporary
folder and times, on the same files in the same run:

* the up-front header check the recipe already does (``soundfile.info`` of
  every file): the peer;
* reading every byte without hashing (the floor of any content hash);
* ``io.content_digest`` of every file (sha256);
* the same loop with blake2b, sha1 and md5, warm, for the choice of digest;

each "cold-ish" (the files' pages dropped with ``posix_fadvise(DONTNEED)``
first; the host may still cache the virtual disk) and warm (best of 2), and
prints the hashing time against the peers and against the time embedding
the same audio takes at a given rate (default 33.5 audio seconds per second:
fp32 on 2 cores, machine X of docs/BENCHMARKS.md).

Usage: python bench/content_hash.py [--files 4874] [--embed-rate 33.5]
    [--folder DIR]
"""

import argparse
import hashlib
import os
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import soundfile

from speechbrain_mrmha.dataio.files import DIGEST, content_digest

SAMPLE_RATE = 16000
CHUNK = 1 << 20


def durations(count, seed=0):
    """Log-normal durations (median 7 s, sigma 0.45) clipped to 4-20 s."""
    rng = np.random.default_rng(seed)
    values = np.exp(np.log(7.0) + 0.45 * rng.standard_normal(count))
    return np.clip(values, 4.0, 20.0)


def write_corpus(folder, seconds):
    """One PCM 16-bit WAV per duration, in the VoxCeleb1 layout."""
    rng = np.random.default_rng(1)
    noise = rng.integers(-3000, 3000, int(25 * SAMPLE_RATE), dtype=np.int16)
    paths = []
    for index, duration in enumerate(seconds):
        path = (
            Path(folder)
            / f"id{10000 + index // 100:05d}"
            / f"video{index // 10 % 10}"
            / f"{index:05d}.wav"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        start = index * 997 % (noise.shape[0] - int(20 * SAMPLE_RATE))
        frames = noise[start : start + int(duration * SAMPLE_RATE)]
        with wave.open(str(path), "wb") as fout:  # plain PCM, as VoxCeleb1
            fout.setnchannels(1)
            fout.setsampwidth(2)
            fout.setframerate(SAMPLE_RATE)
            fout.writeframes(frames.tobytes())
        paths.append(str(path))
    return paths


def drop_pages(paths):
    """Ask the kernel to forget the files' cached pages."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def header_reads(paths):
    return sum(soundfile.info(p).frames for p in paths)


def plain_reads(paths):
    buffer = bytearray(CHUNK)
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as fin:
            while count := fin.readinto(buffer):
                total += count
    return total


def digests(paths):
    return [content_digest(p) for p in paths]


def hashlib_loop(paths, name):
    """The loop of io.content_digest with another hashlib algorithm."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    for path in paths:
        digest = hashlib.new(name)
        with open(path, "rb", buffering=0) as fin:
            while count := fin.readinto(buffer):
                digest.update(view[:count])
        digest.hexdigest()


def timed(function, *args):
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main():
    """Writes the files, times the cases, prints seconds and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=4874)
    parser.add_argument(
        "--embed-rate",
        type=float,
        default=33.5,
        help="audio seconds embedded per second to compare with (default: "
        "fp32 on 2 cores, docs/BENCHMARKS.md)",
    )
    parser.add_argument(
        "--folder", default=None, help="where to write (default: a temp dir)"
    )
    args = parser.parse_args()
    begin = time.perf_counter()
    seconds = durations(args.files)
    with tempfile.TemporaryDirectory(
        prefix="bench_hash_", dir=args.folder
    ) as folder:
        start = time.perf_counter()
        paths = write_corpus(folder, seconds)
        written = time.perf_counter() - start
        os.sync()  # dirty pages cannot be dropped
        synced = time.perf_counter() - start - written
        size = sum(os.path.getsize(p) for p in paths)
        print(
            f"{len(paths)} WAV files, 16-bit 16 kHz, {seconds.min():.1f}-"
            f"{seconds.max():.1f} s (mean {seconds.mean():.2f} s, "
            f"{seconds.sum() / 3600:.1f} h), {size / 2**30:.2f} GiB, written "
            f"in {written:.1f} s + {synced:.1f} s to sync; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        cases = {
            "header reads (soundfile.info, the up-front check)": header_reads,
            "read every byte, no hash": plain_reads,
            f"io.content_digest ({DIGEST})": digests,
        }
        cold = {}
        for name, function in cases.items():
            drop_pages(paths)
            cold[name] = timed(function, paths)
        plain_reads(paths)  # warm the page cache
        warm = {
            name: min(timed(function, paths) for _ in range(2))
            for name, function in cases.items()
        }
        others = {
            name: min(timed(hashlib_loop, paths, name) for _ in range(2))
            for name in ("blake2b", "sha1", "md5")
        }
    hashing = f"io.content_digest ({DIGEST})"
    peer = "header reads (soundfile.info, the up-front check)"
    print(f"\n{'case':<52} {'cold-ish s':>10} {'warm s':>8} {'warm GiB/s':>10}")
    for name in cases:
        print(
            f"{name:<52} {cold[name]:10.2f} {warm[name]:8.2f} "
            f"{size / 2**30 / warm[name]:10.2f}"
        )
    for name, value in others.items():
        print(
            f"{'same loop, ' + name:<52} {'-':>10} {value:8.2f} "
            f"{size / 2**30 / value:10.2f}"
        )
    print(
        f"\nhashing / header reads: cold-ish {cold[hashing] / cold[peer]:.2f}x, "
        f"warm {warm[hashing] / warm[peer]:.2f}x"
    )
    read = "read every byte, no hash"
    print(
        f"hashing / plain read:   cold-ish {cold[hashing] / cold[read]:.2f}x, "
        f"warm {warm[hashing] / warm[read]:.2f}x"
    )
    embedding = seconds.sum() / args.embed_rate
    print(
        f"embedding the same {seconds.sum() / 3600:.1f} h at {args.embed_rate} "
        f"audio s/s: {embedding / 60:.1f} min; hashing is "
        f"{100 * cold[hashing] / embedding:.2f} % of it cold-ish, "
        f"{100 * warm[hashing] / embedding:.2f} % warm"
    )
    print(f"benchmark wall time {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
