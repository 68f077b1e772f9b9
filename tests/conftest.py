"""Shared session-scoped fixtures: a tiny synthetic VoxCeleb1-layout corpus
and tiny untrained pretrained-model folders (no training needed), loadable
with SpeechBrain's EncoderClassifier.

* ``tiny_corpus``: ``SyntheticCorpus`` of 4 speakers (2 train, 2 test),
  2 videos x 2 utterances of 1.0-1.5 s each.
* ``tiny_pretrained``: folder of a tiny ResNet34 with MRMHA pooling (2 heads).
* ``tiny_pretrained_selfattentive``: the same with single-head
  self-attentive pooling (the reference of the attention figure).
* ``tiny_encoder``: ``tiny_pretrained`` loaded with ``EncoderClassifier``.
"""

import csv
from pathlib import Path

import pytest
import torch

RECIPE_HPARAMS = (
    Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb1" / "hparams"
)
TINY_CHANNELS = [4, 8, 16, 32]
TINY_BLOCKS = [1, 1, 1, 1]
TINY_EMB_DIM = 16
# The one limit on a subprocess a test starts: only against a hung process,
# never a measure of speed (a loaded machine can be many times slower).
HANG_GUARD_SECONDS = 3600


def run_process(command, cwd=None, env=None, shell=False, check=True):
    """Run ``command`` to its end, its output captured as text, limited
    only by the hang guard; with ``check`` a non-zero exit is an assertion
    error showing the tails of its output."""
    import subprocess

    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        shell=shell,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _training_speakers(corpus):
    """Speakers marked ``dev`` in the corpus' vox1_meta.csv."""
    with open(corpus.meta_file, newline="") as fin:
        rows = list(csv.DictReader(fin, delimiter="\t"))
    return [row["VoxCeleb1 ID"] for row in rows if row["Set"] == "dev"]


def _write_tiny_pretrained(folder, corpus, yaml, seed, **overrides):
    """An untrained tiny model of a recipe configuration, written with
    ``export.write_pretrained`` from the configuration's model entries;
    ``overrides`` replace the tiny defaults (e.g. ``channels``)."""
    import random

    import numpy
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.dataio.encoder import CategoricalEncoder

    from speechbrain_mrmha.inference.pretrained import write_pretrained
    from speechbrain_mrmha.training.config import model_definition

    speakers = _training_speakers(corpus)
    labels = CategoricalEncoder()
    labels.update_from_iterable(speakers)
    hparams_file = RECIPE_HPARAMS / yaml
    overrides = {
        "data_folder": str(corpus.root),
        "channels": TINY_CHANNELS,
        "block_counts": TINY_BLOCKS,
        "emb_dim": TINY_EMB_DIM,
        "n_classes": len(speakers),
        "seed": seed,
        **overrides,
    }
    # the yaml seeds every generator: keep the tests' own streams untouched
    states = random.getstate(), numpy.random.get_state()
    with torch.random.fork_rng(), open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    random.setstate(states[0])
    numpy.random.set_state(states[1])
    return write_pretrained(
        folder,
        model_definition(hparams_file, overrides),
        hparams["embedding_model"].eval(),
        hparams["classifier"],
        labels,
    )


def small_corpus(
    folder, speakers, utterances, durations, seed, test_speakers=2
):
    """A synthetic corpus of ``speakers`` with 2 videos of ``utterances``
    each, of (min, max) ``durations`` seconds, the last ``test_speakers``
    in its trial list (one process: the same files on any machine)."""
    from speechbrain_mrmha.app.synthetic import generate_corpus

    return generate_corpus(
        str(folder),
        speakers=speakers,
        videos=2,
        utterances=utterances,
        test_speakers=test_speakers,
        min_duration=durations[0],
        max_duration=durations[1],
        seed=seed,
        num_workers=1,
    )


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A tiny synthetic corpus (about a second to make)."""

    return small_corpus(
        tmp_path_factory.mktemp("tiny_corpus") / "voxceleb1",
        4,
        2,
        (1.0, 1.5),
        seed=7,
    )


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory, tiny_corpus):
    """Pretrained folder of an untrained tiny ResNet34 + MRMHA (2 heads).

    Its parent folder holds nothing else (no ``verification/metrics.json``).
    """
    return _write_tiny_pretrained(
        tmp_path_factory.mktemp("tiny_mrmha") / "pretrained",
        tiny_corpus,
        "mrmha.yaml",
        seed=1,
        num_heads=2,
    )


@pytest.fixture(scope="session")
def tiny_pretrained_selfattentive(tmp_path_factory, tiny_corpus):
    """Pretrained folder of an untrained tiny ResNet34 + self-attentive pooling."""
    return _write_tiny_pretrained(
        tmp_path_factory.mktemp("tiny_selfattentive") / "pretrained",
        tiny_corpus,
        "self_attentive.yaml",
        seed=2,
    )


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, tiny_pretrained):
    """``tiny_pretrained`` loaded by SpeechBrain's EncoderClassifier (CPU)."""
    from speechbrain_mrmha.inference.pretrained import load_encoder

    return load_encoder(
        tiny_pretrained, savedir=tmp_path_factory.mktemp("tiny_encoder_cache")
    )


def noise(seconds, seed):
    """``seconds`` of 16 kHz Gaussian noise (standard deviation 0.1), the
    same for the same ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(16000 * seconds), generator=generator)


def calibration_at(score):
    """A calibration whose EER threshold accepts ``score``, whose minDCF
    threshold rejects it, and whose LLR at ``score`` is 0.25 (so the Bayes
    rule at p_target 0.5 accepts it)."""
    from speechbrain_mrmha.scoring.calibration import Calibration

    slope, offset = 7.0, -7.0 * score + 0.25
    eer, min_dcf = score - 1e-3, score + 1e-3
    return Calibration(
        slope=slope,
        offset=offset,
        p_target=0.5,
        thresholds={  # each llr is slope * cosine + offset, as when fitted
            "eer": {"cosine": eer, "llr": slope * eer + offset, "value": 0.2},
            "min_dcf": {
                "cosine": min_dcf,
                "llr": slope * min_dcf + offset,
                "value": 0.4,
            },
        },
    )


def as_if_trained(model):
    """``model`` in eval mode with non-trivial BatchNorm statistics and
    biases (drawn from torch's global generator), so that BatchNorm maps
    zeros to non-zeros, as after training: wrong zero padding then shows."""
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def noise_shards(folder, count, seed, first, step, gain=lambda i: 0.1):
    """``count`` noise utterances of 3 speakers (``spk{i % 3}/u{i}``),
    ``first + step * i`` seconds at ``gain(i)``, written as WAV files in
    ``folder`` and as shards of 3 in ``folder/shards``; returns the shards'
    folder and the rows."""
    import numpy as np
    import soundfile as sf

    from speechbrain_mrmha.dataio.shards import write_shards

    rows = {}
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = Path(folder) / f"u{i}.wav"
        seconds = first + step * i
        signal = gain(i) * rng.standard_normal(int(16000 * seconds))
        sf.write(path, signal, 16000)
        rows[f"spk{i % 3}/u{i}"] = {
            "wav": str(path),
            "spk_id": f"spk{i % 3}",
            "duration": seconds,
        }
    shards = Path(folder) / "shards"
    write_shards(rows, shards, samples_per_shard=3, workers=1)
    return shards, rows
