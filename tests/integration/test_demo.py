"""The demo end to end at toy size: corpus -> two trainings -> scoring ->
figures -> table; a rerun reuses what exists."""

import os
import sys

from conftest import run_process

from speechbrain_mrmha.app.demo import CONFIGS, DEFAULT_CONFIG

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_demo_runs_and_reruns(tmp_path):
    command = [
        sys.executable,
        "-m",
        "speechbrain_mrmha",
        "demo",
        "--output",
        str(tmp_path / "demo"),
        "--speakers",
        "8",
        "--test-speakers",
        "3",
        "--videos",
        "2",
        "--utterances",
        "3",
        "--epochs",
        "1",
        "--channels",
        "[4,8,8,8]",
        "--batch-size",
        "4",
    ]
    first = run_process(command, env=ENV)
    description, models = CONFIGS[DEFAULT_CONFIG]
    mrmha = models[0][0]  # the output folder of the MRMHA model
    for row in (
        "| MRMHA K=6 |",
        "| attentive statistics |",
        "EncoderClassifier.from_hparams",
        "| pooling | EER % | minDCF (p=0.01) | actDCF (p=0.01) | Cllr",
        "Calibration used:",
        f"Compared: MRMHA K=6 vs attentive statistics pooling, both with {description}",
    ):
        assert row in first.stdout
    figures = tmp_path / "demo" / "figures"
    for name in ("attention.png", "det.png", "scores_mrmha.png"):
        assert (figures / name).stat().st_size > 1000
    log = (tmp_path / "demo" / mrmha / "train_log.txt").read_text()
    second = run_process(command, env=ENV)
    assert (
        tmp_path / "demo" / mrmha / "train_log.txt"
    ).read_text() == log  # no retraining
    table = [
        line for line in first.stdout.splitlines() if line.startswith("| MRMHA")
    ]
    assert table == [
        line
        for line in second.stdout.splitlines()
        if line.startswith("| MRMHA")
    ]
