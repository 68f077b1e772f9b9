"""Calibration of cosine scores to LLRs: the fit against an independent
solver of the same objective, Cllr / minCllr / actDCF against their
formulas and invariants, the trial sampler, and the JSON round trip of a
pretrained folder's calibration.json."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from speechbrain_mrmha.inference.pretrained import (
    load_calibration,
    write_calibration,
)
from speechbrain_mrmha.scoring.calibration import (
    Calibration,
    fit_calibration,
    quality_features,
    sample_trials,
)
from speechbrain_mrmha.scoring.metrics import (
    EER,
    act_dcf,
    bayes_threshold,
    cllr,
    dcf_normalizer,
    min_cllr,
    minDCF,
)


def gaussian_scores(seed, n_target=300, n_nontarget=3000, shift=0.0):
    """Cosine-like scores: targets N(0.55, 0.12), non-targets N(0.05, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    target = 0.55 + shift + 0.12 * torch.randn(n_target, generator=g)
    nontarget = 0.05 + shift + 0.1 * torch.randn(n_nontarget, generator=g)
    return target, nontarget


def scipy_fit(target_rows, nontarget_rows, prior, regularization):
    """The same objective written independently in numpy, minimised by
    scipy's BFGS from a different start."""
    offset = math.log(prior / (1 - prior))

    def objective(params):
        t = target_rows @ params + offset
        n = nontarget_rows @ params + offset
        value = prior * np.logaddexp(0, -t).mean()
        value += (1 - prior) * np.logaddexp(0, n).mean()
        return value + regularization / 2 * np.sum(params[:-1] ** 2)

    start = np.full(target_rows.shape[1], 0.3)
    result = minimize(objective, start, method="BFGS", options={"gtol": 1e-10})
    return result.x


@pytest.mark.parametrize("prior", [0.5, 0.01, 0.9])
@pytest.mark.parametrize("regularization", [0.0, 1e-3])
def test_fit_equals_an_independent_solver(prior, regularization):
    target, nontarget = gaussian_scores(0)
    cal = fit_calibration(
        target, nontarget, prior=prior, regularization=regularization
    )
    rows = [
        np.stack([s.double().numpy(), np.ones(len(s))], 1)
        for s in (target, nontarget)
    ]
    expected = scipy_fit(*rows, prior, regularization)
    assert cal.slope == pytest.approx(expected[0], rel=1e-4)
    assert cal.offset == pytest.approx(expected[1], rel=1e-4, abs=1e-5)


def test_fit_with_quality_equals_an_independent_solver():
    target, nontarget = gaussian_scores(1)
    g = torch.Generator().manual_seed(2)
    durations_t = 1 + 9 * torch.rand(len(target), 2, generator=g)
    durations_n = 1 + 9 * torch.rand(len(nontarget), 2, generator=g)
    # make long trials more separable, so the quality terms matter
    target = target + 0.05 * durations_t.log().min(dim=1).values
    cal = fit_calibration(
        target, nontarget, durations_t, durations_n, quality=True
    )
    rows = [
        np.concatenate(
            [
                s.double().numpy()[:, None],
                np.stack(
                    [
                        np.log(d.double().numpy()).min(1),
                        np.log(d.double().numpy()).max(1),
                    ],
                    1,
                ),
                np.ones((len(s), 1)),
            ],
            1,
        )
        for s, d in ((target, durations_t), (nontarget, durations_n))
    ]
    expected = scipy_fit(*rows, 0.5, cal.regularization)
    got = [cal.slope, *cal.quality_weights, cal.offset]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # llr() uses the same features: the fitted objective's optimum
    llr = cal.llr(target, durations_t)
    assert torch.allclose(
        llr, torch.tensor(rows[0]) @ torch.tensor(got, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="durations"):
        cal.llr(target)


def test_optimum_balances_the_weighted_posteriors():
    """At the optimum (no penalty) the offset's gradient vanishes:
    P * mean_t(1 - q_t) == (1 - P) * mean_n q_n, q the posterior at P."""
    target, nontarget = gaussian_scores(3)
    for prior in (0.5, 0.05):
        cal = fit_calibration(
            target, nontarget, prior=prior, regularization=0.0
        )
        logit = math.log(prior / (1 - prior))
        q_t = torch.sigmoid(cal.llr(target) + logit)
        q_n = torch.sigmoid(cal.llr(nontarget) + logit)
        assert float(prior * (1 - q_t).mean()) == pytest.approx(
            float((1 - prior) * q_n.mean()), abs=1e-10
        )


def test_calibrated_cllr_of_held_out_data_beats_raw_cosine():
    train_t, train_n = gaussian_scores(4)
    test_t, test_n = gaussian_scores(5)
    cal = fit_calibration(train_t, train_n)
    calibrated = cllr(cal.llr(test_t), cal.llr(test_n))
    raw = cllr(test_t, test_n)
    assert calibrated < raw and calibrated < 1.0
    # calibration is monotonic: it cannot beat the PAV bound of the scores
    assert calibrated >= min_cllr(test_t, test_n) - 1e-12
    assert min_cllr(cal.llr(test_t), cal.llr(test_n)) == pytest.approx(
        min_cllr(test_t, test_n), abs=1e-12
    )


def test_cllr_formula():
    assert cllr(torch.zeros(4), torch.zeros(7)) == 1.0
    target, nontarget = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    expected = (
        np.mean(np.log2(1 + np.exp([-2.0, 1.0])))
        + np.mean(np.log2(1 + np.exp([0.5, -3.0])))
    ) / 2
    assert cllr(target, nontarget) == pytest.approx(expected, rel=1e-12)
    # large LLRs do not overflow: a confident error costs |llr| / log 2 / 2
    assert cllr(
        torch.tensor([-1000.0]), torch.tensor([-1000.0])
    ) == pytest.approx(1000 / math.log(2) / 2)
    with pytest.raises(ValueError, match="target_llrs is empty"):
        cllr(torch.tensor([]), torch.zeros(2))


def test_min_cllr_equals_cllr_of_the_pav_calibration():
    """Independent PAV: the isotonic posterior by pooling in numpy."""
    target, nontarget = gaussian_scores(6, 40, 60, shift=0.0)
    target = torch.round(target * 20) / 20  # ties
    nontarget = torch.round(nontarget * 20) / 20
    scores = np.concatenate([target.numpy(), nontarget.numpy()]).astype(
        np.float64
    )
    labels = np.concatenate([np.ones(len(target)), np.zeros(len(nontarget))])
    values = np.unique(scores)
    blocks = [
        [labels[scores == v].sum(), (scores == v).sum(), [v]] for v in values
    ]
    merged = []
    for block in blocks:
        merged.append(block)
        while (
            len(merged) > 1
            and merged[-2][0] / merged[-2][1] >= merged[-1][0] / merged[-1][1]
        ):
            last = merged.pop()
            merged[-1] = [
                merged[-1][0] + last[0],
                merged[-1][1] + last[1],
                merged[-1][2] + last[2],
            ]
    posterior = {v: b[0] / b[1] for b in merged for v in b[2]}
    prior_odds = len(target) / len(nontarget)
    eps = 1e-300
    llr = np.array(
        [
            np.log(max(posterior[s], eps) / max(1 - posterior[s], eps))
            - np.log(prior_odds)
            for s in scores
        ]
    )
    t_llr, n_llr = llr[labels == 1], llr[labels == 0]
    expected = (
        np.mean(np.logaddexp(0, -t_llr)) + np.mean(np.logaddexp(0, n_llr))
    ) / (2 * np.log(2))
    assert min_cllr(target, nontarget) == pytest.approx(expected, abs=1e-9)
    assert min_cllr(target, nontarget) <= cllr(
        target * 10 - 3, nontarget * 10 - 3
    )


def brute_force_act_dcf(target, nontarget, p_target, c_miss, c_fa):
    threshold = math.log(c_fa * (1 - p_target) / (c_miss * p_target))
    p_miss = sum(float(x) <= threshold for x in target) / len(target)
    p_fa = sum(float(x) > threshold for x in nontarget) / len(nontarget)
    return c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)


@pytest.mark.parametrize("seed", range(20))
def test_act_dcf_is_the_bayes_decision_cost_and_never_below_min_dcf(seed):
    g = torch.Generator().manual_seed(seed)
    target = 3 + 4 * torch.randn(
        int(torch.randint(1, 50, (1,), generator=g)), generator=g
    )
    nontarget = -3 + 4 * torch.randn(
        int(torch.randint(1, 80, (1,), generator=g)), generator=g
    )
    for p_target, c_miss, c_fa in (
        (0.01, 1, 1),
        (0.05, 1, 1),
        (0.5, 1, 1),
        (0.2, 10, 1),
    ):
        value = act_dcf(target, nontarget, p_target, c_miss, c_fa)
        assert value == pytest.approx(
            brute_force_act_dcf(target, nontarget, p_target, c_miss, c_fa),
            rel=1e-6,
        )
        if c_miss * p_target <= c_fa * (1 - p_target):
            best, _ = minDCF(target, nontarget, c_miss, c_fa, p_target)
            assert value >= best


@pytest.mark.parametrize("p_target", [0.01, 0.05])
def test_act_dcf_equals_min_dcf_when_the_bayes_threshold_is_the_min_dcf_point(
    p_target,
):
    g = torch.Generator().manual_seed(7)
    # scores on a 1/64 grid: shifting them is exact in float64
    target = torch.round((0.6 + 0.2 * torch.randn(200, generator=g)) * 64) / 64
    nontarget = (
        torch.round((0.1 + 0.2 * torch.randn(2000, generator=g)) * 64) / 64
    )
    target, nontarget = target.double(), nontarget.double()
    best, threshold = minDCF(target, nontarget, p_target=p_target)
    shift = bayes_threshold(p_target) - threshold
    value = act_dcf(target + shift, nontarget + shift, p_target)
    assert value == best
    # elsewhere it costs more
    assert (
        act_dcf(target + shift + 0.3, nontarget + shift + 0.3, p_target) > best
    )


def test_dcf_normalizer_and_bayes_threshold():
    assert dcf_normalizer(0.01) == 0.01 and dcf_normalizer(
        0.7
    ) == pytest.approx(0.3)
    assert bayes_threshold(0.5) == 0.0
    assert bayes_threshold(0.01, c_miss=99) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="p_target"):
        bayes_threshold(1.0)


