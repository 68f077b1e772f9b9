"""Benchmark: WebDataset shards for VoxCeleb2-size training
(``dataio.shards`` and ``training.shard_stream``).

(a) Writing.
  * Planning at full size, without audio: a 1,092,009-row annotation CSV
    (5,994 speakers, VoxCeleb2 dev's counts, IDs and paths in its layout,
    sorted as a preparation writes them) is read with
    ``annotation.read_annotation`` (the cost every run already pays: the
    peer), then ``plan_shards`` assigns the rows to 1,093 shards of 1,000;
    then a folder whose 1,093 shards and records are all there (sparse
    stand-ins of the recorded sizes) is finished by ``write_shards`` (plan,
    1,093 record checks, the manifest) and rerun (up to date: nothing
    written).
  * Writing real files: ``--files`` WAV files (16-bit 16 kHz, 2.2-3.5 s:
    about the bytes of as many VoxCeleb2 m4a files) are written to shards
    of 1,000 by 2 worker processes, the sources' cached pages dropped
    first (``posix_fadvise(DONTNEED)``; the host may still cache the
    virtual disk): files/s and MB/s, then an up-to-date rerun and a rerun
    with ``verify=True`` (every shard re-hashed).

(b) Loading, the same utterances and the same crops (``RandomCrops``,
    2 s, seed 1, epoch 0) batched by 128 with 2 DataLoader workers:
  * files: the recipe's way, SpeechBrain's ``DynamicItemDataset`` with the
    recipe's training pipeline (``crops.read`` of each file), shuffled;
  * shards: ``ShardStream`` (shuffle buffer 1,000);
  each cold-ish (pages of the files or shards dropped) and warm, samples/s
  and shards / files, against a paper-size training step: 128 crops per
  0.2 s step = 640 crops/s per GPU.

Usage: python bench/shards.py [--files 20000] [--rows 1092009]
    [--folder DIR]
"""

import argparse
import gc
import json
import os
import resource
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataset import DynamicItemDataset
from torch.utils.data import DataLoader

from speechbrain_mrmha.dataio.annotation import read_annotation
from speechbrain_mrmha.dataio.preparation import write_csv
from speechbrain_mrmha.dataio.shards import plan_shards, write_shards
from speechbrain_mrmha.training.crops import RandomCrops, speaker_labels
from speechbrain_mrmha.training.shard_stream import ShardStream

