#!/usr/bin/env python3
"""Score VoxCeleb trial lists with cosine similarity (optionally s-norm or
adaptive s-norm) using a pretrained folder written by
train_speaker_embeddings.py, loaded through the plugin's ``SpeakerModel``
(SpeechBrain's EncoderClassifier underneath).

To run:
    python speaker_verification_cosine.py hparams/verification.yaml \
        --data_folder=/path/to/VoxCeleb1 --pretrained_path=results/mrmha_K4/pretrained \
        [--verification_lists=auto]

One list (``verification_file``, Vox1-O by default), or several at once
(``verification_lists``: files, or ``auto`` for every VoxCeleb1 list in
<data_folder>/meta/): every list is checked before any audio is embedded,
each file of their union is embedded once, and the cohort statistics of
score normalisation are computed once. The work is the plugin's
(``speechbrain_mrmha.inference.verification.verify_trial_lists``), which
writes into <output_folder>:

* one list: scores.txt (enrol test score label; raw cosine, or normalised
  with score_norm) and metrics.json (EER %, normalised minDCF and actDCF at
  p_target 0.01 and 0.05, Cllr and minCllr, which calibration gave the
  log-likelihood ratios, trial count, per-head attention entropy, the data
  folder, the trial list's sha256);
* several lists: scores_<list>.txt each;
* always results.json (the metrics of every list) and results.md (one
  table: a row per list), and embeddings.pt, a cache keyed by the content
  of each audio file and tied to the model's content, the data folder and
  the precision, so that a rerun skips exactly the files embedded before.

The EER threshold of the raw cosine scores of the first list goes into the
pretrained folder itself (verification.json): the decision threshold of
the model when it has no calibration; the results of every list go into
its card (README.md).

Authors
 * speechbrain-mrmha developers
"""

import json
import sys
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mrmha.dataio.trial_lists import find_trial_lists
from speechbrain_mrmha.inference.model import SpeakerModel
from speechbrain_mrmha.inference.verification import (
    ScoreNorm,
    check_score_norm,
    verify_trial_lists,
)
from speechbrain_mrmha.training.runs import hold_run_lock


def trial_lists(hparams):
    """The trial lists to score: verification_lists (files, or "auto": the
    VoxCeleb1 lists in <data_folder>/meta), else verification_file."""
    lists = hparams["verification_lists"]
    if lists is None:
        return [hparams["verification_file"]]
    if lists == "auto":
        return find_trial_lists(Path(hparams["data_folder"]) / "meta")
    if isinstance(lists, (str, Path)) or not lists:
        raise ValueError(
            f"verification_lists must be a list of files or 'auto', got "
            f"{lists!r}"
        )
    return list(lists)


def main(argv):
    """Check the trial lists, embed every file once, score every list,
    report and update the model's card. Returns the metrics of the list
    (one list) or the results of every list (several)."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_score_norm(hparams["score_norm"])
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
    score_norm = ScoreNorm.from_annotation(  # None without score_norm
        hparams["score_norm"],
        hparams["cohort_data"],
        hparams["cohort_data_folder"],
        hparams["cohort_utterances_per_speaker"],
        hparams["cohort_top_k"],
    )
    verified = verify_trial_lists(
        model,
        trial_lists(hparams),
        hparams["data_folder"],
        hparams["output_folder"],
        score_norm,
        enrol_data=hparams["enrol_data"],
        test_data=hparams["test_data"],
        allow_outside_data_folder=hparams["allow_outside_data_folder"],
        refuse_cohort_overlap=hparams["refuse_cohort_overlap"],
        c_miss=hparams["c_miss"],
        c_fa=hparams["c_fa"],
        batch_seconds=hparams["batch_seconds"],
        max_batch_size=hparams["max_batch_size"],
        progress=True,
    )
    total = verified.n_files + verified.n_cohort_files
    cohort = ""
    if verified.n_cohort_files:
        cohort = f"{verified.n_cohort_files} of them of the cohort; "
    print(
        f"embedded {verified.n_embedded} of {total} files ({cohort}the "
        f"others from {verified.cache})"
    )
    if len(verified.lists) == 1:
        print(json.dumps(verified.lists[0].metrics, indent=2))
        return verified.lists[0].metrics
    output = Path(hparams["output_folder"])
    print((output / "results.md").read_text(encoding="utf-8"))
    return verified.results


if __name__ == "__main__":
    main(sys.argv[1:])
