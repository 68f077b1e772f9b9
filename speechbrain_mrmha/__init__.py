"""speechbrain_mrmha: Multi-Resolution Multi-Head Attention pooling for
speaker embeddings (Wang et al., ICASSP 2020) as a SpeechBrain plugin.

The package is three rings, inner to outer; each imports only inward
(``tests/unit/test_layout.py`` checks it):

* library, what SpeechBrain itself could absorb:
  ``layers`` (poolings, ResNet-34, margin losses, lengths),
  ``scoring`` (metrics, cosine scoring and score normalisation,
  calibration), ``dataio`` (audio, annotation CSVs, trial lists, atomic
  files, problem reports) and ``training`` (crops, speed copies, feature
  masks, schedules, checkpoints and run locks, configuration);
* services: ``inference`` (pretrained folders, ONNX / TorchScript export,
  runtime backends, embedding extraction, the ``SpeakerModel`` object);
* application: ``app`` (command line, demo, figures, synthetic corpus).
"""

import importlib
import sys

from speechbrain_mrmha.layers.margins import CosAMSLoss, CosineClassifier
from speechbrain_mrmha.layers.pooling import (
    POOLINGS,
    AttentionPooling,
    AttentiveStatisticsPooling,
    GlobalMultiHeadAttentionPooling,
    MultiQueryMultiHeadAttentionPooling,
    MultiResolutionMultiHeadAttentionPooling,
    SelfAttentivePooling,
    SplitMultiHeadAttentionPooling,
    StructuredSelfAttentionPooling,
    attention_entropy,
    build_pooling,
    orthogonality_penalty,
)
from speechbrain_mrmha.layers.resnet import ResNet34
from speechbrain_mrmha.scoring.metrics import EER, minDCF

__all__ = [
    "POOLINGS",
    "AttentionPooling",
    "AttentiveStatisticsPooling",
    "GlobalMultiHeadAttentionPooling",
    "MultiQueryMultiHeadAttentionPooling",
    "MultiResolutionMultiHeadAttentionPooling",
    "SelfAttentivePooling",
    "SplitMultiHeadAttentionPooling",
    "StructuredSelfAttentionPooling",
    "attention_entropy",
    "build_pooling",
    "orthogonality_penalty",
    "ResNet34",
    "CosAMSLoss",
    "CosineClassifier",
    "EER",
    "minDCF",
]

# Import paths that pretrained folders written before the subpackages name
# in their hyperparams.yaml (e.g. speechbrain_mrmha.pooling.X): the same
# module objects under the old names.
_MOVED = {
    "pooling": "layers.pooling",
    "resnet": "layers.resnet",
    "cosams": "layers.margins",
    "lengths": "layers.lengths",
}
for _old, _new in _MOVED.items():
    _module = importlib.import_module(f"{__name__}.{_new}")
    sys.modules[f"{__name__}.{_old}"] = _module
    globals()[_old] = _module
del _old, _new, _module
