"""Benchmark: VoxCeleb2 preparation (recipes/VoxCeleb2/voxceleb2_prepare.py)
at the full VoxCeleb2-dev count.

Layout. ``bench/_data/vox2_full/VOX2/dev/aac/idNNNNN/<video>/<nnnnn>.m4a``:
1,092,009 files of 5,994 speakers (182 or 183 each, over 24 videos),
built once by encoding ``--sources`` distinct tiny m4a files (0.5-1.0 s of
synthetic speech, PyAV's AAC encoder, every other one with its moov first)
and hard-linking them into place: a minute to build, a few MB of audio and
145,856 directories. Resumable: a rerun keeps the files already in place,
and ``layout.json`` marks a finished layout, which later runs reuse. As the
1.09 million names are links to a few hundred inodes, the files' content
is always read from the page cache (the real 72 GB tree, read cold, is
bounded by its disk); the directory tree is real, so the scan reads it
from the disk when its entries are not cached (after the layout was
built in another run, or under memory pressure: then it is the slowest
step).

Timed in one run, on all the machine's cores (shared: the load average at
the start is printed):

1. the scan (the preparation's ``_scan``) and the listing digest (a
   ``stat`` per file);
2. the header of every file (``read_headers``, 2 worker processes per
   core): files/s; and the peers, in the same run, in one process, over
   ``--peer-files`` files each: the MP4 box reader (``audio_info``),
   PyAV's ``container_info`` on the same files, and the header of the same
   audio as 16-bit WAV (``audio_info``'s RIFF reader, ``soundfile.info``);
3. ``prepare_voxceleb2(use_shards=False)`` with the headers of step 2
   (scan + digest + splits + CSV writing), then its rerun (skipped);
4. ``write_shards`` of train.csv's rows: the m4a bytes as they are, every
   row (its own header check included; the folder is deleted after, unless
   ``--keep-shards``); FLAC conversion on ``--flac-files`` rows (tiny
   files) extrapolated to every row, and on ``--real-files`` files of
   VoxCeleb2's durations (uniform 4-11.5 s, mean 7.75 s) per audio
   second, extrapolated to its 2,360 h: both labelled as estimates;
5. the peak RSS of this process and of its worker processes.

Usage: python bench/vox2_prepare.py [--sources 300] [--peer-files 20000]
    [--flac-files 20000] [--real-files 200] [--keep-shards]
"""

import argparse
import importlib.util
import json
import os
import platform
import random
import resource
import shutil
import sys
import time
from pathlib import Path

import av
import soundfile

from speechbrain_mrmha.app.synthetic import generate_corpus
from speechbrain_mrmha.dataio.annotation import read_annotation
from speechbrain_mrmha.dataio.audio import audio_info, container_info
from speechbrain_mrmha.dataio.preparation import listing_digest, read_headers
from speechbrain_mrmha.dataio.shards import write_shards

