"""Benchmark: reading VoxCeleb2's AAC (``.m4a``) with ``load_audio`` (PyAV)
against 16-bit WAV and FLAC of the same audio, the one-time conversion, and
what they imply at VoxCeleb2-dev scale.

Writes ``--files`` synthetic utterances (``speechbrain_mrmha.app.synthetic``,
seeded, durations uniform in ``--min-seconds``..``--max-seconds``: mean
7.75 s by default, as VoxCeleb2 dev's 7.8 s), encodes each to ``.m4a`` with
PyAV's AAC encoder (FFmpeg's default bit rate, 69 kb/s for mono, with the
edit list the ffmpeg command writes), then converts the m4a files to 16-bit
WAV and to FLAC and times, on one thread, over the same files in the same
run:

* the one-time conversion m4a -> WAV and m4a -> FLAC (decode + write);
* PyAV decoding alone, frames discarded (the floor under ``load_audio``);
* whole-file ``load_audio`` of m4a, WAV and FLAC;
* ``load_audio`` of one ``--crop-seconds`` crop per file at a seeded random
  offset: WAV and FLAC seek to it, m4a is decoded from its start to the
  crop's end (AAC has no exact seek);

each the best of ``--repeats`` passes, in CPU seconds of the process (one
core; the machine may be busy, so wall time is printed too). The page cache
is warm: disk reads are not measured, and a cold disk penalises WAV, the
largest, most. Then it prints rates (files/s, audio seconds per CPU
second), ratios against the WAV read, and extrapolates to VoxCeleb2 dev
(1,092,009 files, about 2,360 h: the 2,442 h often quoted is dev + test):
core hours to decode or convert it once, its size as m4a / WAV / FLAC at the
measured bytes per audio second, and the loader cores needed to feed a
training step of ``--batch`` crops at ``--steps-per-second``, when each crop
is decoded from m4a on the fly (whole file, or up to the crop's end) or read
from WAV / FLAC.

Usage
-----
``python bench/m4a_decode.py [--files 200] [--repeats 3] [--folder DIR]
[--seed 0] [--batch 128] [--crop-seconds 2] [--steps-per-second 5]``

Needs PyAV (``pip install av``). The defaults run in about 1.5 minutes on
one core (most of it writing the synthetic audio); ``--files 40`` in 30 s.
"""

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import soundfile
import torch

from speechbrain_mrmha.app.synthetic import generate_corpus
from speechbrain_mrmha.dataio.audio import container_info, load_audio

SAMPLE_RATE = 16000
VOX2_DEV_FILES = 1_092_009
VOX2_DEV_HOURS = 2360.0  # 1,092,009 of the 1,128,246 files of 2,442 h


