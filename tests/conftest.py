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
from functools import partial

import pytest
import torch

TINY_CHANNELS = [4, 8, 16, 32]
TINY_BLOCKS = [1, 1, 1, 1]
TINY_EMB_DIM = 16


def _training_speakers(corpus):
    """Speakers marked ``dev`` in the corpus' vox1_meta.csv."""
    with open(corpus.meta_file, newline="") as fin:
        rows = list(csv.DictReader(fin, delimiter="\t"))
    return [row["VoxCeleb1 ID"] for row in rows if row["Set"] == "dev"]


def _write_tiny_pretrained(folder, corpus, pooling, seed):
    """An untrained tiny model written with ``export.write_pretrained``."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    from speechbrain_mrmha.cosams import CosineClassifier
    from speechbrain_mrmha.export import write_pretrained
    from speechbrain_mrmha.resnet import ResNet34

    speakers = _training_speakers(corpus)
    labels = CategoricalEncoder()
    labels.update_from_iterable(speakers)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ResNet34(channels=TINY_CHANNELS, block_counts=TINY_BLOCKS,
                         lin_neurons=TINY_EMB_DIM, pooling=pooling)
        classifier = CosineClassifier(TINY_EMB_DIM, len(speakers))
    sizes = dict(n_mels=40, channels=TINY_CHANNELS, block_counts=TINY_BLOCKS,
                 emb_dim=TINY_EMB_DIM, n_classes=len(speakers))
    return write_pretrained(folder, model.eval(), classifier, labels, sizes)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A tiny synthetic corpus (about a second to make)."""
    from speechbrain_mrmha.synthetic import generate_corpus

    return generate_corpus(str(tmp_path_factory.mktemp("tiny_corpus") / "voxceleb1"),
                           speakers=4, videos=2, utterances=2, test_speakers=2,
                           min_duration=1.0, max_duration=1.5, seed=7)


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory, tiny_corpus):
    """Pretrained folder of an untrained tiny ResNet34 + MRMHA (2 heads).

    Its parent folder holds nothing else (no ``verification/metrics.json``).
    """
    from speechbrain_mrmha.pooling import MultiResolutionMultiHeadAttentionPooling

    pooling = partial(MultiResolutionMultiHeadAttentionPooling, num_heads=2)
    return _write_tiny_pretrained(tmp_path_factory.mktemp("tiny_mrmha") / "pretrained",
                                  tiny_corpus, pooling, seed=1)


@pytest.fixture(scope="session")
def tiny_pretrained_selfattentive(tmp_path_factory, tiny_corpus):
    """Pretrained folder of an untrained tiny ResNet34 + self-attentive pooling."""
    from speechbrain_mrmha.pooling import SelfAttentivePooling

    return _write_tiny_pretrained(
        tmp_path_factory.mktemp("tiny_selfattentive") / "pretrained",
        tiny_corpus, SelfAttentivePooling, seed=2)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, tiny_pretrained):
    """``tiny_pretrained`` loaded by SpeechBrain's EncoderClassifier (CPU)."""
    from speechbrain_mrmha.export import load_encoder

    return load_encoder(tiny_pretrained, savedir=tmp_path_factory.mktemp("tiny_encoder_cache"))
