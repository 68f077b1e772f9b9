"""Peak memory and time of scoring and writing a trial list of millions of
trials: the verification recipe's path after embedding, against the old
list-of-strings path, each in a fresh subprocess measured in the same run.

A synthetic trial list (default 3,000,000 trials over 145,000 VoxCeleb-like
file names, half target trials) and random 512-d embeddings stand in for
the corpus (no audio). Each path does what the recipe does after the
embeddings exist:

* ``ours``: ``trials.load_trials`` (int32 / int8 arrays), the checks of
  ``trials.outside_entries`` and ``trials.check_trials``, the embedding
  table, ``cosine.cosine_score_trials`` on the int32 indexes,
  ``metrics.detection_report``, ``metrics.calibration_report`` (the LLRs
  of a model without calibration are its scores), ``metrics.cllr`` of the
  raw cosines, and ``trials.write_scores`` streamed;
* ``old``: the recipe as it was: ``trials.read_trials`` (a list of
  ``Trial`` tuples), entry -> (path, seconds) dicts, ``index_trials`` of
  per-trial path lists, ``trial_labels``, the same metrics with a second
  ``calibration_report``, and ``scores.txt`` joined in memory.

Peak memory is ``ru_maxrss`` of each subprocess (its whole life: Python,
torch, the embeddings), also shown above the RSS after the imports. Both
write ``scores.txt``, whose bytes must be identical.

Usage:
    python bench/trials_scale.py [--trials 3000000] [--files 145000]
        [--dim 512] [--skip-old]
"""

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rss_mib():
    """Current resident set size (MiB), from /proc."""
    with open("/proc/self/statm") as fin:
        pages = int(fin.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib():
    """Peak resident set size of this process (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_trial_list(path, n_trials, n_files, seed):
    """A VoxCeleb-like list: n_files names id1NNNN/<video>/NNNNN.wav over
    n_files // 120 speakers, half target trials (same speaker)."""
    rng = np.random.default_rng(seed)
    per_speaker = 120
    speakers = max(2, n_files // per_speaker)
    names = [
        f"id1{i // per_speaker:04d}/v{(i % per_speaker) // 10:03d}x"
        f"{(i * 7919) % 100000:05d}/{i % 10 + 1:05d}.wav"
        for i in range(speakers * per_speaker)
    ]
    chunk = 500_000
    with open(path, "w") as fout:
        for start in range(0, n_trials, chunk):
            n = min(chunk, n_trials - start)
            labels = rng.integers(0, 2, n)
            speaker = rng.integers(0, speakers, n)
            other = (speaker + rng.integers(1, speakers, n)) % speakers
            enrol = speaker * per_speaker + rng.integers(0, per_speaker, n)
            test_speaker = np.where(labels == 1, speaker, other)
            test = test_speaker * per_speaker + rng.integers(0, per_speaker, n)
            fout.write(
                "".join(
                    f"{label} {names[e]} {names[t]}\n"
                    for label, e, t in zip(
                        labels.tolist(), enrol.tolist(), test.tolist()
                    )
                )
            )
    return len(names)


def embeddings_for(names, dim, seed):
    """Random embeddings: one (n_files, dim) float32 table, as the recipe
    stacks them, with the same rows for the same names in both paths
    (filled by blocks: one table in memory, as in the recipe)."""
    import torch

    rank = np.argsort(np.argsort(np.array(names, dtype=object)))
    table = torch.empty(len(names), dim)
    block = 8192
    where = np.argsort(rank)  # position of each rank
    for start in range(0, len(names), block):
        g = torch.Generator().manual_seed(seed * 1_000_003 + start)
        rows = torch.from_numpy(where[start : start + block])
        table[rows] = torch.randn(len(rows), dim, generator=g)
    return table


def run_ours(trials_file, out, dim, seed):
    """The recipe's path after embedding, as it is now."""
    import torch

    from speechbrain_mrmha.dataio.trials import (
        check_trials,
        load_trials,
        outside_entries,
        write_scores,
    )
    from speechbrain_mrmha.scoring.cosine import cosine_score_trials
    from speechbrain_mrmha.scoring.metrics import (
        calibration_report,
        cllr,
        detection_report,
    )

    times = {}
    start = time.perf_counter()
    trials = load_trials(trials_file)
    assert not outside_entries(trials.names)
    check = check_trials(trials)
    times["read + check"] = time.perf_counter() - start
    embeddings = embeddings_for(trials.names, dim, seed)
    start = time.perf_counter()
    raw = cosine_score_trials(
        embeddings,
        torch.from_numpy(trials.enrol),
        torch.from_numpy(trials.test),
    )
    del embeddings  # the recipe's score_trials returns the scores only
    labels = torch.from_numpy(trials.labels).bool()
    metrics = detection_report(raw[labels], raw[~labels])
    metrics.update(calibration_report(raw[labels], raw[~labels]))
    metrics["Cllr_raw_cosine"] = round(cllr(raw[labels], raw[~labels]), 4)
    times["score + metrics"] = time.perf_counter() - start
    start = time.perf_counter()
    write_scores(Path(out) / "scores.txt", trials, raw)
    times["write scores.txt"] = time.perf_counter() - start
    dtypes = [str(a.dtype) for a in (trials.enrol, trials.test, trials.labels)]
    return metrics, times, {"dtypes": dtypes, "duplicates": check.duplicates}


def run_old(trials_file, out, dim, seed):
    """The recipe's path after embedding as it was: per-trial strings."""
    import torch

    from speechbrain_mrmha.dataio.files import write_text_atomic
    from speechbrain_mrmha.dataio.trials import read_trials, trial_labels
    from speechbrain_mrmha.scoring.cosine import index_trials
    from speechbrain_mrmha.scoring.metrics import (
        calibration_report,
        detection_report,
    )

    times = {}
    start = time.perf_counter()
    trials = read_trials(trials_file)
    enrol = {t.enrol: (t.enrol, 1.0) for t in trials}  # resolve_trials
    test = {t.test: (t.test, 1.0) for t in trials}
    times["read + check"] = time.perf_counter() - start
    start = time.perf_counter()
    names, enrol_index, test_index = index_trials(
        [enrol[t.enrol][0] for t in trials], [test[t.test][0] for t in trials]
    )
    embeddings = embeddings_for(names, dim, seed)
    # cosine_score_trials as it was: a normalised copy of the table
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    raw = torch.empty(len(trials))
    for begin in range(0, len(trials), 16384):
        end = begin + 16384
        raw[begin:end] = torch.einsum(
            "td,td->t",
            torch.index_select(unit, 0, enrol_index[begin:end]),
            torch.index_select(unit, 0, test_index[begin:end]),
        )
    del embeddings, unit
    labels = trial_labels(trials)
    metrics = detection_report(raw[labels], raw[~labels])
    metrics.update(calibration_report(raw[labels], raw[~labels]))
    metrics["Cllr_raw_cosine"] = calibration_report(raw[labels], raw[~labels])[
        "Cllr"
    ]
    times["score + metrics"] = time.perf_counter() - start
    start = time.perf_counter()
    scores = [float(s) for s in raw]
    lines = [
        f"{t.enrol} {t.test} {s:.6f} {int(t.label)}\n"
        for t, s in zip(trials, scores)
    ]
    write_text_atomic(Path(out) / "scores.txt", "".join(lines))
    times["write scores.txt"] = time.perf_counter() - start
    return metrics, times, {}


def child(path_name, trials_file, out, dim, seed):
    """Run one path in this (fresh) process and print its measurements."""
    import torch

    torch.set_num_threads(2)
    import speechbrain_mrmha.scoring.metrics  # noqa: F401  (imports first)

    base = rss_mib()
    start = time.perf_counter()
    run = run_ours if path_name == "ours" else run_old
    metrics, times, extra = run(trials_file, out, dim, seed)
    total = time.perf_counter() - start
    digest = hashlib.sha256((Path(out) / "scores.txt").read_bytes()).hexdigest()
    print(
        json.dumps(
            {
                "path": path_name,
                "peak_mib": round(peak_mib()),
                "after_imports_mib": round(base),
                "seconds": round(total, 1),
                "times": {k: round(v, 1) for k, v in times.items()},
                "scores_bytes": (Path(out) / "scores.txt").stat().st_size,
                "scores_sha256": digest,
                "EER": metrics["EER"],
                "minDCF": metrics["minDCF"],
                **extra,
            }
        )
    )


def main(argv=None):
    """Build the list, run each path in a subprocess, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3_000_000)
    parser.add_argument("--files", type=int, default=145_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-old", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "LIST", "OUT"))
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.dim, args.seed)
        return
    with tempfile.TemporaryDirectory() as tmp:
        trials_file = Path(tmp) / "trials.txt"
        start = time.perf_counter()
        n_files = build_trial_list(
            trials_file, args.trials, args.files, args.seed
        )
        print(
            f"built {args.trials:,} trials over {n_files:,} names "
            f"({trials_file.stat().st_size / 2**20:.0f} MiB) in "
            f"{time.perf_counter() - start:.0f} s"
        )
        results = []
        for name in ("ours",) + (() if args.skip_old else ("old",)):
            out = Path(tmp) / name
            out.mkdir()
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    f"--dim={args.dim}",
                    f"--seed={args.seed}",
                    "--child",
                    name,
                    str(trials_file),
                    str(out),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]))
            (out / "scores.txt").unlink()
    print("\n| path | peak RSS (MiB) | after imports | s | stages (s) |")
    print("|---|---|---|---|---|")
    for r in results:
        stages = ", ".join(f"{k} {v}" for k, v in r["times"].items())
        print(
            f"| {r['path']} | {r['peak_mib']} | {r['after_imports_mib']} | "
            f"{r['seconds']} | {stages} |"
        )
    if len(results) == 2:
        same = results[0]["scores_sha256"] == results[1]["scores_sha256"]
        print(f"\nscores.txt identical: {same}")


if __name__ == "__main__":
    main()
