"""The recipe's options beyond the paper: speed-perturbed copies are new
speakers (label k + n * j, n_classes x 3, exported consistently), feature
masking only in training, the step schedules as logged, and fine-tuning
from a pretrained folder. The pieces themselves (crops, masks, schedules)
are tested on their own in tests/unit/test_training_*.py."""

import math
import re

import pytest
import torch
from test_recipe import RECIPE, train

from speechbrain_mrmha.training.crops import RandomCrops


@pytest.fixture
def recipe(monkeypatch):
    """The training script as a module."""
    monkeypatch.syspath_prepend(str(RECIPE))
    import train_speaker_embeddings

    return train_speaker_embeddings


def test_speed_copies_are_new_speakers(recipe, tmp_path):
    """Copy j of speaker k (speed speeds[j], j = 0 the original) gets label
    k + n * j from the script's dataio_prep, its crop has the length of an
    unperturbed one, and the label encoder names every class."""
    import soundfile

    speakers = ["id1", "id2"]
    rows = {}
    for speaker in speakers:
        for i in range(6):
            wav = tmp_path / f"{speaker}_{i}.wav"
            soundfile.write(wav, torch.randn(32000).numpy() * 0.1, 16000)
            rows[f"{speaker}_{i}"] = {
                "wav": str(wav),
                "duration": 2.0,
                "spk_id": speaker,
            }
    crops = RandomCrops(5, 1.0, 16000, speeds=[1.0, 0.9, 1.1])
    train_data, valid_data, encoder = recipe.dataio_prep(
        {"crops": crops}, rows, rows, speakers
    )
    assert len(encoder) == 6
    assert encoder.encode_label("id2@speed1.1") == 1 + 2 * 2
    seen = set()
    for epoch in (1, 2, 3):
        crops.epoch = epoch
        for item in train_data:
            j = crops.copy(item["id"])
            k = speakers.index(rows[item["id"]]["spk_id"])
            assert int(item["spk_id_encoded"]) == k + 2 * j
            assert item["sig"].shape == (16000,)
            seen.add(j)
    assert seen == {0, 1, 2}
    for item in valid_data:  # validation reads the originals
        assert int(item["spk_id_encoded"]) < 2


def test_masking_only_in_training(recipe, tmp_path):
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.dataio.batch import PaddedBatch

    with open(RECIPE / "hparams" / "mrmha_modern.yaml") as fin:
        hparams = load_hyperpyyaml(
            fin,
            {
                "data_folder": str(tmp_path),
                "output_folder": str(tmp_path / "out"),
                "channels": [4, 8, 8, 8],
                "block_counts": [1, 1, 1, 1],
                "emb_dim": 16,
                "n_classes": 6,
                "spec_augment": True,
            },
        )
    assert hparams["wav_augment"] is None and hparams["spec_augment"]
    hparams["step_schedules"].start(steps_per_epoch=10)
    calls = []
    original = hparams["feature_masking"]

    def counting(feats, lengths, step):
        calls.append(step)
        return original(feats, lengths, step)

    hparams["feature_masking"] = counting
    brain = recipe.SpeakerBrain(
        modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"}
    )
    batch = PaddedBatch(
        [
            {
                "id": "a",
                "sig": torch.randn(16000),
                "spk_id_encoded": torch.tensor([1]),
            },
            {
                "id": "b",
                "sig": torch.randn(12000),
                "spk_id_encoded": torch.tensor([2]),
            },
        ]
    )
    import speechbrain as sb

    brain.modules.eval()
    with torch.no_grad():
        brain.compute_forward(batch, sb.Stage.VALID)
        brain.compute_forward(batch, sb.Stage.TEST)
        assert not calls
        brain.compute_forward(batch, sb.Stage.TRAIN)
    assert calls == [0]  # the masks of optimizer step 0


def log_value(line, key):
    return float(re.search(rf"{key}: ([0-9.e+-]+)", line).group(1))


def test_modern_training_schedules_export_and_fine_tuning(
    tiny_corpus, tmp_path
):
    """Tiny mrmha_modern.yaml run: the logged learning rate and margin are
    the formulas at the epoch's last step, the pretrained folder has 3 n
    classes in classifier and label encoder; a fine-tuning run from it
    starts from its weights (checked with a learning rate too small to move
    them)."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    from speechbrain_mrmha.dataio.annotation import read_annotation

    output = tmp_path / "modern"
    extra = [
        "--calibration_annotation=null",
        "--num_heads=2",
        "--speed_perturb=True",  # off in the yaml by measurement
        "--spec_augment=True",
        "--margin_warmup_start_fraction=0.25",
        "--margin_warmup_end_fraction=0.75",
        "--lr_warmup_fraction=0.5",
        "--lr_decay_fraction=0.5",
    ]
    train(tiny_corpus, output, yaml="mrmha_modern.yaml", epochs=2, extra=extra)
    rows = read_annotation(output / "prepared" / "train.csv")
    speakers = {row["spk_id"] for row in rows.values()}
    steps = len(rows) // 4  # batch 4, drop_last
    total, lr, lr_final, margin = 2 * steps, 0.002, 0.0001, 0.2
    log = (output / "train_log.txt").read_text().splitlines()
    for epoch, line in enumerate(log, start=1):
        step = epoch * steps - 1  # the epoch's last optimizer step
        cosine = 0.5 * (
            1 + math.cos(math.pi * (step - steps) / (total - steps))
        )
        expected = (
            lr * step / steps
            if step < steps
            else lr_final + (lr - lr_final) * cosine
        )
        assert log_value(line, "lr") == pytest.approx(expected, rel=1e-2)
        start, end = round(0.5 * steps), round(1.5 * steps)
        expected = margin * min(1.0, max(0.0, (step - start) / (end - start)))
        assert log_value(line, "margin") == pytest.approx(
            expected, rel=1e-2, abs=1e-6
        )

    pretrained = output / "pretrained"
    state = torch.load(pretrained / "classifier.ckpt")
    assert state["weight"].shape[0] == 3 * len(speakers)
    labels = CategoricalEncoder()
    labels.load(pretrained / "label_encoder.txt")
    assert len(labels) == 3 * len(speakers)
    first = sorted(speakers)[0]
    assert labels.encode_label(f"{first}@speed0.9") == len(speakers)

    tuned = tmp_path / "tuned"
    result = train(
        tiny_corpus,
        tuned,
        yaml="mrmha_modern.yaml",
        epochs=1,
        extra=[
            *extra,
            f"--init_from={pretrained}",
            "--lr=1.0e-30",
            "--lr_final=1.0e-30",
            "--sentence_len=1.5",
            "--margin=0.5",
        ],
    )
    assert f"initialised embedding_model and classifier from {pretrained}" in (
        result.stdout + result.stderr
    )
    for name in ("embedding_model.ckpt", "classifier.ckpt"):
        before, after = (
            torch.load(pretrained / name),
            torch.load(tuned / "pretrained" / name),
        )
        for key, value in before.items():
            if "running" in key or "num_batches" in key:
                continue  # BatchNorm statistics follow the new data
            assert torch.equal(after[key], value), (name, key)

    # a folder of other classes is refused, naming it
    result = train(
        tiny_corpus,
        tmp_path / "wrong",
        epochs=1,
        extra=[
            "--calibration_annotation=null",
            "--num_heads=2",
            f"--init_from={pretrained}",
        ],
        check=False,
    )
    assert result.returncode != 0
    assert f"init_from {pretrained / 'classifier.ckpt'}: does not fit" in (
        result.stdout + result.stderr
    )
