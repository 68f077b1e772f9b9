"""The verification recipe adds its results to the model card (README.md)
of the pretrained folder it scored: EER, minDCF and the trial count under
the trial list's name, and actDCF and Cllr when the model has a
calibration; the card is replaced atomically, and a folder it cannot write
is a warning, not a failure."""

import shutil
from pathlib import Path

import pytest

from speechbrain_mrmha.inference.card import read_card
from speechbrain_mrmha.inference.pretrained import write_calibration
from speechbrain_mrmha.scoring.calibration import Calibration

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "VoxCeleb1"


@pytest.fixture
def recipe(monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPE))
    from speaker_verification_cosine import main

    def run(data, model, out):
        return main(
            [
                str(RECIPE / "hparams" / "verification.yaml"),
                f"--data_folder={data}",
                f"--pretrained_path={model}",
                f"--output_folder={out}",
            ]
        )

    return run


def test_the_recipe_writes_its_results_into_the_model_card(
    tiny_corpus, tiny_pretrained, tmp_path, recipe
):
    model = tmp_path / "pretrained"
    shutil.copytree(tiny_pretrained, model)
    before = {p.name for p in model.iterdir()}

    metrics = recipe(tiny_corpus.root, model, tmp_path / "raw")
    card = read_card(model)
    assert card["results"] == {
        "veri_test2.txt": {
            "EER": metrics["EER"],
            "minDCF": metrics["minDCF"],
            "trials": metrics["n_trials"],
        }
    }  # no calibration: no actDCF, no Cllr
    text = (model / "README.md").read_text()
    assert text.startswith("---\n") and "veri_test2.txt" in text
    assert {p.name for p in model.iterdir()} == before | {
        "README.md",
        "verification.json",
    }  # no temporary file left

    write_calibration(model, Calibration(slope=8.0, offset=-2.0))
    calibrated = recipe(tiny_corpus.root, model, tmp_path / "calibrated")
    assert calibrated["calibration"] != metrics["calibration"]
    results = read_card(model)["results"]["veri_test2.txt"]
    assert results == {
        key: calibrated[key] for key in ("EER", "minDCF", "actDCF", "Cllr")
    } | {"trials": calibrated["n_trials"]}
    assert "| veri_test2.txt |" in (model / "README.md").read_text()


def test_a_model_card_it_cannot_write_is_a_warning(
    tiny_corpus, tiny_pretrained, tmp_path, recipe, monkeypatch
):
    import speechbrain_mrmha.inference.card as card

    def read_only(path, text, encoding="utf-8"):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(card, "write_text_atomic", read_only)
    model, out = tmp_path / "pretrained", tmp_path / "out"
    shutil.copytree(tiny_pretrained, model)
    card_before = (model / "README.md").read_text()  # written with the model
    metrics = recipe(tiny_corpus.root, model, out)
    assert "EER" in metrics and (out / "scores.txt").is_file()
    assert (model / "README.md").read_text() == card_before
    log = (out / "log.txt").read_text()
    assert f"the model card was not updated in {model}" in log
    assert "Permission denied" in log