SAMPLE_RATE = 16000
VOX2_ROWS, VOX2_SPEAKERS = 1092009, 5994
BATCH, WORKERS, CROP_SECONDS, STEP_SECONDS = 128, 2, 2.0, 0.2
ID_CHARS = np.array(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def drop_pages(paths):
    """Ask the kernel to forget the files' cached pages."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def vox2_csv(path, count, seed=0):
    """An annotation CSV of ``count`` rows in VoxCeleb2 dev's layout
    (id0xxxx/<11-char video>/000NN), sorted by ID."""
    rng = np.random.default_rng(seed)
    speakers = [f"id{i:05d}" for i in rng.choice(9999, VOX2_SPEAKERS, False)]
    per_speaker = np.full(VOX2_SPEAKERS, count // VOX2_SPEAKERS)
    per_speaker[: count % VOX2_SPEAKERS] += 1
    videos = ["".join(x) for x in rng.choice(ID_CHARS, (count // 7 + 1, 11))]
    seconds = np.clip(
        np.exp(np.log(7.0) + 0.45 * rng.standard_normal(count)), 4.0, 20.0
    )
    rows, n = [], 0
    for speaker, utterances in zip(sorted(speakers), per_speaker):
        for j in range(utterances):
            key = f"{speaker}/{videos[n // 7]}/{j % 7 + 1:05d}"
            rows.append(
                [
                    key,
                    repr(round(float(seconds[n]), 3)),
                    f"$data_root/dev/aac/{key}.m4a",
                    speaker,
                ]
            )
            n += 1
    rows.sort()
    write_csv(path, ["ID", "duration", "wav", "spk_id"], rows)


def fake_finished(folder, plan):
    """The shards of ``plan`` as if written: each a sparse file of a
    plausible size with its record, no manifest (a run killed just
    before writing it)."""
    folder.mkdir(parents=True)
    for name, digest, samples in plan.shards:
        size = 100_000 * len(samples)
        with open(folder / f"{name}.tar", "wb") as fout:
            fout.truncate(size)
        record = {
            "name": f"{name}.tar",
            "digest": digest,
            "samples": len(samples),
            "bytes": size,
            "sha256": "0" * 64,
        }
        (folder / f"{name}.json").write_text(json.dumps(record) + "\n")


def planning(folder, count):
    csv = folder / "vox2_train.csv"
    made, _ = timed(vox2_csv, csv, count)
    read, rows = timed(
        read_annotation, csv, "/data/voxceleb2", check_files=False
    )
    plan_time, plan = timed(plan_shards, rows, 1000, 0)
    fake_finished(folder / "shards", plan)
    shards = len(plan.shards)
    del plan
    gc.collect()
    finish, _ = timed(write_shards, rows, folder / "shards", workers=1)
    rerun, _ = timed(write_shards, rows, folder / "shards", workers=1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"\n(a) planning at {count:,} rows, {shards:,} shards of 1,000 "
        f"(CSV of {csv.stat().st_size / 2**20:.0f} MiB made in "
        f"{made:.1f} s; load average {load()})"
    )
    print(
        f"  {'read_annotation (the peer: every run reads it)':<52}{read:8.2f} s"
    )
    print(
        f"  {'plan_shards (sort, check, digests, assignment)':<52}"
        f"{plan_time:8.2f} s  = {plan_time / read:.2f}x the CSV read"
    )
    print(
        f"  {'write_shards, all shards there: finish (manifest)':<52}"
        f"{finish:8.2f} s"
    )
    print(f"  {'write_shards rerun, up to date':<52}{rerun:8.2f} s")
    print(f"  peak RSS of the process so far {rss:.2f} GiB")
    del rows
    gc.collect()


def write_corpus(folder, count, seed=1):
    """``count`` WAV files (200 speakers) and their rows."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-3000, 3000, 10 * SAMPLE_RATE, dtype=np.int16)
    seconds = rng.uniform(2.2, 3.5, count)
    rows = {}
    for index, duration in enumerate(seconds):
        key = f"id{index % 200:05d}/video{index // 200 % 10}/{index:05d}"
        path = Path(folder, key + ".wav")
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = int(duration * SAMPLE_RATE)
        start = index * 997 % (noise.shape[0] - frames)
        with wave.open(str(path), "wb") as fout:
            fout.setnchannels(1)
            fout.setsampwidth(2)
            fout.setframerate(SAMPLE_RATE)
            fout.writeframes(noise[start : start + frames].tobytes())
        rows[key] = {
            "wav": str(path),
            "spk_id": key[:7],
            "duration": frames / SAMPLE_RATE,
        }
    return rows


def writing(folder, rows):
    paths = [row["wav"] for row in rows.values()]
    size = sum(os.path.getsize(p) for p in paths)
    os.sync()
    drop_pages(paths)
    first, manifest = timed(write_shards, rows, folder, 1000, workers=WORKERS)
    rerun, _ = timed(write_shards, rows, folder, 1000, workers=WORKERS)
    verify, _ = timed(
        write_shards, rows, folder, 1000, workers=WORKERS, verify=True
    )
    shards = sum(s["bytes"] for s in manifest["shards"])
    print(
        f"\n(a) writing {len(paths):,} WAV files ({size / 2**20:.0f} MiB) "
        f"to {len(manifest['shards'])} shards ({shards / 2**20:.0f} MiB), "
        f"{WORKERS} workers, cold-ish sources (load average {load()})"
    )
    print(
        f"  {'header checks + writing':<40}{first:8.2f} s  "
        f"{len(paths) / first:8.0f} files/s  {size / 2**20 / first:6.1f} "
        "MiB/s"
    )
    print(f"  {'rerun, up to date':<40}{rerun:8.2f} s")
    print(
        f"  {'rerun, verify=True (re-hash)':<40}{verify:8.2f} s  "
        f"{shards / 2**20 / verify:6.1f} MiB/s"
    )
    hours = VOX2_ROWS / (len(paths) / first) / 3600
    print(
        f"  VoxCeleb2 dev at this rate: {hours:.1f} h for {VOX2_ROWS:,} files"
    )


def file_loader(rows, crops, speakers):
    """The recipe's training data: DynamicItemDataset + crops.read."""
    labels = speaker_labels(speakers, crops.speeds)
    labels.expect_len(len(speakers))

    @sb.utils.data_pipeline.takes("id", "wav", "duration", "spk_id")
    @sb.utils.data_pipeline.provides("sig", "spk_id_encoded")
    def train_item(utterance, wav, duration, spk_id):
        sig, copy = crops.read(utterance, wav, duration)
        yield sig
        yield torch.LongTensor([labels.encode_label(spk_id)])

    data = {key: dict(row) for key, row in rows.items()}
    dataset = DynamicItemDataset(
        data, [train_item], ["id", "sig", "spk_id_encoded"]
    )
    return DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=WORKERS,
        collate_fn=PaddedBatch,
        generator=torch.Generator().manual_seed(0),
    )


