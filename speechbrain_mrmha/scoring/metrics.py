"""Every verification metric, in one module: EER, minDCF, actDCF and Cllr.

Plain torch tensor code (CPU or GPU, no Python loop over trials):

* :func:`EER` and :func:`minDCF` are drop-in replacements for the functions of
  the same name in ``speechbrain.utils.metric_stats``. They take the same
  arguments, use the same candidate thresholds (every unique score plus the
  midpoint between neighbouring unique scores), reproduce SpeechBrain's float32
  error rates and its tie-breaking rules, and return the same
  ``(value, threshold)`` pair, but sort once and count with
  ``torch.searchsorted`` instead of testing every threshold against every
  trial, so the cost is O(n log n) instead of O(n^2).
* :func:`cllr` (Brummer's Cllr in bits), :func:`min_cllr` (Cllr after the
  optimal monotonic calibration, by pool-adjacent-violators) and
  :func:`act_dcf` (the cost of the Bayes decisions at ``bayes_threshold``,
  in the units of :func:`minDCF`, so ``act_dcf >= minDCF`` of the same
  scores) judge log-likelihood-ratio scores (``scoring.calibration``).
* :func:`detection_report` and :func:`calibration_report`: what a
  verification run reports of a scored trial list (its ``metrics.json``),
  with DCFs normalised by the cost of the best trivial system
  (:func:`dcf_normalizer`), as NIST and the VoxCeleb papers report them.

Authors
 * speechbrain-mrmha contributors
"""

import math

import torch
import torch.nn.functional as F

__all__ = [
    "EER",
    "minDCF",
    "P_TARGETS",
    "act_dcf",
    "bayes_threshold",
    "calibration_report",
    "check_score_vector",
    "cllr",
    "dcf_normalizer",
    "detection_report",
    "min_cllr",
]


def check_score_vector(scores, name, label):
    """Raise a ValueError naming ``name`` and ``label`` unless ``scores`` is
    a non-empty 1-D tensor without NaN.

    Arguments
    ---------
    scores : torch.Tensor
        Scores of one kind of trial.
    name : str
        The function checking (first word of the error).
    label : str
        The argument checked.

    Returns
    -------
    scores : torch.Tensor
        Unchanged.

    Example
    -------
    >>> check_score_vector(torch.ones(2, 2), "EER", "positive_scores")
    Traceback (most recent call last):
    ...
    ValueError: EER: positive_scores must be 1-D, got shape (2, 2)
    """
    if not isinstance(scores, torch.Tensor):
        raise ValueError(f"{name}: {label} must be a torch.Tensor")
    if scores.dim() != 1:
        raise ValueError(
            f"{name}: {label} must be 1-D, got shape {tuple(scores.shape)}"
        )
    if scores.numel() == 0:
        raise ValueError(f"{name}: {label} is empty")
    if torch.isnan(scores).any():
        raise ValueError(f"{name}: {label} contains NaN")
    return scores


def _check_scores(positive_scores, negative_scores, name):
    """Validates and casts score tensors to one floating dtype and device."""
    check_score_vector(positive_scores, name, "positive_scores")
    check_score_vector(negative_scores, name, "negative_scores")
    dtype = torch.result_type(positive_scores, negative_scores)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return positive_scores.to(dtype), negative_scores.to(dtype)


