#!/usr/bin/env python3
"""Score a VoxCeleb trial list with cosine similarity (optionally s-norm or
adaptive s-norm) using a pretrained folder written by
train_speaker_embeddings.py, loaded through the plugin's ``SpeakerModel``
(SpeechBrain's EncoderClassifier underneath).

To run:
    python speaker_verification_cosine.py hparams/verification.yaml \
        --data_folder=/path/to/VoxCeleb1 --pretrained_path=results/mrmha_K4/pretrained

Writes <output_folder>/scores.txt (enrol test score label; raw cosine, or
normalised with score_norm), metrics.json (EER %, normalised minDCF and
actDCF at p_target 0.01 and 0.05, Cllr and minCllr, which calibration gave
the log-likelihood ratios, trial count, per-head attention entropy, the data
folder, the trial list's sha256) and embeddings.pt, a cache keyed by the
content of each audio file and tied to the model's content, the data folder
and the precision, so that a rerun skips exactly the files embedded before
with the same content. The EER threshold of the raw cosine scores goes into
the pretrained folder itself (verification.json): the decision threshold of
the model when it has no calibration; the results (EER, minDCF, and actDCF
and Cllr when the model has a calibration) go into its card (README.md).

The trial list is checked before any audio is embedded: a list of one
class, a pair labelled both 1 and 0, and entries outside the data folder
(unless allow_outside_data_folder) are refused; duplicate trials are a
warning and a count in metrics.json. Lists of millions of trials are held
as index arrays and their scores written streamed.

Authors
 * speechbrain-mrmha developers
"""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mrmha.dataio.files import content_digest, write_text_atomic
from speechbrain_mrmha.dataio.trials import (
    check_trials,
    cohort_utterances,
    load_trials,
    resolve_trials,
    write_scores,
)
from speechbrain_mrmha.inference.card import write_model_card
from speechbrain_mrmha.inference.model import SpeakerModel
from speechbrain_mrmha.scoring.cosine import (
    cohort_statistics,
    cosine_score_trials,
    normalize_scores,
)
from speechbrain_mrmha.scoring.metrics import (
    calibration_report,
    cllr,
    detection_report,
)
from speechbrain_mrmha.training.runs import hold_run_lock

logger = logging.getLogger(__name__)
SCORE_NORMS = (None, "s-norm", "as-norm")


def score_trials(model, resolved, hparams, cache):
    """Embed every trial file once and score each trial: raw cosine, and
    the scores after ``score_norm`` (the raw ones without it)."""
    names = resolved.names
    enrol_index = torch.from_numpy(resolved.enrol)
    test_index = torch.from_numpy(resolved.test)
    durations = dict(zip(names, resolved.durations.tolist()))
    cached = len(cache.embeddings)
    embedded = model.embed_files(
        names,
        durations,
        cache,
        hparams["batch_seconds"],
        hparams["max_batch_size"],
        progress=True,
    )
    print(
        f"embedded {len(cache.embeddings) - cached} of {len(names)} files "
        f"(the others from {cache.path})"
    )
    embeddings = torch.stack([embedded.embeddings[n] for n in names])
    raw = cosine_score_trials(embeddings, enrol_index, test_index)
    if hparams["score_norm"] is None:
        return raw, raw, embedded.entropies
    cohort = model.embed_cohort(
        cohort_utterances(
            hparams["cohort_data"],
            hparams["data_folder"],
            hparams["cohort_utterances_per_speaker"],
        ),
        cache,
        hparams["batch_seconds"],
        hparams["max_batch_size"],
    )
    top_k = None
    if hparams["score_norm"] == "as-norm":
        top_k = min(hparams["cohort_top_k"], cohort.shape[0])
    mean, std = cohort_statistics(embeddings, cohort, top_k=top_k)
    scores = normalize_scores(raw, enrol_index, test_index, mean, std)
    return raw, scores, embedded.entropies


