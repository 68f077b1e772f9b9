"""Tests of speechbrain_mrmha.scoring.metrics: EER / minDCF against SpeechBrain's own
functions and an explicit ROC, cosine scoring and score normalisation against
per-trial loops."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from speechbrain.utils import metric_stats as sb_metrics

import speechbrain_mrmha.scoring.cosine as cosine
import speechbrain_mrmha.scoring.metrics as scoring


def _scores(seed, kind, max_size=300):
    """Random target / non-target scores; kind sets ties and dtype."""
    g = torch.Generator().manual_seed(seed)
    n_pos = int(torch.randint(1, max_size, (1,), generator=g))
    n_neg = int(torch.randint(1, max_size, (1,), generator=g))
    pos = torch.randn(n_pos, generator=g) + 1.0
    neg = torch.randn(n_neg, generator=g)
    if kind == "one_decimal":  # heavy ties: about 40 distinct values
        pos, neg = (pos * 10).round() / 10, (neg * 10).round() / 10
    elif kind == "integer":  # extreme ties: a handful of distinct values
        pos, neg = pos.round(), neg.round()
    elif kind == "float64":
        pos, neg = pos.double(), neg.double()
    return pos, neg


KINDS = ["continuous", "one_decimal", "integer", "float64"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_eer_and_mindcf_equal_speechbrain(seed, kind):
    pos, neg = _scores(seed, kind)
    assert scoring.EER(pos, neg) == sb_metrics.EER(pos, neg)
    assert scoring.minDCF(pos, neg) == sb_metrics.minDCF(pos, neg)


@pytest.mark.parametrize(
    "c_miss, c_fa, p_target",
    [(10.0, 1.0, 0.05), (1.0, 3.0, 0.5), (1, 1, 0.001)],
)
@pytest.mark.parametrize("kind", ["continuous", "one_decimal"])
def test_mindcf_other_costs_equal_speechbrain(c_miss, c_fa, p_target, kind):
    for seed in range(3):
        pos, neg = _scores(seed, kind)
        ours = scoring.minDCF(pos, neg, c_miss, c_fa, p_target)
        theirs = sb_metrics.minDCF(pos, neg, c_miss, c_fa, p_target)
        assert ours == theirs


def test_eer_tie_rule_on_tied_scores():
    """With a few distinct scores, SpeechBrain's strict float32-vs-float64
    comparison often keeps a later candidate than the first smallest gap;
    we must follow it, and this set of cases must contain such a case."""
    later_candidate_cases = 0
    for seed in range(150):
        pos, neg = _scores(seed, "integer", max_size=40)
        theirs = sb_metrics.EER(pos, neg)
        assert scoring.EER(pos, neg) == theirs
        thresholds, frr, far = scoring._error_rates(pos, neg)
        first_min = torch.argmin((far - frr).abs())
        later_candidate_cases += theirs[1] != float(thresholds[first_min])
    assert later_candidate_cases > 0


def _explicit_roc(pos, neg):
    """Candidates and float64 error rates by direct counting per threshold."""
    pos, neg = pos.numpy(), neg.numpy()
    unique = np.unique(np.concatenate([pos, neg]))
    mids = ((unique[:-1] + unique[1:]) / 2).astype(unique.dtype)
    rows = []
    for threshold in np.sort(np.concatenate([unique, mids])):
        frr = np.count_nonzero(pos <= threshold) / len(pos)
        far = np.count_nonzero(neg > threshold) / len(neg)
        rows.append((threshold, frr, far))
    return rows


def _rates_at(pos, neg, threshold):
    pos, neg = pos.double().numpy(), neg.double().numpy()
    frr = np.count_nonzero(pos <= threshold) / len(pos)
    far = np.count_nonzero(neg > threshold) / len(neg)
    return frr, far


@pytest.mark.parametrize("kind", ["continuous", "one_decimal", "integer"])
def test_eer_and_mindcf_equal_explicit_roc(kind):
    for seed in range(10, 14):
        pos, neg = _scores(seed, kind)
        rows = _explicit_roc(pos, neg)
        smallest_gap = min(abs(far - frr) for _, frr, far in rows)
        value, threshold = scoring.EER(pos, neg)
        frr, far = _rates_at(pos, neg, threshold)
        assert abs(abs(far - frr) - smallest_gap) < 1e-6
        assert value == pytest.approx((far + frr) / 2, abs=1e-6)

        c_det = [0.01 * frr + 0.99 * far for _, frr, far in rows]
        value, threshold = scoring.minDCF(pos, neg)
        assert value == pytest.approx(min(c_det), abs=1e-6)
        frr, far = _rates_at(pos, neg, threshold)
        assert 0.01 * frr + 0.99 * far == pytest.approx(min(c_det), abs=1e-6)


def test_degenerate_inputs():
    separated = (torch.tensor([0.6, 0.7, 0.9]), torch.tensor([0.1, 0.2]))
    reversed_ = (torch.tensor([0.1, 0.2]), torch.tensor([0.6, 0.7, 0.9]))
    all_equal = (torch.full((5,), 0.3), torch.full((7,), 0.3))
    single = (torch.tensor([0.5]), torch.tensor([0.4]))
    for pos, neg in (separated, reversed_, all_equal, single):
        assert scoring.EER(pos, neg) == sb_metrics.EER(pos, neg)
        assert scoring.minDCF(pos, neg) == sb_metrics.minDCF(pos, neg)
    # perfect separation: no error at a threshold between the classes
    value, threshold = scoring.EER(*separated)
    assert value == 0.0 and 0.2 <= threshold < 0.6
    assert scoring.minDCF(*separated)[0] == 0.0
    # all scores equal: the only candidate rejects every trial
    assert scoring.EER(*all_equal) == (0.5, pytest.approx(0.3))
    assert scoring.minDCF(*all_equal)[0] == pytest.approx(0.01)


def test_float_edge_cases_equal_speechbrain():
    one = torch.tensor(1.0)
    below = torch.nextafter(one, torch.tensor(0.0))
    above = torch.nextafter(one, torch.tensor(2.0))
    cases = [
        # midpoints of adjacent floats round onto a neighbour
        (torch.stack([one, above, one]), torch.stack([below, below, one])),
        (torch.stack([below]), torch.stack([below, below, one])),
        # midpoint sums overflow to inf
        (torch.tensor([3.3e38, 3.0e38, 1.0]), torch.tensor([3.2e38, -3.3e38])),
        (torch.tensor([float("inf"), 1.0]), torch.tensor([-float("inf"), 1.0])),
        # mixed dtypes promote like torch.cat
        (
            torch.tensor([0.3, 0.5]),
            torch.tensor([0.1, 0.4], dtype=torch.float64),
        ),
    ]
    for pos, neg in cases:
        assert scoring.EER(pos, neg) == sb_metrics.EER(pos, neg)
        assert scoring.minDCF(pos, neg) == sb_metrics.minDCF(pos, neg)


@pytest.mark.parametrize("function", [scoring.EER, scoring.minDCF])
def test_metric_errors(function):
    good = torch.tensor([0.1, 0.2])
    with pytest.raises(ValueError, match="positive_scores is empty"):
        function(torch.tensor([]), good)
    with pytest.raises(ValueError, match="negative_scores contains NaN"):
        function(good, torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="must be 1-D"):
        function(good.reshape(1, 2), good)


def test_index_trials_maps_back_to_names():
    enrol = ["a", "b", "a", "c", "d"]
    test = ["b", "c", "c", "a", "e"]
    names, enrol_index, test_index = cosine.index_trials(enrol, test)
    assert len(names) == len(set(names)) == 5
    assert [names[i] for i in enrol_index.tolist()] == enrol
    assert [names[i] for i in test_index.tolist()] == test
    with pytest.raises(ValueError, match="2 enrolment names but 1 test"):
        cosine.index_trials(["a", "b"], ["c"])


def test_cosine_scores_equal_per_trial_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(30, 16, generator=g) * 5
    enrol_index = torch.randint(0, 30, (200,), generator=g)
    test_index = torch.randint(0, 30, (200,), generator=g)
    scores = cosine.cosine_score_trials(
        embeddings, enrol_index, test_index, chunk_size=7
    )
    expected = torch.stack(
        [
            F.cosine_similarity(embeddings[e], embeddings[t], dim=0)
            for e, t in zip(enrol_index.tolist(), test_index.tolist())
        ]
    )
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)


def test_int32_indexes_score_exactly_as_a_normalised_copy_did():
    """Without the normalised copy of the embedding table (hundreds of MB
    for millions of trials) the scores are bit-for-bit those of the former
    F.normalize-then-dot, with int32 or int64 indexes, in any chunk size;
    an input with a zero row is unchanged too."""
    g = torch.Generator().manual_seed(3)
    embeddings = torch.randn(500, 64, generator=g) * 3
    embeddings[7] = 0.0
    before = embeddings.clone()
    enrol_index = torch.randint(0, 500, (5000,), generator=g)
    test_index = torch.randint(0, 500, (5000,), generator=g)
    unit = F.normalize(embeddings, dim=1)
    expected = torch.einsum("td,td->t", unit[enrol_index], unit[test_index])
    for chunk_size in (1, 333, 16384):
        for dtype in (torch.int32, torch.int64):
            scores = cosine.cosine_score_trials(
                embeddings,
                enrol_index.to(dtype),
                test_index.to(dtype),
                chunk_size=chunk_size,
            )
            assert torch.equal(scores, expected)
    assert torch.equal(embeddings, before)
    trainable = embeddings.clone().requires_grad_(True)
    scores = cosine.cosine_score_trials(trainable, enrol_index, test_index)
    scores.sum().backward()  # the in-place buffers are for inference only
    assert torch.equal(scores.detach(), expected)
    assert trainable.grad is not None
    mean, std = torch.rand(500, generator=g), torch.rand(500, generator=g) + 1
    assert torch.equal(
        cosine.normalize_scores(
            expected, enrol_index.int(), test_index.int(), mean, std
        ),
        cosine.normalize_scores(expected, enrol_index, test_index, mean, std),
    )


def test_cosine_score_errors():
    emb = torch.randn(4, 3)
    index = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="test_index has rows outside"):
        cosine.cosine_score_trials(emb, index, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="differ in shape"):
        cosine.cosine_score_trials(emb, index, torch.tensor([0]))
    with pytest.raises(ValueError, match="LongTensor"):
        cosine.cosine_score_trials(emb, index.float(), index)


@pytest.mark.parametrize("top_k", [None, 1 + 1, 5])
def test_normalized_scores_equal_per_trial_loop(top_k):
    g = torch.Generator().manual_seed(1)
    embeddings = torch.randn(12, 8, generator=g)
    cohort = torch.randn(9, 8, generator=g)
    enrol_index = torch.randint(0, 12, (40,), generator=g)
    test_index = torch.randint(0, 12, (40,), generator=g)
    scores = cosine.cosine_score_trials(embeddings, enrol_index, test_index)
    mean, std = cosine.cohort_statistics(
        embeddings, cohort, top_k=top_k, chunk_size=5
    )
    ours = cosine.normalize_scores(scores, enrol_index, test_index, mean, std)

    def stats(embedding):
        cohort_scores = F.cosine_similarity(embedding[None], cohort, dim=1)
        if top_k is not None:
            cohort_scores = cohort_scores.sort(descending=True).values[:top_k]
        return cohort_scores.mean(), cohort_scores.std()

    expected = []
    for e, t in zip(enrol_index.tolist(), test_index.tolist()):
        score = F.cosine_similarity(embeddings[e], embeddings[t], dim=0)
        mean_e, std_e = stats(embeddings[e])
        mean_t, std_t = stats(embeddings[t])
        expected.append(
            0.5 * ((score - mean_e) / std_e + (score - mean_t) / std_t)
        )
    torch.testing.assert_close(
        ours, torch.stack(expected), rtol=1e-5, atol=1e-5
    )


def test_normalisation_errors():
    emb, cohort = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="top_k=6 exceeds the cohort size 5"):
        cosine.cohort_statistics(emb, cohort, top_k=6)
    with pytest.raises(ValueError, match="the cohort is empty"):
        cosine.cohort_statistics(emb, torch.randn(0, 3))
    with pytest.raises(ValueError, match="at least 2 cohort scores"):
        cosine.cohort_statistics(emb, cohort, top_k=1)
    with pytest.raises(ValueError, match="cohort has dim 2"):
        cosine.cohort_statistics(emb, torch.randn(5, 2))
    mean, std = cosine.cohort_statistics(emb, cohort)
    index = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="must have the same shape"):
        cosine.normalize_scores(torch.randn(2), index, index, mean, std)
    with pytest.raises(ValueError, match="differ in shape"):
        cosine.normalize_scores(torch.randn(3), index, index, mean, std[:3])
