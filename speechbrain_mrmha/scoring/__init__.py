"""Scoring (library ring): every verification metric (EER, minDCF, actDCF,
Cllr) in ``metrics``, cosine scoring of trials and score normalisation
(s-norm, AS-norm) in ``cosine``, and calibration of scores to
log-likelihood ratios in ``calibration``. Imports nothing but ``layers``."""