def _error_rates(positive_scores, negative_scores):
    """Candidate thresholds and float32 miss / false-alarm rates at each.

    The candidates are the ones SpeechBrain uses (sorted unique scores and
    the midpoints of neighbours, sorted together); the rates are the same
    float32 quotients SpeechBrain computes. One sort of all scores gives the
    cumulative count of positives and negatives at each unique score; a
    midpoint has the counts of its lower neighbour, or of its upper one when
    float rounding made it equal to that.
    """
    n_pos = positive_scores.shape[0]
    n_neg = negative_scores.shape[0]
    values, order = torch.sort(torch.cat([positive_scores, negative_scores]))
    # last position of each run of equal scores
    ends = torch.nonzero(values[1:] != values[:-1]).squeeze(1)
    ends = torch.cat([ends, ends.new_full((1,), values.shape[0] - 1)])
    unique = values[ends]
    pos_upto = torch.cumsum(order < n_pos, dim=0)[ends]  # positives <= value
    neg_upto = ends + 1 - pos_upto  # negatives <= value
    midpoints = (unique[0:-1] + unique[1:]) / 2
    # rounding keeps unique[i] <= midpoint[i] <= unique[i + 1] unless the sum
    # overflows; then fall back to a plain sort as SpeechBrain does.
    if bool(((midpoints >= unique[0:-1]) & (midpoints <= unique[1:])).all()):
        upper = midpoints == unique[1:]
        mid_pos = torch.where(upper, pos_upto[1:], pos_upto[0:-1])
        mid_neg = torch.where(upper, neg_upto[1:], neg_upto[0:-1])
        thresholds = _interleave(unique, midpoints)
        n_miss = _interleave(pos_upto, mid_pos)
        n_fa = n_neg - _interleave(neg_upto, mid_neg)
    else:
        thresholds, _ = torch.sort(torch.cat([unique, midpoints]))
        sorted_pos, _ = torch.sort(positive_scores)
        sorted_neg, _ = torch.sort(negative_scores)
        n_miss = torch.searchsorted(sorted_pos, thresholds, right=True)
        n_fa = n_neg - torch.searchsorted(sorted_neg, thresholds, right=True)
    p_miss = n_miss.float() / n_pos
    p_fa = n_fa.float() / n_neg
    return thresholds, p_miss, p_fa


def _interleave(at_values, at_midpoints):
    """[v0, m0, v1, m1, ..., v_last] from n values and n - 1 midpoints."""
    pairs = torch.stack([at_values[0:-1], at_midpoints], dim=1).flatten()
    return torch.cat([pairs, at_values[-1:]])


def EER(positive_scores, negative_scores):
    """Computes the equal error rate and its threshold, as SpeechBrain does.

    Same arguments, candidate thresholds and result as
    ``speechbrain.utils.metric_stats.EER``, in O(n log n). SpeechBrain walks
    the candidates in increasing order and moves to a candidate when its
    float32 ``|FAR - FRR|`` is strictly below the float64 ``|FAR - FRR|`` of
    the candidate kept so far. As FAR - FRR never increases with the
    threshold, the kept candidate always ends in the run of candidates whose
    float32 gap equals the smallest one, m: it enters that run at its first
    candidate, then moves one step on while its own float64 gap exceeds m
    (it stops at the first candidate whose float64 gap is <= m, else at the
    end of the run). That rule is applied here directly.

    Arguments
    ---------
    positive_scores : torch.Tensor
        1-D scores of target (same-speaker) trials.
    negative_scores : torch.Tensor
        1-D scores of non-target trials.

    Returns
    -------
    EER : float
        The mean of the false-acceptance and false-rejection rates at the
        chosen threshold.
    threshold : float
        The chosen threshold (a trial is accepted when its score is above it).

    Example
    -------
    >>> positive_scores = torch.tensor([0.6, 0.7, 0.8, 0.5])
    >>> negative_scores = torch.tensor([0.4, 0.3, 0.2, 0.55])
    >>> EER(positive_scores, negative_scores)
    (0.25, 0.5)
    """
    positive_scores, negative_scores = _check_scores(
        positive_scores, negative_scores, "EER"
    )
    thresholds, frr, far = _error_rates(positive_scores, negative_scores)
    gap32 = (far - frr).abs()
    gap64 = (far.double() - frr.double()).abs()
    smallest = gap32.min()
    run = torch.nonzero(gap32 == smallest).squeeze(1)
    first, last = run[0], run[-1]
    positions = torch.arange(thresholds.shape[0], device=thresholds.device)
    # candidates in the run whose float64 gap is <= the smallest float32 gap
    stops = (positions >= first) & (positions <= last) & (gap64 <= smallest)
    index = torch.where(stops.any(), torch.argmax(stops.int()), last)
    eer = (float(far[index]) + float(frr[index])) / 2
    return float(eer), float(thresholds[index])