def test_thresholds_and_statistics_of_the_fit():
    target, nontarget = gaussian_scores(8)
    cal = fit_calibration(target, nontarget)
    eer, eer_cosine = EER(target.double(), nontarget.double())
    dcf, dcf_cosine = minDCF(target.double(), nontarget.double(), p_target=0.01)
    assert cal.thresholds["eer"]["cosine"] == eer_cosine
    assert cal.thresholds["eer"]["value"] == eer
    assert cal.thresholds["min_dcf"]["cosine"] == dcf_cosine
    # an affine, increasing map: the LLR thresholds are the cosine ones mapped
    for point in ("eer", "min_dcf"):
        mapped = cal.slope * cal.thresholds[point]["cosine"] + cal.offset
        assert cal.thresholds[point]["llr"] == pytest.approx(mapped, abs=1e-9)
    stats = cal.statistics
    assert stats["n_target"] == 300 and stats["n_nontarget"] == 3000
    assert stats["min_dcf"] == pytest.approx(dcf, abs=1e-7)
    assert stats["act_dcf"] >= stats["min_dcf"]
    assert stats["min_cllr"] <= stats["cllr"] < stats["cllr_raw"]


def test_decisions_follow_the_bayes_threshold():
    cal = Calibration(slope=10.0, offset=-5.0)
    llrs = cal.llr(torch.tensor([0.0, 0.9, 0.99, 1.0]))
    # llrs -5, 4, 4.9, 5 against log(99) = 4.595 at p_target 0.01
    assert cal.decide(llrs).tolist() == [False, False, True, True]
    assert cal.decide(llrs, p_target=0.5).tolist() == [False, True, True, True]