def write_m4a(path, signal):
    """Encode float32 mono at 16 kHz as the ffmpeg command would (first pts
    0, so the muxer writes the edit list that skips the encoder delay)."""
    with av.open(str(path), "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            signal[None, :], format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def make_files(folder, count, min_seconds, max_seconds, seed):
    """``count`` synthetic utterances as .m4a; returns their paths."""
    speakers = max(3, math.ceil(count / 10))
    corpus = generate_corpus(
        str(folder / "synthetic"),
        speakers=speakers,
        videos=2,
        utterances=5,
        test_speakers=2,
        min_duration=min_seconds,
        max_duration=max_seconds,
        seed=seed,
        num_workers=1,
    )
    wavs = sorted(Path(corpus.wav_folder).rglob("*.wav"))[:count]
    paths = []
    for index, wav in enumerate(wavs):
        data, rate = soundfile.read(wav, dtype="float32")
        assert rate == SAMPLE_RATE
        path = folder / "m4a" / f"{index:05d}.m4a"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_m4a(path, data)
        paths.append(path)
    return paths


def best_of(repeats, function, *args):
    """(best CPU seconds, wall seconds of that pass) of ``repeats`` calls."""
    best = None
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        function(*args)
        result = (time.process_time() - cpu, time.perf_counter() - wall)
        best = result if best is None or result[0] < best[0] else best
    return best


def convert(paths, folder, suffix, subtype):
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        signal = load_audio(path).numpy()
        soundfile.write(
            folder / f"{path.stem}{suffix}",
            signal,
            SAMPLE_RATE,
            subtype=subtype,
        )


def read_whole(paths):
    for path in paths:
        load_audio(path)


def pyav_floor(paths):
    """Decoding alone, frames discarded: what load_audio adds is above."""
    for path in paths:
        with av.open(str(path)) as container:
            for _ in container.decode(audio=0):
                pass


def read_crops(paths, offsets, samples):
    for path, offset in zip(paths, offsets):
        load_audio(path, offset=offset, num_samples=samples)


def size(paths):
    return sum(os.path.getsize(p) for p in paths)


def main():
    """Writes the files, times the cases, prints rates and extrapolations."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--min-seconds", type=float, default=4.0)
    parser.add_argument("--max-seconds", type=float, default=11.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--crop-seconds", type=float, default=2.0)
    parser.add_argument("--steps-per-second", type=float, default=5.0)
    parser.add_argument("--folder", help="work folder (default: temporary)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.folder or temporary)
        m4a = make_files(
            folder, args.files, args.min_seconds, args.max_seconds, args.seed
        )
        frames = np.array([container_info(p)[0] for p in m4a])
        audio = frames.sum() / SAMPLE_RATE
        crop = round(args.crop_seconds * SAMPLE_RATE)
        rng = np.random.default_rng(args.seed)
        offsets = [int(rng.integers(0, max(1, n - crop))) for n in frames]
        repeats = args.repeats
        timings = {
            "convert m4a -> WAV": best_of(
                repeats, convert, m4a, folder / "wav", ".wav", "PCM_16"
            ),
            "convert m4a -> FLAC": best_of(
                repeats, convert, m4a, folder / "flac", ".flac", "PCM_16"
            ),
        }
        wav = sorted((folder / "wav").glob("*.wav"))
        flac = sorted((folder / "flac").glob("*.flac"))
        timings["PyAV decode only (floor)"] = best_of(repeats, pyav_floor, m4a)
        for name, paths in (("m4a", m4a), ("WAV", wav), ("FLAC", flac)):
            timings[f"read {name} whole"] = best_of(repeats, read_whole, paths)
        for name, paths in (("m4a", m4a), ("WAV", wav), ("FLAC", flac)):
            timings[f"read {name} {args.crop_seconds:g} s crop"] = best_of(
                repeats, read_crops, paths, offsets, crop
            )
        sizes = {"m4a": size(m4a), "WAV": size(wav), "FLAC": size(flac)}
    count = len(m4a)
    print(
        f"{count} files, {audio:.0f} s of audio (mean {audio / count:.2f} s),"
        f" best of {repeats}, PyAV {av.__version__}, FFmpeg AAC encoder at "
        f"its default bit rate\n"
    )
    reference = timings["read WAV whole"][0]
    print(
        f"{'case (one core)':<26} {'CPU s':>7} {'wall s':>7} {'files/s':>8} "
        f"{'audio s/s':>10} {'x WAV read':>10}"
    )
    for name, (cpu, wall) in timings.items():
        print(
            f"{name:<26} {cpu:>7.2f} {wall:>7.2f} {count / cpu:>8.0f} "
            f"{audio / cpu:>10.0f} {cpu / reference:>10.1f}"
        )
    print(f"\n{'format':<6} {'MB':>7} {'kb/s':>6} {'x m4a':>6}")
    for name, total in sizes.items():
        print(
            f"{name:<6} {total / 1e6:>7.2f} {total * 8 / audio / 1e3:>6.1f} "
            f"{total / sizes['m4a']:>6.2f}"
        )

    vox_seconds = VOX2_DEV_HOURS * 3600
    vox_mean = vox_seconds / VOX2_DEV_FILES
    print(
        f"\nVoxCeleb2 dev: {VOX2_DEV_FILES:,} files, {VOX2_DEV_HOURS:,.0f} h "
        f"(mean {vox_mean:.2f} s), by the rates above:"
    )
    for name in (
        "read m4a whole",
        "convert m4a -> WAV",
        "convert m4a -> FLAC",
        "read WAV whole",
        "read FLAC whole",
    ):
        hours = vox_seconds / (audio / timings[name][0]) / 3600
        print(f"  {name:<22} once: {hours:6.1f} core hours")
    for name, total in sizes.items():
        print(
            f"  size as {name:<5} {total / audio * vox_seconds / 1e9:6.0f} GB"
        )
    per_epoch = {  # core hours of one epoch of one crop per file
        name: vox_seconds / (audio / timings[f"read {name} whole"][0]) / 3600
        for name in ("m4a", "WAV", "FLAC")
    }
    for name in ("WAV", "FLAC"):
        cost = vox_seconds / (audio / timings[f"convert m4a -> {name}"][0])
        epochs = cost / 3600 / (per_epoch["m4a"] - per_epoch[name])
        print(
            f"  converting to {name} pays back after {epochs:.1f} epochs of "
            "one whole-file read per file"
        )

    demand = args.batch * args.steps_per_second
    print(
        f"\nLoader cores to feed {args.batch} crops of {args.crop_seconds:g} s"
        f" x {args.steps_per_second:g} steps/s = {demand:.0f} crops/s "
        "(decoding only; per-file costs scaled to the VoxCeleb2 mean length "
        "for whole-file decodes):"
    )
    whole = timings["read m4a whole"][0] / audio * vox_mean  # s per file
    rows = [
        ("m4a, decode the whole file", whole),
        (
            "m4a, decode to the crop end",
            timings[f"read m4a {args.crop_seconds:g} s crop"][0] / count,
        ),
        (
            "WAV, seek + read the crop",
            timings[f"read WAV {args.crop_seconds:g} s crop"][0] / count,
        ),
        (
            "FLAC, seek + read the crop",
            timings[f"read FLAC {args.crop_seconds:g} s crop"][0] / count,
        ),
    ]
    for name, cost in rows:
        print(
            f"  {name:<30} {cost * 1e3:6.2f} ms/crop -> "
            f"{demand * cost:5.2f} cores"
        )
    print(f"\nbenchmark wall time {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