HERE = Path(__file__).resolve().parent
SPEAKERS, FILES, VIDEOS = 5994, 1_092_009, 24
VOX2_HOURS = 2360.0  # the dev set's 1,092,009 files
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def load_prepare():
    path = HERE.parent / "recipes" / "VoxCeleb2" / "voxceleb2_prepare.py"
    spec = importlib.util.spec_from_file_location("voxceleb2_prepare", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["voxceleb2_prepare"] = module
    spec.loader.exec_module(module)
    return module


def encode_sources(folder, count, seconds, seed):
    """``count`` synthetic utterances as m4a (and their WAVs), made once."""
    done = folder / "sources.json"
    if done.is_file():
        return json.loads(done.read_text())
    corpus = generate_corpus(
        str(folder / "synthetic"),
        speakers=max(3, -(-count // 10)),
        videos=2,
        utterances=5,
        min_duration=seconds[0],
        max_duration=seconds[1],
        seed=seed,
        num_workers=1,
    )
    wavs = sorted(Path(corpus.wav_folder).rglob("*.wav"))[:count]
    m4as = []
    for index, wav in enumerate(wavs):
        signal, rate = soundfile.read(wav, dtype="float32")
        path = folder / "m4a" / f"{index:05d}.m4a"
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"movflags": "faststart"} if index % 2 else {}
        with av.open(str(path), "w", format="ipod", options=options) as out:
            stream = out.add_stream("aac", rate=rate, layout="mono")
            frame = av.AudioFrame.from_ndarray(
                signal[None, :], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
        m4as.append(str(path))
    found = {"m4a": m4as, "wav": [str(w) for w in wavs]}
    done.write_text(json.dumps(found))
    return found


def split(total, parts):
    return [total // parts + (i < total % parts) for i in range(parts)]


def build_layout(root, sources, files, speakers):
    """Hard links in the VoxCeleb2 dev layout; kept when already there."""
    marker = root / "layout.json"
    wanted = {"files": files, "speakers": speakers}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return False
    rng, made = random.Random(2), 0
    for s, count in enumerate(split(files, speakers)):
        speaker = root / "dev" / "aac" / f"id{s + 10:05d}"
        for per_video in split(count, VIDEOS):
            video = speaker / "".join(rng.choices(ID_CHARS, k=11))
            video.mkdir(parents=True, exist_ok=True)
            for u in range(per_video):
                try:
                    os.link(
                        sources[made % len(sources)], video / f"{u + 1:05d}.m4a"
                    )
                except FileExistsError:
                    pass
                made += 1
    marker.write_text(json.dumps(wanted))
    return True


def per_file(function, paths):
    """Seconds per call of ``function`` over ``paths`` (one process)."""
    start = time.perf_counter()
    for path in paths:
        function(path)
    return (time.perf_counter() - start) / len(paths)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def folder_bytes(folder):
    return sum(p.stat().st_size for p in Path(folder).glob("shard-*.tar"))


def rss_mb(who):
    return resource.getrusage(who).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=300)
    parser.add_argument("--peer-files", type=int, default=20000)
    parser.add_argument("--flac-files", type=int, default=20000)
    parser.add_argument("--real-files", type=int, default=200)
    parser.add_argument("--keep-shards", action="store_true")
    parser.add_argument("--files", type=int, default=FILES)  # smaller: a try
    parser.add_argument("--speakers", type=int, default=SPEAKERS)
    parser.add_argument("--folder", default=str(HERE / "_data" / "vox2_full"))
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress in a log file
    folder = Path(args.folder)
    root, work = folder / "VOX2", folder / "work"
    prep = load_prepare()
    cores = os.cpu_count()
    print(
        f"machine: {cores} cores, load average {os.getloadavg()[0]:.1f} at "
        f"start, Python {platform.python_version()}, PyAV {av.__version__}"
    )

    sources, seconds = timed(
        encode_sources, folder / "tiny", args.sources, (0.5, 1.0), 3
    )
    built, link_seconds = timed(
        build_layout, root, sources["m4a"], args.files, args.speakers
    )
    state = "built" if built else "reused"
    print(
        f"layout: {args.files:,} files of {args.speakers:,} speakers, links to "
        f"{len(sources['m4a'])} m4a sources of 0.5-1.0 s ({state}: "
        f"{seconds + link_seconds:.0f} s)"
    )

    print("\n1. scan and listing digest")
    aac = str(root / "dev" / "aac")
    files, scan = timed(prep._scan, aac)
    prefix = os.path.join(aac, "")
    _, digest = timed(listing_digest, prefix, files)
    assert len(files) == args.files, len(files)
    print(f"   scan   {scan:7.1f} s  ({len(files) / scan:,.0f} files/s)")
    print(f"   digest {digest:7.1f} s  ({len(files) / digest:,.0f} files/s)")

    print(f"\n2. headers of all {len(files):,} files, {2 * cores} workers")
    paths = [prefix + f for f in files]
    headers, header_seconds = timed(read_headers, paths)
    bad = [h for h in headers if isinstance(h, str)]
    assert not bad, bad[:3]
    print(
        f"   read_headers {header_seconds:7.1f} s  "
        f"({len(paths) / header_seconds:,.0f} files/s)"
    )
    step = max(1, len(paths) // args.peer_files)
    sample = paths[::step][: args.peer_files]
    assert all(audio_info(p) == container_info(p)[:2] for p in sample[:200])
    wavs = (sources["wav"] * (len(sample) // len(sources["wav"]) + 1))[
        : len(sample)
    ]
    peers = {
        "m4a, MP4 box reader (audio_info)": per_file(audio_info, sample),
        "m4a, PyAV container_info": per_file(container_info, sample),
        "same audio as WAV, audio_info (RIFF)": per_file(audio_info, wavs),
        "same audio as WAV, soundfile.info": per_file(soundfile.info, wavs),
    }
    box = peers["m4a, MP4 box reader (audio_info)"]
    print(f"   one process, {len(sample):,} files each, warm cache:")
    for name, value in peers.items():
        print(
            f"   {name:38s} {1e6 * value:8.1f} us/file  "
            f"{value / box:6.2f} x the box reader"
        )
    pyav = peers["m4a, PyAV container_info"] * args.files / cores / 60
    print(
        f"   PyAV for every header: ESTIMATED {pyav:.1f} min on {cores} "
        f"cores (the peer's rate, perfectly parallel), against "
        f"{header_seconds / 60:.1f} min measured"
    )

    print("\n3. prepare_voxceleb2(use_shards=False), headers of step 2")
    save = work / "prepared"
    shutil.rmtree(save, ignore_errors=True)
    prep.read_headers = lambda p, workers=None: headers if p == paths else None
    result, prepare_seconds = timed(
        prep.prepare_voxceleb2, str(root), str(save), use_shards=False
    )
    prep.read_headers = read_headers
    rerun, rerun_seconds = timed(
        prep.prepare_voxceleb2, str(root), str(save), use_shards=False
    )
    assert rerun.skipped
    splits = prepare_seconds - scan - digest
    print(
        f"   scan + digest + splits + CSVs {prepare_seconds:7.1f} s "
        f"(splits + CSVs about {splits:.1f} s)"
    )
    print(f"   rerun (skipped)               {rerun_seconds:7.1f} s")
    print(
        "   total with the headers        "
        f"{prepare_seconds + header_seconds:7.1f} s"
    )

    print("\n4. write_shards of train.csv's rows (1,000 per shard)")
    rows, _ = timed(
        read_annotation, result.train_csv, str(root), check_files=False
    )
    out = work / "shards_m4a"
    shutil.rmtree(out, ignore_errors=True)
    manifest, m4a_seconds = timed(write_shards, rows, out, seed=1986)
    size = folder_bytes(out)
    print(
        f"   m4a bytes, all {len(rows):,} rows: {m4a_seconds:7.1f} s "
        f"({len(rows) / m4a_seconds:,.0f} files/s, {size / 1e9:.1f} GB, "
        f"{len(manifest['shards'])} shards; header check included)"
    )
    if not args.keep_shards:
        shutil.rmtree(out)
    keys = sorted(rows)
    random.Random(0).shuffle(keys)
    subset = {k: rows[k] for k in keys[: args.flac_files]}
    out = work / "shards_flac"
    shutil.rmtree(out, ignore_errors=True)
    _, flac_seconds = timed(
        write_shards, subset, out, seed=1986, audio_format="flac"
    )
    rate = len(subset) / flac_seconds
    print(
        f"   FLAC, {len(subset):,} rows (tiny files): {flac_seconds:7.1f} s "
        f"({rate:,.0f} files/s, "
        f"{folder_bytes(out) / len(subset) / 1e3:.1f} kB/file)"
    )
    print(
        f"   FLAC, all {len(rows):,} rows of tiny files: ESTIMATED "
        f"{len(rows) / rate / 60:.0f} min"
    )
    shutil.rmtree(out)

    real = encode_sources(folder / "real", args.real_files, (4.0, 11.5), 4)
    real_rows = {}
    for i, path in enumerate(real["m4a"]):
        frames, file_rate = audio_info(path)
        real_rows[f"real{i:05d}"] = {
            "wav": path,
            "spk_id": f"s{i % 7}",
            "duration": frames / file_rate,
        }
    audio_seconds = sum(r["duration"] for r in real_rows.values())
    results = {}
    for fmt in (None, "flac"):
        out = work / f"shards_real_{fmt}"
        shutil.rmtree(out, ignore_errors=True)
        _, wall = timed(write_shards, real_rows, out, 100, audio_format=fmt)
        results[fmt] = (wall, folder_bytes(out) / audio_seconds)
        shutil.rmtree(out)
    print(
        f"   real durations: {len(real_rows)} files, "
        f"{audio_seconds / 3600:.2f} h "
        f"of audio:"
    )
    for fmt, (wall, per_second) in results.items():
        speed = audio_seconds / wall
        print(
            f"     {fmt or 'm4a bytes':9s} {wall:6.1f} s = {speed:7.0f} audio "
            f"s per s; VoxCeleb2 dev ESTIMATED {VOX2_HOURS / speed:5.1f} h "
            f"on {cores} cores, {VOX2_HOURS * 3600 * per_second / 1e9:5.0f} GB"
        )
    ratio = results["flac"][0] / results[None][0]
    print(f"     FLAC conversion / m4a bytes: {ratio:.1f} x the time")

    print(
        f"\n5. peak RSS: this process {rss_mb(resource.RUSAGE_SELF):,.0f} MB, "
        f"largest worker {rss_mb(resource.RUSAGE_CHILDREN):,.0f} MB"
    )


if __name__ == "__main__":
    main()