def test_quality_features_are_symmetric():
    a, b = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.5])
    assert torch.equal(quality_features(a, b), quality_features(b, a))
    with pytest.raises(ValueError, match="> 0"):
        quality_features(torch.tensor([0.0]), torch.tensor([1.0]))


def test_sample_trials_pairs_and_cap():
    speakers = [f"s{i % 5}" for i in range(40)]  # 5 speakers x 8 utterances
    e, t, labels = sample_trials(speakers, max_trials=10**6, seed=0)
    same = [speakers[i] == speakers[j] for i, j in zip(e.tolist(), t.tolist())]
    assert same == labels.tolist()
    assert (
        int(labels.sum()) == 5 * 28
        and int((~labels).sum()) == (40 * 40 - 5 * 64) // 2
    )
    assert len(set(zip(e.tolist(), t.tolist()))) == len(labels)
    assert bool((e < t).all())
    e, t, labels = sample_trials(speakers, max_trials=100, seed=0)
    assert len(labels) == 100 and int(labels.sum()) == 50
    assert len(set(zip(e.tolist(), t.tolist()))) == 100
    again = sample_trials(speakers, max_trials=100, seed=0)
    assert torch.equal(again[0], e) and torch.equal(again[1], t)
    other = sample_trials(speakers, max_trials=100, seed=1)
    assert not torch.equal(other[0], e) or not torch.equal(other[1], t)
    # sparse draw (many utterances, few wanted)
    many = [f"s{i % 50}" for i in range(2000)]
    e, t, labels = sample_trials(many, max_trials=5000, seed=3)
    assert len(set(zip(e.tolist(), t.tolist()))) == len(labels) == 5000
    with pytest.raises(ValueError, match="two speakers"):
        sample_trials(["a", "a"])


