#!/usr/bin/env python3
"""Score a VoxCeleb trial list with cosine similarity (optionally s-norm or
adaptive s-norm) using a pretrained folder written by
train_speaker_embeddings.py, loaded through EncoderClassifier.

To run:
    python speaker_verification_cosine.py hparams/verification.yaml \
        --data_folder=/path/to/VoxCeleb1 --pretrained_path=results/mrmha_K4/pretrained

Writes <output_folder>/scores.txt (enrol test score label), metrics.json
(EER %, normalised minDCF at p_target 0.01 and 0.05, trial count, per-head
attention entropy) and embeddings.pt, a cache that lets a rerun skip finished files.

Authors
 * speechbrain-mrmha developers
"""

import csv
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import soundfile
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mrmha.export import load_encoder
from speechbrain_mrmha.extraction import EmbeddingCache, embed_files, model_fingerprint
from speechbrain_mrmha.scoring import (
    EER,
    cohort_statistics,
    cosine_score_trials,
    index_trials,
    minDCF,
    normalize_scores,
)
from speechbrain_mrmha.trials import read_trials

SCORE_NORMS = (None, "s-norm", "as-norm")


def check_files(names, wav_folder):
    """Paths and header durations of every trial file; one error listing all
    missing or unreadable files before any embedding work starts."""
    paths, durations, problems = {}, {}, []
    for name in names:
        path = wav_folder / name
        try:
            info = soundfile.info(str(path))
            paths[name], durations[name] = str(path), info.frames / info.samplerate
        except Exception as error:  # missing file or unreadable header
            reason = "missing" if not path.exists() else f"unreadable ({error})"
            problems.append(f"  {path}: {reason}")
    if problems:
        shown = "\n".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise FileNotFoundError(
            f"{len(problems)} of {len(names)} trial files cannot be read:\n{shown}{more}"
        )
    return paths, durations


def cohort_files(cohort_csv, per_speaker):
    """Up to ``per_speaker`` utterances of each training speaker (first rows)."""
    if not Path(cohort_csv).is_file():
        raise FileNotFoundError(
            f"cohort_csv {cohort_csv} does not exist (score_norm needs the "
            "train.csv written by train_speaker_embeddings.py)"
        )
    chosen = defaultdict(list)
    with open(cohort_csv, newline="") as fin:
        for row in csv.DictReader(fin):
            if len(chosen[row["spk_id"]]) < per_speaker:
                chosen[row["spk_id"]].append((row["ID"], row["wav"], float(row["duration"])))
    return chosen


def cohort_embeddings(encoder, hparams, cache):
    """Mean embedding of each cohort speaker, (speakers, emb_dim)."""
    chosen = cohort_files(hparams["cohort_csv"], hparams["cohort_utterances_per_speaker"])
    files = {f"cohort/{i}": w for items in chosen.values() for i, w, _ in items}
    durations = {f"cohort/{i}": d for items in chosen.values() for i, _, d in items}
    embed_files(encoder, files, durations, cache, hparams["batch_seconds"],
                hparams["max_batch_size"], hparams["sample_rate"],
                precision=hparams["precision"])
    return torch.stack([
        torch.stack([cache.embeddings[f"cohort/{i}"] for i, _, _ in items]).mean(dim=0)
        for items in chosen.values()
    ])


def write_atomic(path, text):
    """Write text to path through a temporary file in the same folder."""
    handle, tmp = tempfile.mkstemp(prefix=Path(path).name + ".", suffix=".tmp",
                                   dir=Path(path).parent)
    with os.fdopen(handle, "w") as fout:
        fout.write(text)
    os.replace(tmp, path)


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    if hparams["score_norm"] not in SCORE_NORMS:
        raise ValueError(f"score_norm must be one of {SCORE_NORMS}, got {hparams['score_norm']!r}")
    output = Path(hparams["output_folder"])
    output.mkdir(parents=True, exist_ok=True)

    trials = read_trials(hparams["verification_file"])
    names, enrol_index, test_index = index_trials([t.enrol for t in trials], [t.test for t in trials])
    paths, durations = check_files(names, Path(hparams["data_folder"]) / "wav")

    encoder = load_encoder(hparams["pretrained_path"], savedir=output / "model",
                           device=run_opts.get("device") or "cpu",
                           channels_last=hparams["channels_last"])
    # the cache holds embeddings of one precision: another starts afresh
    hparams["precision"] = run_opts.get("precision") or "fp32"
    fingerprint = model_fingerprint(hparams["pretrained_path"])
    if hparams["precision"] != "fp32":
        fingerprint += f"-{hparams['precision']}"
    cache = EmbeddingCache(output / "embeddings.pt", fingerprint)
    embed_files(encoder, paths, durations, cache, hparams["batch_seconds"],
                hparams["max_batch_size"], hparams["sample_rate"],
                precision=hparams["precision"])
    embeddings = torch.stack([cache.embeddings[n] for n in names])
    scores = cosine_score_trials(embeddings, enrol_index, test_index)

    if hparams["score_norm"] is not None:
        cohort = cohort_embeddings(encoder, hparams, cache)
        top_k = hparams["cohort_top_k"] if hparams["score_norm"] == "as-norm" else None
        if top_k is not None:
            top_k = min(top_k, cohort.shape[0])
        mean, std = cohort_statistics(embeddings, cohort, top_k=top_k)
        scores = normalize_scores(scores, enrol_index, test_index, mean, std)

    labels = torch.tensor([t.label for t in trials], dtype=torch.bool)
    positive, negative = scores[labels], scores[~labels]
    eer, threshold = EER(positive, negative)
    c_miss, c_fa = hparams["c_miss"], hparams["c_fa"]
    dcf, _ = minDCF(positive, negative, c_miss, c_fa, p_target=0.01)
    dcf5, _ = minDCF(positive, negative, c_miss, c_fa, p_target=0.05)
    metrics = {
        "EER": round(100 * float(eer), 4),
        "EER_threshold": float(threshold),
        # normalised by the cost of the best trivial system, as NIST and the
        # VoxCeleb papers report it; SpeechBrain's minDCF returns the raw value
        "minDCF": round(float(dcf) / min(c_miss * 0.01, c_fa * 0.99), 4),
        "minDCF_p0.05": round(float(dcf5) / min(c_miss * 0.05, c_fa * 0.95), 4),
        "minDCF_unnormalized": round(float(dcf), 6),
        "n_trials": len(trials),
        "n_target": int(labels.sum()),
        "n_files": len(names),
        "score_norm": hparams["score_norm"],
        "precision": hparams["precision"],
        "verification_file": str(hparams["verification_file"]),
        "pretrained_path": str(hparams["pretrained_path"]),
    }
    if cache.entropies:
        entropy = torch.stack([cache.entropies[n] for n in names]).mean(dim=0)
        metrics["entropy_per_head"] = [round(float(e), 4) for e in entropy]

    lines = [f"{t.enrol} {t.test} {float(s):.6f} {t.label}" for t, s in zip(trials, scores)]
    write_atomic(output / "scores.txt", "\n".join(lines) + "\n")
    write_atomic(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
