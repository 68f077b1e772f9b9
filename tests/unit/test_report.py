"""The numbers a verification run reports (speechbrain_mrmha/scoring/metrics.py):
each equals the metric of scoring.metrics it rounds, DCFs normalised by the
cost of the best trivial system at the same costs."""

import pytest
import torch

from speechbrain_mrmha.scoring.metrics import (
    EER,
    act_dcf,
    calibration_report,
    cllr,
    dcf_normalizer,
    detection_report,
    min_cllr,
    minDCF,
)


def scores(seed):
    g = torch.Generator().manual_seed(seed)
    return 0.5 + 0.2 * torch.randn(300, generator=g), 0.2 * torch.randn(
        3000, generator=g
    )


@pytest.mark.parametrize("c_miss, c_fa", [(1.0, 1.0), (10.0, 1.0)])
def test_detection_report_equals_the_metrics(c_miss, c_fa):
    target, nontarget = scores(0)
    report = detection_report(target, nontarget, c_miss, c_fa)
    eer, threshold = EER(target, nontarget)
    assert report["EER"] == round(100 * float(eer), 4)
    assert report["EER_threshold"] == float(threshold)
    for p_target, key in ((0.01, "minDCF"), (0.05, "minDCF_p0.05")):
        dcf, _ = minDCF(target, nontarget, c_miss, c_fa, p_target)
        normalizer = min(c_miss * p_target, c_fa * (1 - p_target))
        assert report[key] == pytest.approx(float(dcf) / normalizer, abs=1e-4)
        if p_target == 0.01:
            assert report["minDCF_unnormalized"] == round(float(dcf), 6)
    assert (report["n_trials"], report["n_target"]) == (3300, 300)


@pytest.mark.parametrize("c_miss, c_fa", [(1.0, 1.0), (1.0, 10.0)])
def test_calibration_report_equals_the_metrics(c_miss, c_fa):
    target, nontarget = scores(1)
    target, nontarget = 8 * target - 3, 8 * nontarget - 3  # as LLRs
    report = calibration_report(target, nontarget, c_miss, c_fa)
    assert report["Cllr"] == round(cllr(target, nontarget), 4)
    assert report["minCllr"] == round(min_cllr(target, nontarget), 4)
    assert report["minCllr"] <= report["Cllr"]
    for p_target, key in ((0.01, "actDCF"), (0.05, "actDCF_p0.05")):
        value = act_dcf(target, nontarget, p_target, c_miss, c_fa)
        normalized = value / dcf_normalizer(p_target, c_miss, c_fa)
        assert report[key] == pytest.approx(normalized, abs=1e-4)
