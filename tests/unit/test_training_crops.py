"""Training crops and speed copies (speechbrain_mrmha.training.crops): a
crop depends on (seed, epoch, utterance) only, every copy has the length of
an unperturbed crop, copy j of speaker k is class k + n * j, and the class
count of the data overrides the yaml's."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mrmha.dataio.audio import load_audio
from speechbrain_mrmha.training.config import class_count_overrides
from speechbrain_mrmha.training.crops import (
    RandomCrops,
    change_speed,
    crop,
    speaker_labels,
    training_speeds,
)

RECIPE_HPARAMS = (
    Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb1" / "hparams"
)


@pytest.fixture
def wav(tmp_path):
    """2 s of noise at 16 kHz, stored as float (exact samples)."""
    path = tmp_path / "a.wav"
    noise = np.random.default_rng(0).standard_normal(32000) * 0.1
    soundfile.write(path, noise.astype("float32"), 16000, subtype="FLOAT")
    return str(path)


def test_crops_depend_on_seed_epoch_and_utterance_only(wav):
    crops = RandomCrops(seed=5, sentence_len=1.0, sample_rate=16000)
    twin = RandomCrops(seed=5, sentence_len=1.0, sample_rate=16000)
    starts = set()
    for epoch in range(6):
        crops.epoch = twin.epoch = epoch
        sig, copy = crops.read("u1", wav, 2.0)
        assert copy == 0 and sig.shape == (16000,)
        assert torch.equal(sig, twin.read("u1", wav, 2.0)[0])  # a resumed run
        start = crops.start("u1", 16000)
        assert torch.equal(sig, load_audio(wav)[start : start + 16000])
        starts.add(start)
    assert len(starts) > 1  # a new crop each epoch
    other = RandomCrops(seed=6, sentence_len=1.0, sample_rate=16000)
    assert any(
        other.start(f"u{i}", 16000) != crops.start(f"u{i}", 16000)
        for i in range(5)
    )


def test_validation_crop_is_the_fixed_centre(wav):
    crops = RandomCrops(seed=5, sentence_len=1.0, sample_rate=16000)
    whole = load_audio(wav)
    for epoch in (0, 3):
        crops.epoch = epoch
        assert torch.equal(crops.centre(wav, 2.0), whole[8000:24000])


def test_short_files_are_repeated_to_the_crop_length(tmp_path):
    path = tmp_path / "short.wav"
    soundfile.write(path, np.arange(4000, dtype="float32") / 4000, 16000)
    sig = crop(str(path), 0.25, 1.0, 16000, start=lambda span: 0)
    assert sig.shape == (16000,)
    assert torch.equal(sig[:4000], sig[4000:8000])


def test_speed_copies_are_new_speakers(wav):
    """Every copy has the length of an unperturbed crop; copy j of speaker
    k is class k + n * j, named <speaker>@speed<s>; each copy is drawn."""
    speeds = training_speeds(True, [0.9, 1.1])
    assert speeds == [1.0, 0.9, 1.1] and training_speeds(False, [0.9]) == [1.0]
    crops = RandomCrops(5, sentence_len=1.0, sample_rate=16000, speeds=speeds)
    seen = set()
    for epoch in range(4):
        crops.epoch = epoch
        for i in range(6):
            sig, copy = crops.read(f"u{i}", wav, 2.0)
            assert sig.shape == (16000,) and copy == crops.copy(f"u{i}")
            seen.add(copy)
    assert seen == {0, 1, 2}
    labels = speaker_labels(["id1", "id2"], speeds)
    assert len(labels) == 6
    for j, speed in enumerate(speeds[1:], start=1):
        for k, speaker in enumerate(["id1", "id2"]):
            assert labels.encode_label(f"{speaker}@speed{speed:g}") == k + 2 * j
    # a copy at speed s is the original resampled: s = 1.1 is shorter
    sig = torch.randn(17600)
    assert change_speed(sig, 1.1, 16000, 16000).shape == (16000,)
    assert torch.equal(change_speed(sig, 1.0, 16000, 16000), sig[:16000])


@pytest.mark.parametrize(
    "yaml, speed_perturb, speeds",
    [
        ("mrmha.yaml", None, [1.0]),
        ("mrmha_modern.yaml", None, [1.0]),  # off by measurement
        ("mrmha_modern.yaml", True, [1.0, 0.9, 1.1]),
    ],
)
def test_the_yaml_builds_the_crops(yaml, speed_perturb, speeds, tmp_path):
    overrides = {
        "data_folder": str(tmp_path),
        "output_folder": str(tmp_path / "out"),
        "sentence_len": 1.5,
        "seed": 9,
    }
    if speed_perturb is not None:
        overrides["speed_perturb"] = speed_perturb
    with open(RECIPE_HPARAMS / yaml) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    crops = hparams["crops"]
    assert crops.speeds == speeds and crops.length == 24000
    assert crops.seed == 9 and crops.sample_rate == 16000


def test_class_count_comes_from_the_data():
    overrides, changed = class_count_overrides({}, 1211, 2, 3, "t.csv")
    assert changed and overrides["n_classes"] == 6
    assert class_count_overrides({"lr": 0.1}, 6, 2, 3, "t.csv") == (
        {"lr": 0.1},
        False,
    )
    with pytest.raises(ValueError, match="2 speakers x 3 speed copies"):
        class_count_overrides({"n_classes": 2}, 2, 2, 3, "t.csv")
    with pytest.raises(ValueError, match="has 2 speakers$"):
        class_count_overrides({"n_classes": 5}, 5, 2, 1, "t.csv")