def test_calibration_json_round_trip_and_errors(tmp_path):
    target, nontarget = gaussian_scores(9)
    cal = fit_calibration(target, nontarget)
    assert load_calibration(tmp_path) is None
    write_calibration(tmp_path, cal)
    loaded = load_calibration(tmp_path)
    assert loaded == cal
    assert torch.equal(loaded.llr(target), cal.llr(target))
    path = tmp_path / "calibration.json"
    data = json.loads(path.read_text())
    for change, message in (
        ({"slope": "x"}, "slope must be a finite number"),
        ({"format": "other/1"}, "format"),
        ({"typo": 1}, "unknown keys typo"),
        ({"quality_weights": [1.0]}, "quality_weights"),
    ):
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(ValueError, match=message) as error:
            load_calibration(tmp_path)
        assert str(path) in str(error.value)


def test_a_non_positive_slope_is_refused(tmp_path):
    """A negative slope would print "llr: -72" beside "same speaker"."""
    path = tmp_path / "calibration.json"
    for slope in (-3.0, 0.0):
        path.write_text(
            json.dumps(Calibration(slope=1.0, offset=0.0).to_dict()).replace(
                '"slope": 1.0', f'"slope": {slope}'
            )
        )
        with pytest.raises(ValueError, match="is not positive") as error:
            load_calibration(tmp_path)
        assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="not positive"):
        write_calibration(tmp_path, Calibration(slope=-1.0, offset=0.0))