def minDCF(
    positive_scores, negative_scores, c_miss=1.0, c_fa=1.0, p_target=0.01
):
    """Computes the minimum detection cost and its threshold, as SpeechBrain.

    Same arguments, candidate thresholds and result as
    ``speechbrain.utils.metric_stats.minDCF``:
    ``C_det = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)``
    minimised over the candidates (first minimum on ties), in O(n log n).

    Arguments
    ---------
    positive_scores : torch.Tensor
        1-D scores of target (same-speaker) trials.
    negative_scores : torch.Tensor
        1-D scores of non-target trials.
    c_miss : float
        Cost of a miss (default 1.0).
    c_fa : float
        Cost of a false alarm (default 1.0).
    p_target : float
        Prior probability of a target trial (default 0.01).

    Returns
    -------
    minDCF : float
        The minimum of C_det over the candidate thresholds.
    threshold : float
        The threshold where it is reached.

    Example
    -------
    >>> positive_scores = torch.tensor([0.6, 0.7, 0.8, 0.5])
    >>> negative_scores = torch.tensor([0.4, 0.3, 0.2, 0.55])
    >>> value, threshold = minDCF(positive_scores, negative_scores)
    >>> round(value, 4), threshold
    (0.0025, 0.550000011920929)
    """
    positive_scores, negative_scores = _check_scores(
        positive_scores, negative_scores, "minDCF"
    )
    thresholds, p_miss, p_fa = _error_rates(positive_scores, negative_scores)
    c_det = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    c_min, min_index = torch.min(c_det, dim=0)
    return float(c_min), float(thresholds[min_index])


LN2 = math.log(2.0)


def _as_scores(values, name, label):
    """A 1-D float64 tensor of finite values, or a ValueError naming it."""
    scores = torch.as_tensor(values).detach().to("cpu", torch.float64)
    return check_score_vector(scores, name, label)


