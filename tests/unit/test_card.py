"""The model card of a pretrained folder: Hugging Face's convention (YAML
front matter, then text), made from the folder itself, and updated by
later results without losing what it held."""

from pathlib import Path

import yaml

from speechbrain_mrmha.inference.card import (
    CARD_FILE,
    describe_model,
    read_card,
    write_model_card,
)


def front_matter(path):
    text = Path(path).read_text()
    assert text.startswith("---\n")
    front, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(front), body


def test_the_card_describes_the_folder_it_is_in(tiny_pretrained, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_pretrained, tmp_path / "model")
    described = describe_model(folder)
    assert described["encoder"] == "ResNet34"
    assert described["pooling"] == "MultiResolutionMultiHeadAttentionPooling"
    assert described["heads"] == 2
    path = write_model_card(
        folder,
        training={
            "hparams_file": "mrmha.yaml",
            "overrides": {"num_heads": 2},
            "classes": 2,
        },
    )
    front, body = front_matter(path)
    assert front["library_name"] == "speechbrain"
    assert "model-index" not in front  # nothing scored yet
    assert (
        front["speechbrain_mrmha"]["training"]["hparams_file"] == "mrmha.yaml"
    )
    for words in ("ResNet34", "2 heads", "mrmha.yaml", "--num_heads=2"):
        assert words in body
    assert "from_hparams" in body and "python -m speechbrain_mrmha" in body
    assert "Wang" in body and "ICASSP" in body
    assert "Not scored yet" in body
    assert (
        sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))
        == []
    )


def test_results_are_added_per_trial_list_and_training_is_kept(tmp_path):
    (tmp_path / "hyperparams.yaml").write_text(
        "embedding_model: !new:speechbrain_mrmha.layers.resnet.ResNet34\n"
        "  pooling: !name:speechbrain_mrmha.layers.pooling.AttentiveStatisticsPooling\n"
    )
    write_model_card(tmp_path, training={"hparams_file": "a.yaml"})
    o = {"EER": 4.2, "minDCF": 0.4, "actDCF": 0.5, "Cllr": 0.3, "trials": 10}
    write_model_card(tmp_path, results={"veri_test2.txt": o})
    write_model_card(tmp_path, results={"list_test_hard2.txt": {"EER": 7.5}})
    front, body = front_matter(tmp_path / CARD_FILE)
    card = read_card(tmp_path)
    assert card["training"] == {"hparams_file": "a.yaml", "overrides": {}}
    assert set(card["results"]) == {"veri_test2.txt", "list_test_hard2.txt"}
    (entry,) = front["model-index"]
    by_list = {r["dataset"]["name"]: r["metrics"] for r in entry["results"]}
    eer = {m["type"]: m["value"] for m in by_list["veri_test2.txt"]}
    assert eer == {"eer": 4.2, "min_dcf": 0.4, "act_dcf": 0.5, "cllr": 0.3}
    assert "| veri_test2.txt | 10 | 4.2 | 0.4 | 0.5 | 0.3 |" in body


def test_a_calibrated_folder_says_so(tmp_path):
    import json

    (tmp_path / "hyperparams.yaml").write_text("seed: 1\n")
    from speechbrain_mrmha.scoring.calibration import Calibration

    calibration = Calibration(12.5, -3.25, statistics={"n_speakers": 5})
    (tmp_path / "calibration.json").write_text(
        json.dumps(calibration.to_dict())
    )
    _, body = front_matter(write_model_card(tmp_path))
    assert "llr = 12.5000 s -3.2500" in body and "5 held-out speakers" in body


def test_every_pretrained_folder_gets_its_card_without_machine_paths(tmp_path):
    from speechbrain_mrmha.inference.pretrained import example_folder

    folder = example_folder(tmp_path / "model")
    front, body = front_matter(folder / CARD_FILE)
    assert front["speechbrain_mrmha"]["training"]["classes"] == 2
    write_model_card(
        folder,
        training={
            "hparams_file": str(tmp_path / "hparams" / "mrmha.yaml"),
            "overrides": {"data_folder": str(tmp_path / "vox1"), "seed": 3},
        },
    )
    text = (folder / CARD_FILE).read_text()
    assert str(tmp_path) not in text
    assert "`mrmha.yaml` with `--data_folder=vox1 --seed=3`" in text