def test_thresholds_inconsistent_with_slope_and_offset_are_refused(tmp_path):
    target, nontarget = gaussian_scores(3)
    cal = fit_calibration(target, nontarget)
    write_calibration(tmp_path, cal)
    assert load_calibration(tmp_path) == cal  # a fit is consistent
    path = tmp_path / "calibration.json"
    data = json.loads(path.read_text())
    for change, message in (
        (
            {"llr": data["thresholds"]["eer"]["llr"] + 0.5},
            "thresholds.eer: llr",
        ),
        ({"cosine": 1.5}, "cosine 1.5 is not in"),
        ({"llr": None}, "needs finite cosine and llr"),
    ):
        broken = json.loads(json.dumps(data))
        broken["thresholds"]["eer"].update(change)
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message) as error:
            load_calibration(tmp_path)
        assert str(path) in str(error.value)


def test_a_calibration_without_fingerprint_loads_with_a_warning(
    tmp_path, caplog
):
    """Files of the same format written before calibrations recorded their
    weights still load; the match cannot be checked, and that is said."""
    (tmp_path / "embedding_model.ckpt").write_bytes(b"weights")
    cal = Calibration(slope=10.0, offset=-5.0)
    older = cal.to_dict()  # the format is unchanged; older files lack:
    del older["fitted_on"]
    (tmp_path / "calibration.json").write_text(json.dumps(older))
    with caplog.at_level("WARNING"):
        assert load_calibration(tmp_path) == cal
    assert "records no fingerprint" in caplog.text
    assert "cannot be checked" in caplog.text


def test_a_calibration_is_refused_next_to_other_weights(tmp_path):
    from speechbrain_mrmha.inference.pretrained import weights_fingerprint

    (tmp_path / "embedding_model.ckpt").write_bytes(b"weights")
    cal = Calibration(slope=10.0, offset=-5.0)
    cal.fitted_on = weights_fingerprint(tmp_path)
    write_calibration(tmp_path, cal)
    assert load_calibration(tmp_path) == cal
    (tmp_path / "embedding_model.ckpt").write_bytes(b"other weights")
    with pytest.raises(ValueError, match="fitted on other weights") as error:
        load_calibration(tmp_path)
    assert str(tmp_path / "embedding_model.ckpt") in str(error.value)


def test_fitting_on_fewer_speakers_than_the_minimum_warns(tmp_path, caplog):
    """The README says a calibration of fewer than MIN_CALIBRATION_SPEAKERS
    speakers can be worse than none: never fitted silently."""
    import numpy
    import soundfile

    from speechbrain_mrmha.dataio.preparation import MIN_CALIBRATION_SPEAKERS
    from speechbrain_mrmha.inference.pretrained import (
        calibrate_pretrained,
        example_folder,
    )

    folder = example_folder(tmp_path / "model")
    rng, utterances = numpy.random.default_rng(0), {}
    for i in range(6):
        path = str(tmp_path / f"u{i}.wav")
        soundfile.write(path, 0.1 * rng.standard_normal(8000), 16000)
        utterances[f"u{i}"] = (path, 0.5, f"speaker{i % 2}")
    with caplog.at_level("INFO"):
        cal = calibrate_pretrained(folder, utterances)
    assert (
        f"calibration fitted on 2 speakers, fewer than the "
        f"{MIN_CALIBRATION_SPEAKERS}" in caplog.text
    )
    assert f"calibration: {cal.summary()}" in caplog.text  # for the log


def test_without_a_calibration_set_the_folder_is_left_uncalibrated(
    tmp_path, caplog
):
    """What a training recipe gets when no calibration speakers were held
    out: a warning naming the folder, no calibration.json."""
    from speechbrain_mrmha.inference.pretrained import (
        calibrate_pretrained,
        example_folder,
    )

    folder = example_folder(tmp_path / "model")
    with caplog.at_level("WARNING"):
        assert calibrate_pretrained(folder, None) is None
    assert f"{folder} has no calibration.json (see the warning at the " in (
        caplog.text
    )
    assert not (folder / "calibration.json").exists()
