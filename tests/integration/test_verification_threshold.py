"""The verification recipe records the model's decision threshold in the
pretrained folder it scored (``verification.json``: the EER threshold of the
raw cosine scores, also under score normalisation), atomically, and the
command line then decides by it. A folder it cannot write keeps the run
going, with a warning that names it."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import soundfile
from conftest import run_process

from speechbrain_mrmha.app.cli import main
from speechbrain_mrmha.dataio.trials import read_trials

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "VoxCeleb1"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def verify(data, model, out, extra=()):
    script = RECIPE / "speaker_verification_cosine.py"
    hparams = RECIPE / "hparams" / "verification.yaml"
    run_process(
        [sys.executable, script, hparams, f"--data_folder={data}"]
        + [f"--pretrained_path={model}", f"--output_folder={out}", *extra],
        cwd=RECIPE,
        env=ENV,
    )
    return json.loads((out / "metrics.json").read_text())


def cohort_csv(corpus, path):
    """An annotation CSV of every corpus file, speaker = its id folder."""
    rows = ["ID,duration,wav,spk_id"]
    for index, wav in enumerate(sorted(Path(corpus.wav_folder).rglob("*.wav"))):
        seconds = soundfile.info(wav).duration
        speaker = wav.relative_to(corpus.wav_folder).parts[0]
        rows.append(f"u{index},{seconds},{wav},{speaker}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_verification_records_the_raw_cosine_threshold_in_the_model(
    tiny_corpus, tiny_pretrained, tmp_path, capsys
):
    model = tmp_path / "pretrained"
    shutil.copytree(tiny_pretrained, model)
    metrics = verify(tiny_corpus.root, model, tmp_path / "raw")
    recorded = json.loads((model / "verification.json").read_text())
    assert recorded["threshold"] == pytest.approx(metrics["EER_threshold"])
    assert recorded["EER"] == metrics["EER"]
    assert recorded["verification_file"] == metrics["verification_file"]
    assert (
        recorded["verification_file_sha256"]
        == metrics["verification_file_sha256"]
    )
    assert recorded["n_target"] == metrics["n_target"]
    # nothing else is written into the model folder (its card is updated)
    assert sorted(p.name for p in model.iterdir()) == sorted(
        {p.name for p in Path(tiny_pretrained).iterdir()}
        | {"verification.json", "README.md"}
    )

    # under as-norm the run reports normalised scores, the model keeps the
    # threshold of its raw cosine scores
    normalised = verify(
        tiny_corpus.root,
        model,
        tmp_path / "as-norm",
        [
            "--score_norm=as-norm",
            f"--cohort_data={cohort_csv(tiny_corpus, tmp_path / 'c.csv')}",
        ],
    )
    assert normalised["score_norm"] == "as-norm"
    assert normalised["EER_threshold"] != pytest.approx(recorded["threshold"])
    again = json.loads((model / "verification.json").read_text())
    assert again["threshold"] == pytest.approx(recorded["threshold"])

    # the command line decides by it
    trial = read_trials(tiny_corpus.verification_file)[0]
    files = [str(Path(tiny_corpus.wav_folder) / e) for e in trial[1:]]
    assert main(["verify", "--model", str(model), *files]) == 0
    line = capsys.readouterr().out.splitlines()[2]
    assert line.startswith(f"threshold: cosine {recorded['threshold']:.6f}")
    assert str(model / "verification.json") in line


def test_a_model_folder_it_cannot_write_is_a_warning_not_a_failure(
    tiny_corpus, tiny_pretrained, tmp_path, monkeypatch
):
    import speechbrain_mrmha.inference.pretrained as pretrained

    def read_only(path, text, encoding="utf-8"):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pretrained, "write_text_atomic", read_only)
    monkeypatch.syspath_prepend(str(RECIPE))
    from speaker_verification_cosine import main as recipe

    model, out = tmp_path / "pretrained", tmp_path / "out"
    shutil.copytree(tiny_pretrained, model)
    metrics = recipe(
        [
            str(RECIPE / "hparams" / "verification.yaml"),
            f"--data_folder={tiny_corpus.root}",
            f"--pretrained_path={model}",
            f"--output_folder={out}",
        ]
    )
    assert (out / "metrics.json").is_file() and "EER" in metrics
    assert not (model / "verification.json").exists()
    log = (out / "log.txt").read_text()
    assert "the EER threshold was not recorded in" in log
    assert "Permission denied" in log
