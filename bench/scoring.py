"""Benchmark of speechbrain_mrmha.scoring.metrics against its peers, in one run.

1. EER and minDCF on synthetic cosine-like scores at the sizes of the
   VoxCeleb1-O (37,611 trials) and VoxCeleb1-E (581,480 trials) lists, ours
   against ``speechbrain.utils.metric_stats``. SpeechBrain's functions run in
   a subprocess that is abandoned after ``--timeout`` seconds and capped at
   ``--memory-gib`` of address space; where both finish, the values must be
   identical.
2. Cosine + AS-norm scoring of a Vox1-O-sized trial list (4,708 files, 512-d
   embeddings, 37,611 trials, a cohort of 1,211 speaker means) against a
   per-trial loop in the style of SpeechBrain's verification recipe, the loop
   timed on a subset of trials and extrapolated.

Usage:
    python bench/scoring.py [--timeout 60] [--memory-gib 16]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import speechbrain_mrmha.scoring.cosine as cosine
import speechbrain_mrmha.scoring.metrics as scoring

SIZES = {"Vox1-O": 37611, "Vox1-E": 581480}

PEER_CODE = """
import json, resource, sys, time, torch
from speechbrain.utils import metric_stats
cap = int(sys.argv[3]) * 2**30
if cap > 0:
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
pos, neg = torch.load(sys.argv[1])
start = time.perf_counter()
try:
    value = getattr(metric_stats, sys.argv[2])(pos, neg)
except (MemoryError, RuntimeError) as error:
    text = str(error)
    if isinstance(error, MemoryError) or "can't allocate" in text:
        text = "out of memory under the %s GiB cap" % sys.argv[3]
    print(json.dumps({"error": text[:120]}))
else:
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "value": list(value)}))
"""


def synthetic_scores(n_trials, seed=0):
    """Cosine-like float32 scores, half of them target trials."""
    g = torch.Generator().manual_seed(seed)
    n_pos = n_trials // 2
    pos = (0.55 + 0.15 * torch.randn(n_pos, generator=g)).clamp(-1, 1)
    neg = (0.05 + 0.12 * torch.randn(n_trials - n_pos, generator=g)).clamp(
        -1, 1
    )
    return pos, neg


def best_time(function, repeats):
    """Smallest wall time of `repeats` calls and the last result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def run_peer(path, name, timeout, memory_gib):
    """SpeechBrain's metric in a subprocess; a dict with seconds/value/error."""
    command = [sys.executable, "-c", PEER_CODE, path, name, str(memory_gib)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0][:80]}"}
    return json.loads(lines[-1])


def bench_metrics(timeout, memory_gib):
    """Rows of the EER / minDCF comparison."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, n_trials in SIZES.items():
            pos, neg = synthetic_scores(n_trials)
            path = os.path.join(folder, f"{label}.pt")
            torch.save((pos, neg), path)
            for name in ("EER", "minDCF"):
                function = getattr(scoring, name)
                ours_s, ours = best_time(
                    lambda f=function, p=pos, n=neg: f(p, n), 10
                )
                peer = run_peer(path, name, timeout, memory_gib)
                if "error" in peer:
                    peer_text, ratio, same = peer["error"], "n/a", "n/a"
                else:
                    peer_text = f"{peer['seconds']:.2f} s"
                    ratio = f"{peer['seconds'] / ours_s:.0f}x"
                    same = "yes" if tuple(peer["value"]) == ours else "NO"
                rows.append(
                    (
                        f"{name} {label} ({n_trials:,} trials)",
                        f"{ours_s:.3f} s",
                        peer_text,
                        ratio,
                        same,
                        f"{ours[0]:.6f} @ {ours[1]:.6f}",
                    )
                )
                print(" | ".join(rows[-1]), flush=True)
    return rows


def loop_peer(embeddings, cohort, enrol_index, test_index, top_k):
    """Per-trial cosine + AS-norm, as SpeechBrain's recipe does per trial."""
    out = []
    for e, t in zip(enrol_index.tolist(), test_index.tolist()):
        enrol, test = embeddings[e], embeddings[t]
        score = F.cosine_similarity(enrol, test, dim=0)
        e_c = F.cosine_similarity(enrol[None].expand_as(cohort), cohort, dim=1)
        t_c = F.cosine_similarity(test[None].expand_as(cohort), cohort, dim=1)
        e_c = torch.topk(e_c, k=top_k).values
        t_c = torch.topk(t_c, k=top_k).values
        out.append(
            0.5
            * (
                (score - e_c.mean()) / e_c.std()
                + (score - t_c.mean()) / t_c.std()
            )
        )
    return torch.stack(out)


def bench_cosine(
    n_files=4708,
    dim=512,
    n_trials=37611,
    n_cohort=1211,
    top_k=300,
    loop_trials=1000,
):
    """Rows of the cosine + AS-norm throughput comparison."""
    g = torch.Generator().manual_seed(1)
    embeddings = torch.randn(n_files, dim, generator=g)
    cohort = torch.randn(n_cohort, dim, generator=g)
    enrol_index = torch.randint(0, n_files, (n_trials,), generator=g)
    test_index = torch.randint(0, n_files, (n_trials,), generator=g)

    def ours():
        scores = cosine.cosine_score_trials(embeddings, enrol_index, test_index)
        mean, std = cosine.cohort_statistics(embeddings, cohort, top_k=top_k)
        return cosine.normalize_scores(
            scores, enrol_index, test_index, mean, std
        )

    ours_s, normalized = best_time(ours, 5)
    cos_s, _ = best_time(
        lambda: cosine.cosine_score_trials(embeddings, enrol_index, test_index),
        5,
    )
    peer_s, peer = best_time(
        lambda: loop_peer(
            embeddings,
            cohort,
            enrol_index[:loop_trials],
            test_index[:loop_trials],
            top_k,
        ),
        1,
    )
    max_diff = (peer - normalized[:loop_trials]).abs().max().item()
    peer_rate = loop_trials / peer_s
    ours_rate = n_trials / ours_s
    rows = [
        (
            f"cosine only, {n_trials:,} trials",
            f"{cos_s:.3f} s",
            f"{n_trials / cos_s:,.0f}",
            "",
            "",
        ),
        (
            f"cosine + AS-norm (top {top_k} of {n_cohort:,}), {n_trials:,} "
            f"trials, {n_files:,} files x {dim}",
            f"{ours_s:.3f} s",
            f"{ours_rate:,.0f}",
            f"{peer_rate:,.0f} (timed on {loop_trials:,} trials, "
            f"extrapolated {n_trials / peer_rate:.0f} s)",
            f"{ours_rate / peer_rate:.0f}x (max diff {max_diff:.1e})",
        ),
    ]
    for row in rows:
        print(" | ".join(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds before a SpeechBrain run is abandoned",
    )
    parser.add_argument(
        "--memory-gib",
        type=int,
        default=16,
        help="address-space cap of the SpeechBrain runs "
        "(0: none; uncapped, SpeechBrain's minDCF at Vox1-O "
        "peaks near 19 GB)",
    )
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} CPU cores, {platform.processor() or ''}"
        f" torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("metric | ours | SpeechBrain | speed-up | identical | value @ thr")
    bench_metrics(args.timeout, args.memory_gib)
    print("scoring | ours | ours trials/s | per-trial loop trials/s | ratio")
    bench_cosine()


if __name__ == "__main__":
    main()
