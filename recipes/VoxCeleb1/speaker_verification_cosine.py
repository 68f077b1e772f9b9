#!/usr/bin/env python3
"""Score a VoxCeleb trial list with cosine similarity (optionally s-norm or
adaptive s-norm) using a pretrained folder written by
train_speaker_embeddings.py, loaded through EncoderClassifier.

To run:
    python speaker_verification_cosine.py hparams/verification.yaml \
        --data_folder=/path/to/VoxCeleb1 --pretrained_path=results/mrmha_K4/pretrained

Writes <output_folder>/scores.txt (enrol test score label; raw cosine, or
normalised with score_norm), metrics.json (EER %, normalised minDCF and
actDCF at p_target 0.01 and 0.05, Cllr and minCllr, which calibration gave
the log-likelihood ratios, trial count, per-head attention entropy, the data
folder, the trial list's sha256) and
embeddings.pt, a cache keyed by the content of each audio file and tied to
the model's content, the data folder and the precision, so that a rerun
skips exactly the files embedded before with the same content.

Authors
 * speechbrain-mrmha developers
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mrmha.dataio.annotation import read_annotation
from speechbrain_mrmha.dataio.audio import (
    MIN_SECONDS,
    audio_seconds,
    content_digest,
    write_text_atomic,
)
from speechbrain_mrmha.dataio.trials import read_trials, write_scores
from speechbrain_mrmha.inference.extraction import (
    EmbeddingCache,
    cache_fingerprint,
    check_device,
    embed_files,
)
from speechbrain_mrmha.inference.pretrained import (
    load_calibration,
    load_encoder,
)
from speechbrain_mrmha.scoring.cosine import (
    cohort_statistics,
    cosine_score_trials,
    index_trials,
    normalize_scores,
)
from speechbrain_mrmha.scoring.metrics import (
    EER,
    act_dcf,
    cllr,
    dcf_normalizer,
    min_cllr,
    minDCF,
)
from speechbrain_mrmha.training.runs import hold_run_lock

SCORE_NORMS = (None, "s-norm", "as-norm")
SHOWN = 20


def candidates(entry, data_folder):
    """Where a trial entry may be: under data_folder or data_folder/wav,
    as written or with ".wav" added."""
    names = [entry] if entry.endswith(".wav") else [entry, entry + ".wav"]
    return [
        folder / name
        for folder in (data_folder, data_folder / "wav")
        for name in names
    ]


def resolve_entries(entries, data_folder, annotation=None):
    """Audio path and header duration of each trial entry; one error lists
    every entry that is missing, ambiguous, unreadable or too short."""
    found, problems = lookup(entries, data_folder, annotation)
    raise_problems(problems)
    return found


def raise_problems(problems):
    """One error listing every trial entry that cannot be read."""
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:SHOWN])
        more = (
            f"\n  ... and {len(problems) - SHOWN} more"
            if len(problems) > SHOWN
            else ""
        )
        raise FileNotFoundError(
            f"{len(problems)} trial entries cannot be read:\n{shown}{more}"
        )


def lookup(entries, data_folder, annotation=None):
    """Entry -> (audio path, duration) for the entries found, and the
    problems of the others (missing, ambiguous, unreadable, or shorter than
    io.MIN_SECONDS, from the header or the annotation's duration)."""
    rows = None
    if annotation is not None:
        rows = read_annotation(
            annotation, data_folder, columns=("ID", "duration", "wav")
        )
    found, problems = {}, []
    for entry in dict.fromkeys(entries):
        if rows is not None:
            key = entry if entry in rows else entry.removesuffix(".wav")
            if key not in rows:
                problems.append(f"{entry}: no ID {key!r} in {annotation}")
            elif rows[key]["duration"] < MIN_SECONDS:
                problems.append(
                    f"{entry}: {rows[key]['wav']}: audio too short "
                    f"({rows[key]['duration']:.2f} s in {annotation}, need "
                    f"at least {MIN_SECONDS} s)"
                )
            else:
                found[entry] = (rows[key]["wav"], rows[key]["duration"])
            continue
        paths = [p for p in candidates(entry, Path(data_folder)) if p.is_file()]
        if not paths:
            problems.append(
                f"{entry}: missing (looked for "
                f"{', '.join(map(str, candidates(entry, Path(data_folder))))})"
            )
        elif len({p.resolve() for p in paths}) > 1:
            problems.append(
                f"{entry}: ambiguous ({', '.join(map(str, paths))})"
            )
        else:
            try:
                found[entry] = (str(paths[0]), audio_seconds(paths[0]))
            except ValueError as error:  # names the file
                problems.append(str(error))
    return found, problems


def embed(encoder, durations, cache, hparams):
    """Embeddings (and entropies) of the audio files ``durations`` names,
    with the recipe's batch settings and precision."""
    return embed_files(
        encoder,
        {path: path for path in durations},
        durations,
        cache,
        hparams["batch_seconds"],
        hparams["max_batch_size"],
        hparams["sample_rate"],
        precision=hparams["precision"],
    )


def cohort_embeddings(encoder, hparams, cache):
    """Mean embedding of each cohort speaker, (speakers, emb_dim)."""
    rows = read_annotation(hparams["cohort_data"], hparams["data_folder"])
    chosen = defaultdict(list)
    for row in rows.values():
        if (
            len(chosen[row["spk_id"]])
            < hparams["cohort_utterances_per_speaker"]
        ):
            chosen[row["spk_id"]].append(row)
    durations = {
        row["wav"]: row["duration"]
        for group in chosen.values()
        for row in group
    }
    embeddings, _ = embed(encoder, durations, cache, hparams)
    return torch.stack(
        [
            torch.stack([embeddings[row["wav"]] for row in group]).mean(dim=0)
            for group in chosen.values()
        ]
    )


def main(argv):
    """Embed every trial file once, score the trials, report EER / minDCF."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    if hparams["score_norm"] not in SCORE_NORMS:
        raise ValueError(
            f"score_norm must be one of {SCORE_NORMS}, got {hparams['score_norm']!r}"
        )
    device = check_device(run_opts.get("device") or "cpu")
    hold_run_lock(hparams["output_folder"], "verification")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    output = Path(hparams["output_folder"])

    trials = read_trials(hparams["verification_file"])
    enrol, bad_enrol = lookup(
        [t.enrol for t in trials], hparams["data_folder"], hparams["enrol_data"]
    )
    test, bad_test = lookup(
        [t.test for t in trials], hparams["data_folder"], hparams["test_data"]
    )
    raise_problems(list(dict.fromkeys(bad_enrol + bad_test)))
    names, enrol_index, test_index = index_trials(
        [enrol[t.enrol][0] for t in trials], [test[t.test][0] for t in trials]
    )
    durations = dict([*enrol.values(), *test.values()])

    # read from the pretrained folder itself: no links that could outlive it
    encoder = load_encoder(
        hparams["pretrained_path"],
        device=device,
        channels_last=hparams["channels_last"],
    )
    # embeddings are cached by audio content, for this model content, data
    # folder and precision: any other starts afresh
    hparams["precision"] = run_opts.get("precision") or "fp32"
    fingerprint = cache_fingerprint(
        hparams["pretrained_path"],
        hparams["data_folder"],
        hparams["precision"],
    )
    cache = EmbeddingCache(output / "embeddings.pt", fingerprint)
    cached = len(cache.embeddings)
    embedded, entropies = embed(
        encoder, {n: durations[n] for n in names}, cache, hparams
    )
    print(
        f"embedded {len(cache.embeddings) - cached} of {len(names)} files "
        f"(the others from {output / 'embeddings.pt'})"
    )
    embeddings = torch.stack([embedded[n] for n in names])
    scores = raw_scores = cosine_score_trials(
        embeddings, enrol_index, test_index
    )

    if hparams["score_norm"] is not None:
        cohort = cohort_embeddings(encoder, hparams, cache)
        top_k = (
            hparams["cohort_top_k"]
            if hparams["score_norm"] == "as-norm"
            else None
        )
        if top_k is not None:
            top_k = min(top_k, cohort.shape[0])
        mean, std = cohort_statistics(embeddings, cohort, top_k=top_k)
        scores = normalize_scores(scores, enrol_index, test_index, mean, std)

    metrics = report(hparams, trials, scores, names, entropies)
    metrics.update(
        calibration_metrics(hparams, trials, scores, enrol, test, raw_scores)
    )
    write_scores(output / "scores.txt", trials, scores)
    write_text_atomic(
        output / "metrics.json", json.dumps(metrics, indent=2) + "\n"
    )
    print(json.dumps(metrics, indent=2))
    return metrics


def calibration_metrics(hparams, trials, scores, enrol, test, raw_scores):
    """Cllr, minCllr and normalised actDCF of the trial LLRs: the pretrained
    folder's calibration.json applied to the raw cosine scores when it has
    one (and no score_norm is used), else the scores taken as LLRs as they
    are; ``calibration`` says which."""
    labels = torch.tensor([t.label for t in trials], dtype=torch.bool)
    calibration = load_calibration(hparams["pretrained_path"])
    if calibration is None:
        llrs, used = (
            scores,
            "none: the pretrained folder has no calibration.json",
        )
    elif hparams["score_norm"] is not None:
        llrs, used = (
            scores,
            (
                f"none: calibration.json is of raw cosine scores, not "
                f"{hparams['score_norm']} scores"
            ),
        )
    else:
        durations = torch.tensor(
            [[enrol[t.enrol][1], test[t.test][1]] for t in trials],
            dtype=torch.float64,
        )
        llrs = calibration.llr(raw_scores, durations)
        used = str(Path(hparams["pretrained_path"]) / "calibration.json")
    c_miss, c_fa = hparams["c_miss"], hparams["c_fa"]
    metrics = {
        "calibration": used,
        "Cllr": round(cllr(llrs[labels], llrs[~labels]), 4),
        "minCllr": round(min_cllr(llrs[labels], llrs[~labels]), 4),
        # raw cosine taken as an LLR: what calibration improves on
        "Cllr_raw_cosine": round(
            cllr(raw_scores[labels], raw_scores[~labels]), 4
        ),
    }
    for p_target, key in ((0.01, "actDCF"), (0.05, "actDCF_p0.05")):
        value = act_dcf(llrs[labels], llrs[~labels], p_target, c_miss, c_fa)
        metrics[key] = round(value / dcf_normalizer(p_target, c_miss, c_fa), 4)
    return metrics


def report(hparams, trials, scores, names, entropies):
    """EER, normalised minDCF and the run's settings as a dict: the data
    folder, the trial list and its sha256, the pretrained folder."""
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
        "data_folder": str(Path(hparams["data_folder"]).resolve()),
        "verification_file": str(hparams["verification_file"]),
        "verification_file_sha256": content_digest(
            hparams["verification_file"]
        ),
        "pretrained_path": str(hparams["pretrained_path"]),
    }
    if entropies:
        entropy = torch.stack([entropies[n] for n in names]).mean(dim=0)
        metrics["entropy_per_head"] = [round(float(e), 4) for e in entropy]
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
