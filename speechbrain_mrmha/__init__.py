"""speechbrain_mrmha: Multi-Resolution Multi-Head Attention pooling for
speaker embeddings (Wang et al., ICASSP 2020) as a SpeechBrain plugin."""

from speechbrain_mrmha.cosams import CosAMSLoss, CosineClassifier
from speechbrain_mrmha.pooling import (
    POOLINGS,
    AttentionPooling,
    AttentiveStatisticsPooling,
    GlobalMultiHeadAttentionPooling,
    MultiResolutionMultiHeadAttentionPooling,
    SelfAttentivePooling,
    SplitMultiHeadAttentionPooling,
    StructuredSelfAttentionPooling,
    attention_entropy,
    build_pooling,
    orthogonality_penalty,
)
from speechbrain_mrmha.resnet import ResNet34
from speechbrain_mrmha.scoring import EER, minDCF

__all__ = [
    "POOLINGS",
    "AttentionPooling",
    "AttentiveStatisticsPooling",
    "GlobalMultiHeadAttentionPooling",
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
