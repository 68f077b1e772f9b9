"""Verification of Vox1-O, E and H in one run, at full scale: the scoring
part measured (time and peak memory), the embedding part estimated.

Scoring (no audio): synthetic lists the size of VoxCeleb1's cleaned lists
(Vox1-O 37,611 trials over 4,708 files, Vox1-E 579,818 trials over
145,160 files, Vox1-H 550,894 trials over about 137,000 files: 1,168,323
trials, 145,160 distinct files), random 512-d embeddings and a random
cohort of 6,000 x 512 (VoxCeleb2 has 5,994 training speakers). A fresh
subprocess runs what ``inference.verification.verify_trial_lists`` runs
after embedding, through the plugin's own functions:

* read + check: ``dataio.trial_lists.load_trial_lists`` (parse, outside
  entries, one lookup per distinct entry, ``check_trials`` of each list),
  with the audio-header lookup replaced by "every entry is an 8 s file"
  (``trials.lookup_entries``): the header reads of a real run are extra
  (docs/BENCHMARKS.md: about 66 us a file warm, 0.2 ms cold);
* cosine: ``verification.score_lists`` without a cohort;
* AS-norm: ``score_lists`` with the cohort (top 300) minus the cosine;
* metrics: ``verification.list_metrics`` of the normalised and of the raw
  scores of each list;
* write: ``trials.write_scores`` of each list and ``results_table``.

Peak memory is ``ru_maxrss`` of that subprocess (Python, torch, the lists,
the 145,160 x 512 table), with its RSS after the imports.

Extraction (estimated): a tiny model (the tests' size: channels 4-32, one
block a stage, MRMHA K = 2, 16-d) and, with ``--paper-files``, the
paper-size ResNet-34 (channels 64-512, MRMHA K = 6), untrained, embed a
few real recordings (``bench/_data/tts``, or a synthetic corpus when it is
absent) through ``SpeakerModel.embed_files``; the measured audio-seconds
per second give the time for 145,160 files of VoxCeleb1's mean length
(8.25 s: 352 h over 153,516 files), next to the same estimate at the rates
docs/BENCHMARKS.md measured for the paper-size model ("Embedding
extraction": 33.5 audio s/s fp32, 78.2 bf16, machine X, 2 idle cores).

Usage:
    python bench/verification_lists.py [--threads 1] [--tiny-files 48]
        [--paper-files 3] [--cohort 6000] [--top-k 300]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from extraction import write_model  # bench/: the one model writer

ROOT = Path(__file__).resolve().parents[1]
SPEAKERS, FILES = 1251, 145_160
LISTS = {  # name -> (trials, speakers whose files it uses)
    "veri_test2.txt": (37_611, range(0, 41)),
    "list_test_all2.txt": (579_818, range(0, SPEAKERS)),
    "list_test_hard2.txt": (550_894, range(60, SPEAKERS)),
}
VOX1_MEAN_SECONDS = 352 * 3600 / 153_516
BENCHMARKS_RATES = {  # docs/BENCHMARKS.md, paper-size MRMHA, machine X
    "paper-size fp32 (BENCHMARKS, 2 cores)": 33.5,
    "paper-size bf16 AMX (BENCHMARKS, 2 cores)": 78.2,
}


def rss_mib():
    """Current resident set size (MiB), from /proc."""
    with open("/proc/self/statm") as fin:
        pages = int(fin.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib():
    """Peak resident set size of this process (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def file_names():
    """FILES VoxCeleb-like names, idNNNNN/<video>/<nnnnn>.wav, as evenly
    spread over SPEAKERS speakers as FILES allows; and each one's speaker."""
    speaker = np.arange(FILES) * SPEAKERS // FILES
    names = [
        f"id{10001 + s}/v{(i * 7919) % 99991:05d}x{i % 7}/{i % 97 + 1:05d}.wav"
        for i, s in enumerate(speaker.tolist())
    ]
    return names, speaker


def build_lists(folder, seed=0):
    """Writes the three lists: about half target trials (a file of the same
    speaker), the rest random pairs of the list's files; Vox1-O over the
    first 4,708 files."""
    rng = np.random.default_rng(seed)
    names, speaker = file_names()
    paths = []
    for name, (n_trials, speakers) in LISTS.items():
        pool = np.flatnonzero(np.isin(speaker, list(speakers)))
        if name == "veri_test2.txt":
            pool = pool[:4708]
        of_pool = speaker[pool]  # sorted: each speaker's files in one run
        _, first, counts = np.unique(
            of_pool, return_index=True, return_counts=True
        )
        enrol = rng.integers(0, len(pool), n_trials)
        group = np.searchsorted(np.unique(of_pool), of_pool[enrol])
        same = first[group] + (rng.random(n_trials) * counts[group]).astype(int)
        other = rng.integers(0, len(pool), n_trials)
        test = np.where(rng.integers(0, 2, n_trials) == 1, same, other)
        enrol, test = pool[enrol], pool[test]
        labels = (speaker[enrol] == speaker[test]).astype(int)
        path = folder / name
        with open(path, "w") as fout:
            for start in range(0, n_trials, 100_000):
                stop = start + 100_000
                fout.write(
                    "".join(
                        f"{label} {names[e]} {names[t]}\n"
                        for label, e, t in zip(
                            labels[start:stop].tolist(),
                            enrol[start:stop].tolist(),
                            test[start:stop].tolist(),
                        )
                    )
                )
        paths.append(path)
    return paths


def child_scoring(folder, threads, cohort_size, top_k, dim):
    """Runs the scoring part on the lists of ``folder``; prints JSON."""
    import torch

    torch.set_num_threads(threads)
    from types import SimpleNamespace

    from speechbrain_mrmha.dataio import trials as trials_module
    from speechbrain_mrmha.dataio.trial_lists import load_trial_lists
    from speechbrain_mrmha.dataio.trials import write_scores
    from speechbrain_mrmha.inference.verification import (
        list_metrics,
        results_table,
        score_lists,
    )

    def no_audio(entries, data_folder, annotation=None):
        return {e: (e, 8.0) for e in dict.fromkeys(entries)}, []

    trials_module.lookup_entries = no_audio
    base = rss_mib()
    times = {}
    paths = [folder / name for name in LISTS]

    start = time.perf_counter()
    checked = load_trial_lists(paths, folder)
    times["read + check"] = time.perf_counter() - start
    after_lists = rss_mib()

    generator = torch.Generator().manual_seed(0)
    table = torch.randn(len(checked.files), dim, generator=generator)
    cohort = torch.randn(cohort_size, dim, generator=generator)

    start = time.perf_counter()
    raw_only = score_lists(checked, table)
    times["cosine"] = time.perf_counter() - start
    del raw_only
    start = time.perf_counter()
    scored = score_lists(checked, table, cohort, top_k)
    times["AS-norm"] = time.perf_counter() - start - times["cosine"]
    del table

    start = time.perf_counter()
    model = SimpleNamespace(calibration=None)
    results = {"score_norm": "as-norm", "lists": {}}
    for checked_list, (raw, scores) in zip(checked.lists, scored):
        args = (model, checked_list, checked.durations, raw)
        metrics = list_metrics(*args, scores, "as-norm", 1.0, 1.0)
        metrics["raw"] = list_metrics(*args, raw, None, 1.0, 1.0)
        results["lists"][checked_list.name] = metrics
    times["metrics"] = time.perf_counter() - start

    start = time.perf_counter()
    for checked_list, (_, scores) in zip(checked.lists, scored):
        write_scores(
            folder / f"scores_{checked_list.name}", checked_list.trials, scores
        )
    table_text = results_table(results)
    times["write"] = time.perf_counter() - start
    print(
        json.dumps(
            {
                "trials": {c.name: len(c.trials) for c in checked.lists},
                "files": {c.name: len(c.files()) for c in checked.lists},
                "union_files": len(checked.files),
                "seconds": {k: round(v, 2) for k, v in times.items()},
                "rss_after_imports_mib": round(base),
                "rss_after_lists_mib": round(after_lists),
                "peak_mib": round(peak_mib()),
                "table": table_text,
            }
        )
    )


def audio_files(count, scratch):
    """``count`` real recordings: bench/_data/tts, else a synthetic corpus."""
    found = sorted((ROOT / "bench" / "_data" / "tts" / "wav").rglob("*.wav"))
    if len(found) < count:
        from speechbrain_mrmha.app.synthetic import generate_corpus

        corpus = generate_corpus(
            str(Path(scratch) / "corpus"),
            speakers=max(3, count // 8 + 1),
            utterances=4,
            min_duration=3.0,
            max_duration=6.0,
            num_workers=1,
        )
        found = sorted(Path(corpus.wav_folder).rglob("*.wav"))
    step = max(1, len(found) // count)
    return [str(p) for p in found[::step][:count]]


def child_extraction(threads, tiny_files, paper_files):
    """Audio seconds per second of a tiny and a paper-size model embedding
    real files through SpeakerModel.embed_files; prints JSON."""
    import soundfile
    import torch

    torch.set_num_threads(threads)
    from speechbrain_mrmha.inference.model import SpeakerModel

    rates = {}
    with tempfile.TemporaryDirectory() as scratch:
        sizes = {
            "tiny (channels 4-32, K=2, 16-d)": (
                [4, 8, 16, 32],
                [1, 1, 1, 1],
                2,
                16,
                tiny_files,
            ),
            "paper-size (channels 64-512, K=6, 512-d)": (
                [64, 128, 256, 512],
                [3, 4, 6, 3],
                6,
                512,
                paper_files,
            ),
        }
        for name, (channels, blocks, heads, dim, count) in sizes.items():
            if count < 1:
                continue
            files = audio_files(count, scratch)
            seconds = {f: soundfile.info(f).duration for f in files}
            folder = write_model(
                Path(scratch) / name.split()[0],
                channels=channels,
                block_counts=blocks,
                num_heads=heads,
                emb_dim=dim,
            )
            model = SpeakerModel(folder)
            model.embed_files(files[:1], seconds)  # loads the model
            cache = model.cache(None, None)  # in memory, empty
            start = time.perf_counter()
            model.embed_files(files, seconds, cache)
            wall = time.perf_counter() - start
            audio = sum(seconds.values())
            rates[name] = {
                "files": len(files),
                "audio_seconds": round(audio, 1),
                "wall_seconds": round(wall, 2),
                "audio_s_per_s": round(audio / wall, 1),
            }
    print(json.dumps(rates))


def run_child(*args):
    """This script in a fresh process; its last line parsed as JSON."""
    done = subprocess.run(
        [sys.executable, __file__, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def hours(seconds):
    return f"{seconds / 3600:.1f} h"


def main(argv=None):
    """Build the lists, run both parts in subprocesses, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cohort", type=int, default=6000)
    parser.add_argument("--top-k", type=int, default=300)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--tiny-files", type=int, default=48)
    parser.add_argument("--paper-files", type=int, default=3)
    parser.add_argument("--child", choices=["scoring", "extraction"])
    parser.add_argument("--folder")
    args = parser.parse_args(argv)
    if args.child == "scoring":
        child_scoring(
            Path(args.folder), args.threads, args.cohort, args.top_k, args.dim
        )
        return
    if args.child == "extraction":
        child_extraction(args.threads, args.tiny_files, args.paper_files)
        return

    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        paths = build_lists(Path(folder))
        size = sum(p.stat().st_size for p in paths) / 2**20
        print(
            f"built {sum(t for t, _ in LISTS.values()):,} trials in 3 lists "
            f"({size:.0f} MiB) in {time.perf_counter() - start:.0f} s"
        )
        scoring = run_child(
            "--child=scoring",
            f"--folder={folder}",
            f"--threads={args.threads}",
            f"--cohort={args.cohort}",
            f"--top-k={args.top_k}",
            f"--dim={args.dim}",
        )
    print("\n## Scoring, measured")
    for name, count in scoring["trials"].items():
        print(
            f"- {name}: {count:,} trials over {scoring['files'][name]:,} files"
        )
    print(f"- union: {scoring['union_files']:,} files, embedded once")
    print(f"- cohort {args.cohort:,} x {args.dim}, AS-norm top {args.top_k}\n")
    print("| stage | s |\n|---|---|")
    for stage, seconds in scoring["seconds"].items():
        print(f"| {stage} | {seconds} |")
    print(f"| total | {round(sum(scoring['seconds'].values()), 1)} |")
    print(
        f"\npeak RSS {scoring['peak_mib']:,} MiB (after imports "
        f"{scoring['rss_after_imports_mib']:,} MiB, after the lists "
        f"{scoring['rss_after_lists_mib']:,} MiB)\n"
    )
    print(scoring["table"])

    rates = run_child(
        "--child=extraction",
        f"--threads={args.threads}",
        f"--tiny-files={args.tiny_files}",
        f"--paper-files={args.paper_files}",
    )
    audio = FILES * VOX1_MEAN_SECONDS
    print(
        f"## Extraction of {FILES:,} files, ESTIMATED ({audio / 3600:.0f} h "
        f"of audio at VoxCeleb1's mean {VOX1_MEAN_SECONDS:.2f} s a file)\n"
    )
    print("| model, rate from | measured on | audio s/s | estimate |")
    print("|---|---|---|---|")
    for name, rate in rates.items():
        print(
            f"| {name}, measured here ({args.threads} thread(s), machine "
            f"loaded) | {rate['files']} files, {rate['audio_seconds']} s "
            f"in {rate['wall_seconds']} s | {rate['audio_s_per_s']} | "
            f"{hours(audio / rate['audio_s_per_s'])} |"
        )
    for name, rate in BENCHMARKS_RATES.items():
        print(f"| {name} | 241 s of audio | {rate} | {hours(audio / rate)} |")


if __name__ == "__main__":
    main()