def one_epoch(loader):
    start, ids, first = time.perf_counter(), [], None
    for batch in loader:
        if first is None:
            first = time.perf_counter() - start
        assert batch.sig.data.shape[1] == int(CROP_SECONDS * SAMPLE_RATE)
        ids += batch.id
    return time.perf_counter() - start, first, ids


def loading(shard_folder, rows):
    speakers = sorted({row["spk_id"] for row in rows.values()})
    crops = RandomCrops(1, sentence_len=CROP_SECONDS)
    stream = ShardStream(shard_folder, crops, BATCH, speakers=speakers)
    loaders = {
        "files (DynamicItemDataset)": (
            file_loader(rows, crops, speakers),
            [row["wav"] for row in rows.values()],
        ),
        "shards (ShardStream)": (
            DataLoader(
                stream,
                batch_size=BATCH,
                num_workers=WORKERS,
                collate_fn=PaddedBatch,
            ),
            [str(p) for p in Path(shard_folder).glob("*.tar")],
        ),
    }
    rates = {}
    for state in ("cold-ish", "warm"):
        for name, (loader, paths) in loaders.items():
            if state == "cold-ish":
                drop_pages(paths)
            seconds, first, ids = one_epoch(loader)
            assert sorted(ids) == sorted(rows), name  # each once
            rates[state, name] = len(ids) / seconds
            print(
                f"  {name:<28}{state:>9} {seconds:7.1f} s  "
                f"{rates[state, name]:7.0f} crops/s  (first batch "
                f"{first:.1f} s)"
            )
    needed = BATCH / STEP_SECONDS
    for state in ("cold-ish", "warm"):
        files, shards = (rates[state, n] for n in loaders)
        print(
            f"  {state}: shards / files {shards / files:.2f}x; against "
            f"{needed:.0f} crops/s: files {files / needed:.2f}x, shards "
            f"{shards / needed:.2f}x"
        )


def main():
    """Runs (a) and (b) and prints them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--rows", type=int, default=VOX2_ROWS)
    parser.add_argument(
        "--folder", default=None, help="where to write (default: a temp dir)"
    )
    args = parser.parse_args()
    begin = time.perf_counter()
    print(
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"load average {load()}"
    )
    with tempfile.TemporaryDirectory(
        prefix="bench_shards_", dir=args.folder
    ) as tmp:
        tmp = Path(tmp)
        planning(tmp / "plan", args.rows)
        made, rows = timed(write_corpus, tmp / "audio", args.files)
        print(f"\n{args.files:,} WAV files made in {made:.1f} s")
        writing(tmp / "shards", rows)
        print(
            f"\n(b) loading {len(rows):,} crops of {CROP_SECONDS:g} s, "
            f"batches of {BATCH}, {WORKERS} workers (load average "
            f"{load()})"
        )
        loading(tmp / "shards", rows)
    print(f"\nbenchmark wall time {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