def trial_llrs(model, resolved, raw, scores, score_norm):
    """The LLRs of the trials, which calibration gave them, and whether it
    was the model's: the model's calibration of the raw cosine scores,
    else the scores as they are."""
    if model.calibration is None:
        return (
            scores,
            "none: the pretrained folder has no calibration.json",
            False,
        )
    if score_norm is not None:
        return (
            scores,
            f"none: calibration.json is of raw cosine scores, not "
            f"{score_norm} scores",
            False,
        )
    seconds = resolved.durations
    durations = torch.from_numpy(
        np.stack([seconds[resolved.enrol], seconds[resolved.test]], axis=1)
    )
    return model.llr(raw, durations), model.calibration_source, True


def update_model_card(model, trials_file, metrics, calibrated, score_norm):
    """Add the results on this trial list to the model card (README.md) of
    the scored folder; a folder that cannot be written is a warning."""
    name = Path(trials_file).name
    if score_norm is not None:
        name = f"{name} ({score_norm})"
    keys = ["EER", "minDCF"] + (["actDCF", "Cllr"] if calibrated else [])
    results = {key: metrics[key] for key in keys}
    results["trials"] = metrics["n_trials"]
    try:
        return write_model_card(model.source, results={name: results})
    except OSError as error:
        logger.warning(
            "the model card was not updated in %s (%s)", model.source, error
        )
        return None


def main(argv):
    """Check the trial list, embed every trial file once, score the trials,
    report EER / minDCF and update the model's card."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    if hparams["score_norm"] not in SCORE_NORMS:
        raise ValueError(
            f"score_norm must be one of {SCORE_NORMS}, got {hparams['score_norm']!r}"
        )
    # read from the pretrained folder itself: no links that could outlive it
    model = SpeakerModel(
        hparams["pretrained_path"],
        device=run_opts.get("device") or "cpu",
        precision=run_opts.get("precision") or "fp32",
        backend="pytorch",
        channels_last=hparams["channels_last"],
    )
    hold_run_lock(hparams["output_folder"], "verification")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    output = Path(hparams["output_folder"])

    # the whole list is checked before any audio is embedded
    trials = load_trials(hparams["verification_file"])
    outside = hparams["allow_outside_data_folder"]
    resolved = resolve_trials(
        trials,
        hparams["data_folder"],
        hparams["enrol_data"],
        hparams["test_data"],
        allow_outside_data_folder=outside,
    )
    checked = check_trials(trials, resolved.enrol, resolved.test)
    # embeddings are cached by audio content, for this model content, data
    # folder and precision: any other starts afresh
    cache = model.cache(output / "embeddings.pt", hparams["data_folder"])
    raw, scores, entropies = score_trials(model, resolved, hparams, cache)

    labels = torch.from_numpy(trials.labels).bool()
    c_miss, c_fa = hparams["c_miss"], hparams["c_fa"]
    metrics = detection_report(scores[labels], scores[~labels], c_miss, c_fa)
    metrics.update(
        n_duplicate_trials=checked.duplicates,
        n_files=len(resolved.names),
        score_norm=hparams["score_norm"],
        precision=model.precision,
        data_folder=str(Path(hparams["data_folder"]).resolve()),
        verification_file=str(hparams["verification_file"]),
        verification_file_sha256=content_digest(hparams["verification_file"]),
        pretrained_path=str(hparams["pretrained_path"]),
    )
    if entropies:
        entropy = torch.stack([entropies[n] for n in resolved.names])
        metrics["entropy_per_head"] = [
            round(float(e), 4) for e in entropy.mean(dim=0)
        ]
    llrs, metrics["calibration"], calibrated = trial_llrs(
        model, resolved, raw, scores, hparams["score_norm"]
    )
    metrics.update(
        calibration_report(llrs[labels], llrs[~labels], c_miss, c_fa)
    )
    # raw cosine taken as an LLR: what calibration improves on
    metrics["Cllr_raw_cosine"] = round(cllr(raw[labels], raw[~labels]), 4)

    write_scores(output / "scores.txt", trials, scores)
    write_text_atomic(
        output / "metrics.json", json.dumps(metrics, indent=2) + "\n"
    )
    # the model's own decision threshold and card, in its folder
    model.record_threshold(
        raw[labels], raw[~labels], hparams["verification_file"]
    )
    update_model_card(
        model,
        hparams["verification_file"],
        metrics,
        calibrated,
        hparams["score_norm"],
    )
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