def bayes_threshold(p_target=0.01, c_miss=1.0, c_fa=1.0):
    """The LLR above which a Bayes decision accepts a trial:
    ``log(c_fa * (1 - p_target) / (c_miss * p_target))``.

    Arguments
    ---------
    p_target : float
        Prior probability of a same-speaker trial, in (0, 1).
    c_miss : float
        Cost of rejecting a same-speaker trial.
    c_fa : float
        Cost of accepting a different-speaker trial.

    Returns
    -------
    threshold : float
        In nats; 0 at ``p_target = 0.5`` with equal costs.

    Example
    -------
    >>> round(bayes_threshold(0.01), 4), bayes_threshold(0.5)
    (4.5951, 0.0)
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(
            f"c_miss and c_fa must be > 0, got {c_miss} and {c_fa}"
        )
    return math.log(c_fa * (1.0 - p_target)) - math.log(c_miss * p_target)


def dcf_normalizer(p_target=0.01, c_miss=1.0, c_fa=1.0):
    """The cost of the best trivial system (accept all or reject all),
    ``min(c_miss * p_target, c_fa * (1 - p_target))``: divide a DCF by it
    to get the normalised DCF that NIST and the VoxCeleb papers report.

    Arguments
    ---------
    p_target, c_miss, c_fa : float
        The operating point (see ``bayes_threshold``).

    Returns
    -------
    normalizer : float

    Example
    -------
    >>> dcf_normalizer(0.01)
    0.01
    """
    return min(c_miss * p_target, c_fa * (1.0 - p_target))


def cllr(target_llrs, nontarget_llrs):
    """Brummer's log-likelihood-ratio cost in bits:
    ``(mean_t log2(1 + e^-llr) + mean_n log2(1 + e^llr)) / 2``.

    0 for perfect, confident LLRs; 1 for a system that always says
    ``llr = 0`` (no information); well-calibrated LLRs stay <= 1, and above 1
    they are worse than saying nothing.

    Arguments
    ---------
    target_llrs : torch.Tensor
        1-D LLRs of same-speaker trials.
    nontarget_llrs : torch.Tensor
        1-D LLRs of different-speaker trials.

    Returns
    -------
    cllr : float

    Example
    -------
    >>> cllr(torch.zeros(3), torch.zeros(5))
    1.0
    >>> round(cllr(torch.tensor([4.0, 6.0]), torch.tensor([-5.0, -3.0])), 4)
    0.0274
    """
    target = _as_scores(target_llrs, "cllr", "target_llrs")
    nontarget = _as_scores(nontarget_llrs, "cllr", "nontarget_llrs")
    miss = F.softplus(-target).mean()
    false_alarm = F.softplus(nontarget).mean()
    return float((miss + false_alarm) / (2 * LN2))


def min_cllr(target_scores, nontarget_scores):
    """Cllr after the best monotonic (non-decreasing) calibration of the
    scores, fitted on these very trials by pool-adjacent-violators: what is
    left once calibration is perfect, so ``cllr - min_cllr`` is the
    calibration loss.

    Arguments
    ---------
    target_scores : torch.Tensor
        1-D scores (any scale) of same-speaker trials.
    nontarget_scores : torch.Tensor
        1-D scores of different-speaker trials.

    Returns
    -------
    min_cllr : float
        In [0, 1].

    Example
    -------
    >>> min_cllr(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2]))
    0.0
    >>> min_cllr(torch.tensor([0.5]), torch.tensor([0.5]))
    1.0
    """
    target = _as_scores(target_scores, "min_cllr", "target_scores")
    nontarget = _as_scores(nontarget_scores, "min_cllr", "nontarget_scores")
    scores = torch.cat([target, nontarget])
    is_target = torch.cat(
        [torch.ones_like(target), torch.zeros_like(nontarget)]
    )
    unique, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    targets = torch.zeros_like(unique).index_add_(0, inverse, is_target)
    counts = torch.zeros_like(unique).index_add_(
        0, inverse, torch.ones_like(is_target)
    )
    # pool adjacent violators: blocks of (targets, trials) with increasing
    # target fraction
    blocks = []
    for t, n in zip(targets.tolist(), counts.tolist()):
        blocks.append([t, n])
        while (
            len(blocks) > 1
            and blocks[-2][0] * blocks[-1][1] >= blocks[-1][0] * blocks[-2][1]
        ):
            t_last, n_last = blocks.pop()
            blocks[-1][0] += t_last
            blocks[-1][1] += n_last
    n_target, n_nontarget = target.numel(), nontarget.numel()
    log_prior_odds = math.log(n_target / n_nontarget)
    miss = false_alarm = 0.0
    for t, n in blocks:
        nt = n - t
        if t and nt:
            llr = math.log(t / nt) - log_prior_odds
            miss += t * _softplus(-llr)
            false_alarm += nt * _softplus(llr)
    # blocks of one class only get an infinite LLR of the right sign: no cost
    return (miss / n_target + false_alarm / n_nontarget) / (2 * LN2)


def _softplus(x):
    """log(1 + e^x) of a Python float, without overflow."""
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def act_dcf(target_llrs, nontarget_llrs, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """The detection cost of the Bayes decisions taken by the LLRs,
    ``c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)`` with
    "accept when ``llr > bayes_threshold(p_target, c_miss, c_fa)``".

    Unnormalised and with the float32 error rates of ``scoring.minDCF``, so
    it equals ``minDCF`` of the same LLRs exactly when the Bayes threshold
    makes the decisions of the minDCF threshold, and is >= it otherwise
    (minDCF's candidates are every "accept above t" decision except
    "accept all", which costs ``c_fa * (1 - p_target)``, more than "reject
    all" whenever ``c_miss * p_target <= c_fa * (1 - p_target)``, e.g. at
    every ``p_target <= 0.5`` with equal costs). Divide by
    ``dcf_normalizer`` for the normalised value.

    Arguments
    ---------
    target_llrs : torch.Tensor
        1-D LLRs of same-speaker trials.
    nontarget_llrs : torch.Tensor
        1-D LLRs of different-speaker trials.
    p_target, c_miss, c_fa : float
        The operating point.

    Returns
    -------
    act_dcf : float

    Example
    -------
    >>> target, nontarget = torch.tensor([5.0, 1.0]), torch.tensor([-3.0, 6.0])
    >>> round(act_dcf(target, nontarget, p_target=0.01), 4)  # 1 miss, 1 fa
    0.5
    """
    target = _as_scores(target_llrs, "act_dcf", "target_llrs")
    nontarget = _as_scores(nontarget_llrs, "act_dcf", "nontarget_llrs")
    threshold = bayes_threshold(p_target, c_miss, c_fa)
    # the same float32 quotients and expression as scoring.minDCF
    p_miss = (target <= threshold).sum().float() / target.numel()
    p_fa = (nontarget > threshold).sum().float() / nontarget.numel()
    return float(c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target))


P_TARGETS = ((0.01, ""), (0.05, "_p0.05"))


def detection_report(target_scores, nontarget_scores, c_miss=1.0, c_fa=1.0):
    """EER (%) and its threshold, normalised minDCF at p_target 0.01 and
    0.05 and the raw minDCF at 0.01, and the trial counts.

    Arguments
    ---------
    target_scores, nontarget_scores : torch.Tensor
        Scores of the target and non-target trials.
    c_miss, c_fa : float
        The costs of a miss and of a false alarm.

    Returns
    -------
    report : dict
        ``EER``, ``EER_threshold``, ``minDCF``, ``minDCF_p0.05``,
        ``minDCF_unnormalized``, ``n_trials``, ``n_target``.

    Example
    -------
    >>> import torch
    >>> report = detection_report(torch.tensor([0.9, 0.8, 0.3]),
    ...                           torch.tensor([0.1, 0.2, 0.4, 0.35]))
    >>> report["EER"], report["n_trials"], report["n_target"]
    (29.1667, 7, 3)
    """
    eer, threshold = EER(target_scores, nontarget_scores)
    report = {"EER": round(100 * float(eer), 4)}
    report["EER_threshold"] = float(threshold)
    for p_target, suffix in P_TARGETS:
        dcf, _ = minDCF(
            target_scores, nontarget_scores, c_miss, c_fa, p_target=p_target
        )
        normalizer = dcf_normalizer(p_target, c_miss, c_fa)
        report[f"minDCF{suffix}"] = round(float(dcf) / normalizer, 4)
        if not suffix:
            unnormalized = round(float(dcf), 6)
    report["minDCF_unnormalized"] = unnormalized
    report["n_trials"] = len(target_scores) + len(nontarget_scores)
    report["n_target"] = len(target_scores)
    return report


def calibration_report(target_llrs, nontarget_llrs, c_miss=1.0, c_fa=1.0):
    """Cllr and minCllr (bits) and normalised actDCF at p_target 0.01 and
    0.05 of log-likelihood ratios.

    Arguments
    ---------
    target_llrs, nontarget_llrs : torch.Tensor
        LLRs (nats) of the target and non-target trials.
    c_miss, c_fa : float
        The costs of a miss and of a false alarm.

    Returns
    -------
    report : dict
        ``Cllr``, ``minCllr``, ``actDCF``, ``actDCF_p0.05``.

    Example
    -------
    >>> import torch
    >>> report = calibration_report(torch.tensor([6.0, 7.0]), torch.tensor([-2.0, -1.0]))
    >>> report["minCllr"], report["actDCF"]
    (0.0, 0.0)
    """
    report = {
        "Cllr": round(cllr(target_llrs, nontarget_llrs), 4),
        "minCllr": round(min_cllr(target_llrs, nontarget_llrs), 4),
    }
    for p_target, suffix in P_TARGETS:
        value = act_dcf(target_llrs, nontarget_llrs, p_target, c_miss, c_fa)
        normalizer = dcf_normalizer(p_target, c_miss, c_fa)
        report[f"actDCF{suffix}"] = round(value / normalizer, 4)
    return report
