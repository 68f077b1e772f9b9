"""Calibration of cosine scores to log-likelihood ratios (the metrics that
judge it, Cllr and actDCF, are in ``scoring.metrics``).

A calibrated score is a log-likelihood ratio (LLR, natural log)::

    llr = log p(score | same speaker) / p(score | different speakers)

so that, at a prior ``p_target`` of a same-speaker trial and costs
``c_miss`` / ``c_fa``, the Bayes decision is "accept when
``llr > log(c_fa * (1 - p_target) / (c_miss * p_target))``" (at
``p_target = 0.5`` and equal costs: ``llr > 0``), with no threshold tuned on
the evaluation data.

* :func:`fit_calibration` fits ``llr = a * s + b`` (linear logistic
  regression, as in Brummer's FoCal / BOSARIS), optionally with quality
  measures ``+ c * min(log d_e, log d_t) + d * max(log d_e, log d_t)`` of
  the two utterance durations (QMF), by minimising the prior-weighted
  cross-entropy in float64 with Newton's method. It returns a
  :class:`Calibration`, which also stores the cosine thresholds at the EER
  and minDCF points of its calibration trials with their LLR values.

Why the training prior defaults to 0.5: at 0.5 the objective is Cllr itself
(up to the factor ``1 / log 2``), which integrates the cost over all
operating points, so one fit serves any ``p_target``; the target and
non-target terms are averaged separately, so the usual surplus of
non-target trials does not tilt the fit. A DCF prior (0.01) would spend
the fit on the few trials around one operating point.

A calibration is bound to the model it was fitted on: ``fitted_on``
records the sha256 of that model's weights (``embedding_model.ckpt``), and
:meth:`Calibration.check_model` refuses it next to other weights. Files of
the same format written before the fingerprint existed have none: they
still load, with a warning that the match cannot be checked. A loaded
calibration must also be usable (:meth:`Calibration.problems`): a positive
slope, and stored thresholds whose LLR is ``slope * cosine + offset``.

Authors
 * speechbrain-mrmha contributors
"""

import itertools
import logging
import math
import random
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from speechbrain_mrmha.scoring.metrics import (
    EER,
    _as_scores,
    act_dcf,
    bayes_threshold,
    cllr,
    dcf_normalizer,
    min_cllr,
    minDCF,
)

__all__ = [
    "Calibration",
    "fit_calibration",
    "quality_features",
    "sample_trials",
]

logger = logging.getLogger(__name__)
# unchanged: files without ``fitted_on`` (older ones) load, with a warning
FORMAT = "speechbrain_mrmha.calibration/1"
# a stored threshold's llr must equal slope * cosine + offset up to this
# (relative and absolute; fit_calibration stores them exactly)
THRESHOLD_TOLERANCE = 1e-6
DEFAULT_PRIOR = 0.5
# A small L2 penalty on the slopes (not the offset) keeps the fit finite when
# the calibration trials are separable (a tiny corpus, a very good model);
# next to a cross-entropy of order 0.1 nats it moves a slope of 20 by ~0.1 %.
DEFAULT_REGULARIZATION = 1e-5


def quality_features(enrol_durations, test_durations):
    """The quality measures of a trial: ``min`` and ``max`` of the natural
    logs of the two utterance durations (seconds), so that a trial's
    measures do not depend on which side is the enrolment.

    Arguments
    ---------
    enrol_durations : torch.Tensor
        (n_trials,) enrolment durations in seconds (> 0).
    test_durations : torch.Tensor
        (n_trials,) test durations in seconds (> 0).

    Returns
    -------
    features : torch.Tensor
        (n_trials, 2) float64: min and max log-duration.

    Example
    -------
    >>> quality_features(torch.tensor([1.0, 4.0]), torch.tensor([2.0, 2.0]))
    tensor([[0.0000, 0.6931],
            [0.6931, 1.3863]], dtype=torch.float64)
    """
    enrol = _as_scores(enrol_durations, "quality_features", "enrol_durations")
    test = _as_scores(test_durations, "quality_features", "test_durations")
    if enrol.shape != test.shape:
        raise ValueError(
            f"quality_features: {enrol.numel()} enrolment durations but "
            f"{test.numel()} test durations"
        )
    if (enrol <= 0).any() or (test <= 0).any():
        raise ValueError("quality_features: durations must be > 0 seconds")
    logs = torch.stack([enrol.log(), test.log()], dim=1)
    return torch.stack([logs.min(dim=1).values, logs.max(dim=1).values], 1)


def _design(scores, durations, quality, name):
    """Rows [score, (min log d, max log d,) 1] of a set of trials."""
    scores = _as_scores(scores, name, "scores")
    columns = [scores.unsqueeze(1)]
    if quality:
        if durations is None:
            raise ValueError(
                f"{name}: this calibration uses quality measures: give the "
                "durations of both sides of every trial"
            )
        durations = torch.as_tensor(durations, dtype=torch.float64)
        if durations.shape != (scores.numel(), 2):
            raise ValueError(
                f"{name}: durations must be (n_trials, 2) = "
                f"({scores.numel()}, 2), got {tuple(durations.shape)}"
            )
        columns.append(quality_features(durations[:, 0], durations[:, 1]))
    columns.append(torch.ones_like(scores).unsqueeze(1))
    return torch.cat(columns, dim=1)


def _objective(params, target_rows, nontarget_rows, prior, regularization):
    """Prior-weighted cross-entropy (nats) with its gradient and Hessian."""
    offset = math.log(prior / (1.0 - prior))
    penalty = torch.ones_like(params)
    penalty[-1] = 0.0  # the offset is not penalised
    value = regularization / 2 * (penalty * params**2).sum()
    gradient = regularization * penalty * params
    hessian = torch.diag(regularization * penalty)
    for rows, sign, weight in (
        (target_rows, -1.0, prior),
        (nontarget_rows, 1.0, 1.0 - prior),
    ):
        log_odds = rows @ params + offset
        value = value + weight * F.softplus(sign * log_odds).mean()
        slope = torch.sigmoid(sign * log_odds) * sign  # d softplus / d z
        curvature = torch.sigmoid(log_odds) * torch.sigmoid(-log_odds)
        gradient = gradient + weight * rows.T @ slope / rows.shape[0]
        hessian = hessian + weight * (rows.T * curvature) @ rows / rows.shape[0]
    return value, gradient, hessian


def _newton(target_rows, nontarget_rows, prior, regularization):
    """Minimise the convex objective by damped Newton steps."""
    params = torch.zeros(target_rows.shape[1], dtype=torch.float64)
    args = (target_rows, nontarget_rows, prior, regularization)
    value, gradient, hessian = _objective(params, *args)
    for _ in range(100):
        if float(gradient.abs().max()) < 1e-12:
            break
        eye = torch.eye(hessian.shape[0], dtype=torch.float64)
        step = torch.linalg.solve(hessian + 1e-12 * eye, gradient)
        size = 1.0
        while size > 1e-10:
            trial = params - size * step
            trial_value, trial_gradient, trial_hessian = _objective(
                trial, *args
            )
            if trial_value <= value:
                break
            size /= 2
        else:
            break  # no decrease left: at the optimum up to rounding
        params, value = trial, trial_value
        gradient, hessian = trial_gradient, trial_hessian
    return params


@dataclass
class Calibration:
    """A linear calibration of cosine scores to LLRs (nats):
    ``llr = slope * s + offset`` (+ ``quality_weights`` . ``quality_features``
    of the two durations, when ``quality``), with the operating point its
    decisions use and what was measured on its calibration trials.

    Arguments
    ---------
    slope : float
        ``a``, LLR per unit of cosine.
    offset : float
        ``b``, the LLR of a cosine of 0 (with quality: of 1 s utterances).
    quality_weights : list of float
        ``[c, d]`` for min / max log-duration; empty without quality.
    prior : float
        The prior the fit was trained at.
    regularization : float
        The L2 penalty on the slopes used in the fit.
    p_target, c_miss, c_fa : float
        The operating point of ``decide`` and of the stored minDCF threshold.
    thresholds : dict
        ``{"eer": {...}, "min_dcf": {...}}``: each with ``cosine`` (the
        threshold on raw cosine scores of the calibration trials, a trial is
        accepted above it), ``llr`` (the same point on the calibrated LLRs)
        and ``value`` (the EER or the unnormalised minDCF there).
    statistics : dict
        Trial and speaker counts, Cllr (raw cosine and calibrated), minCllr,
        actDCF and minDCF on the calibration trials.
    fitted_on : dict
        File name -> sha256 of the model files it was fitted on
        (``{"embedding_model.ckpt": ...}``); empty when unknown (files
        written before it was recorded). See ``check_model``.

    Example
    -------
    >>> cal = Calibration(slope=10.0, offset=-5.0)
    >>> cal.llr(torch.tensor([0.25, 0.75]))
    tensor([-2.5000,  2.5000], dtype=torch.float64)
    >>> cal.decide(cal.llr(torch.tensor([0.25, 0.75])), p_target=0.5)
    tensor([False,  True])
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
    """

    slope: float
    offset: float
    quality_weights: list = field(default_factory=list)
    prior: float = DEFAULT_PRIOR
    regularization: float = DEFAULT_REGULARIZATION
    p_target: float = 0.01
    c_miss: float = 1.0
    c_fa: float = 1.0
    thresholds: dict = field(default_factory=dict)
    statistics: dict = field(default_factory=dict)
    fitted_on: dict = field(default_factory=dict)

    @property
    def quality(self):
        """True when the LLR also depends on the utterance durations."""
        return bool(self.quality_weights)

    def _params(self):
        return torch.tensor(
            [self.slope, *self.quality_weights, self.offset],
            dtype=torch.float64,
        )

    def llr(self, scores, durations=None):
        """Calibrated LLRs (nats) of raw cosine scores.

        Arguments
        ---------
        scores : torch.Tensor
            (n_trials,) cosine scores.
        durations : torch.Tensor, optional
            (n_trials, 2) enrolment and test durations in seconds; needed
            when ``quality`` is True, ignored otherwise.

        Returns
        -------
        llrs : torch.Tensor
            (n_trials,) float64.

        Example
        -------
        >>> cal = Calibration(slope=8.0, offset=-4.0, quality_weights=[1.0, 0.0])
        >>> cal.llr(torch.tensor([0.5]), torch.tensor([[1.0, 3.0]]))
        tensor([0.], dtype=torch.float64)
        """
        return _design(scores, durations, self.quality, "llr") @ self._params()

    def decision_threshold(self, p_target=None, c_miss=None, c_fa=None):
        """The Bayes LLR threshold at the given operating point (default:
        the calibration's own ``p_target``, ``c_miss``, ``c_fa``).

        Arguments
        ---------
        p_target, c_miss, c_fa : float, optional

        Returns
        -------
        threshold : float
            Accept a trial when its LLR is above it.

        Example
        -------
        >>> round(Calibration(slope=1.0, offset=0.0).decision_threshold(), 4)
        4.5951
        """
        return bayes_threshold(
            self.p_target if p_target is None else p_target,
            self.c_miss if c_miss is None else c_miss,
            self.c_fa if c_fa is None else c_fa,
        )

    def decide(self, llrs, p_target=None, c_miss=None, c_fa=None):
        """Bayes decisions: True (same speaker) where ``llrs`` exceed
        ``decision_threshold``.

        Arguments
        ---------
        llrs : torch.Tensor
            Calibrated LLRs (``llr``).
        p_target, c_miss, c_fa : float, optional
            The operating point (default: the calibration's own).

        Returns
        -------
        accept : torch.BoolTensor

        Example
        -------
        >>> Calibration(slope=1.0, offset=0.0).decide(torch.tensor([4.0, 5.0]))
        tensor([False,  True])
        """
        return torch.as_tensor(llrs) > self.decision_threshold(
            p_target, c_miss, c_fa
        )

    def summary(self):
        """One line on the mapping and how well it calibrates its trials.

        Returns
        -------
        str

        Example
        -------
        >>> stats = dict(n_target=2, n_nontarget=8, n_speakers=5, cllr=0.5,
        ...              cllr_raw=0.9, act_dcf_normalized=0.7,
        ...              min_dcf_normalized=0.6)
        >>> print(Calibration(12.0, -3.0, statistics=stats).summary())
        llr = 12.000 * cosine -3.000 on 10 trials of 5 speakers: Cllr 0.5000 (raw cosine 0.9000), actDCF 0.7000, minDCF 0.6000
        """
        s = self.statistics
        return (
            f"llr = {self.slope:.3f} * cosine {self.offset:+.3f} on "
            f"{s['n_target'] + s['n_nontarget']} trials of "
            f"{s['n_speakers']} speakers: Cllr {s['cllr']:.4f} (raw cosine "
            f"{s['cllr_raw']:.4f}), actDCF {s['act_dcf_normalized']:.4f}, "
            f"minDCF {s['min_dcf_normalized']:.4f}"
        )

    def problems(self):
        """What makes this calibration unusable: a slope that is not
        positive (a higher cosine would mean less evidence of the same
        speaker), stored thresholds that are not finite, not cosines in
        [-1, 1], or whose ``llr`` is not ``slope * cosine + offset`` (so,
        with the positive slope, higher cosine thresholds have higher LLRs).
        With quality measures the LLR also depends on the durations, and
        only finiteness and range are checked.

        Returns
        -------
        problems : list of str
            One line each; empty when it is usable.

        Example
        -------
        >>> Calibration(slope=-2.0, offset=0.0).problems()
        ['slope -2.0 is not positive: a higher cosine must mean more evidence of the same speaker']
        >>> bad = {"eer": {"cosine": 0.5, "llr": 3.0, "value": 0.1}}
        >>> Calibration(slope=2.0, offset=0.0, thresholds=bad).problems()
        ['thresholds.eer: llr 3.0 is not slope * cosine + offset = 1.0']
        """
        problems = []
        if self.slope <= 0:
            problems.append(
                f"slope {self.slope!r} is not positive: a higher cosine must "
                "mean more evidence of the same speaker"
            )
        for name, entry in self.thresholds.items():
            where = f"thresholds.{name}"
            if not isinstance(entry, dict) or not all(
                _is_finite_number(entry.get(key)) for key in ("cosine", "llr")
            ):
                problems.append(f"{where}: needs finite cosine and llr")
                continue
            cosine, llr = entry["cosine"], entry["llr"]
            if not -1.0 <= cosine <= 1.0:
                problems.append(f"{where}: cosine {cosine!r} is not in [-1, 1]")
                continue
            expected = self.slope * cosine + self.offset
            if not self.quality and not math.isclose(
                llr,
                expected,
                rel_tol=THRESHOLD_TOLERANCE,
                abs_tol=THRESHOLD_TOLERANCE,
            ):
                problems.append(
                    f"{where}: llr {llr!r} is not slope * cosine + offset "
                    f"= {expected!r}"
                )
        return problems

    def check_model(self, fingerprint, source, model):
        """Refuse this calibration next to weights other than those it was
        fitted on; warn when it records none (a file written before
        ``fitted_on`` existed: it loads, but the match cannot be checked).

        Arguments
        ---------
        fingerprint : dict
            File name -> sha256 of the model it is to be used with.
        source : str
            Where the calibration came from (its file), for messages.
        model : str
            Where the model files are (a folder or an exported file).

        Raises
        ------
        ValueError
            Naming both the calibration and the weights, when a file it
            was fitted on has other content (or is not there).

        Example
        -------
        >>> cal = Calibration(slope=2.0, offset=0.0,
        ...                   fitted_on={"embedding_model.ckpt": "ab12"})
        >>> cal.check_model({"embedding_model.ckpt": "ab12"}, "cal.json", "m")
        >>> cal.check_model({"embedding_model.ckpt": "cd34"}, "cal.json", "m")
        Traceback (most recent call last):
        ...
        ValueError: cal.json was fitted on other weights than m/embedding_model.ckpt (sha256 ab12 there, cd34 here): it is another model's calibration; refit it (calibrate_pretrained) or remove it
        """
        if not self.fitted_on:
            logger.warning(
                "%s records no fingerprint of the weights it was fitted on "
                "(written before calibrations recorded it): it cannot be "
                "checked against %s; refit it (calibrate_pretrained) to bind "
                "it to its model",
                source,
                model,
            )
            return
        for name, digest in self.fitted_on.items():
            have = fingerprint.get(name)
            if have != digest:
                raise ValueError(
                    f"{source} was fitted on other weights than "
                    f"{model}/{name} (sha256 {digest} there, "
                    f"{have or 'no such file'} here): it is another model's "
                    "calibration; refit it (calibrate_pretrained) or remove it"
                )

    def to_dict(self):
        """A JSON-ready dict (with a ``format`` tag).

        Returns
        -------
        dict

        Example
        -------
        >>> Calibration(slope=2.0, offset=1.0).to_dict()["format"]
        'speechbrain_mrmha.calibration/1'
        """
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data, source="calibration"):
        """Rebuild a calibration from ``to_dict`` output, with a clear error
        naming ``source`` when anything is missing or of the wrong kind.

        Arguments
        ---------
        data : dict
        source : str
            What the data came from (a file name), for errors.

        Returns
        -------
        Calibration

        Example
        -------
        >>> Calibration.from_dict({"format": "speechbrain_mrmha.calibration/1"})
        Traceback (most recent call last):
        ...
        ValueError: calibration: missing slope, offset
        """
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object")
        if data.get("format") != FORMAT:
            raise ValueError(
                f"{source}: format {data.get('format')!r} is not {FORMAT!r}"
            )
        missing = [k for k in ("slope", "offset") if k not in data]
        if missing:
            raise ValueError(f"{source}: missing {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known - {"format"})
        if unknown:
            raise ValueError(f"{source}: unknown keys {', '.join(unknown)}")
        values = {k: v for k, v in data.items() if k in known}
        numbers = ["slope", "offset", "prior", "regularization"]
        numbers += ["p_target", "c_miss", "c_fa"]
        weights = values.get("quality_weights", [])
        for key in numbers:
            if key in values and not _is_finite_number(values[key]):
                raise ValueError(
                    f"{source}: {key} must be a finite number, "
                    f"got {values[key]!r}"
                )
        if not isinstance(weights, list) or len(weights) not in (0, 2):
            raise ValueError(
                f"{source}: quality_weights must be a list of 0 or 2 numbers"
            )
        if not all(_is_finite_number(w) for w in weights):
            raise ValueError(f"{source}: quality_weights must be finite")
        for key in ("thresholds", "statistics", "fitted_on"):
            if not isinstance(values.get(key, {}), dict):
                raise ValueError(f"{source}: {key} must be an object")
        if not all(
            isinstance(v, str) for v in values.get("fitted_on", {}).values()
        ):
            raise ValueError(f"{source}: fitted_on must map names to digests")
        calibration = cls(**values)
        problems = calibration.problems()
        if problems:
            raise ValueError(
                f"{source}: not a usable calibration:\n"
                + "\n".join(f"  {problem}" for problem in problems)
            )
        return calibration


def _is_finite_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def fit_calibration(
    target_scores,
    nontarget_scores,
    target_durations=None,
    nontarget_durations=None,
    quality=False,
    prior=DEFAULT_PRIOR,
    regularization=DEFAULT_REGULARIZATION,
    p_target=0.01,
    c_miss=1.0,
    c_fa=1.0,
):
    """Fit ``llr = a * s + b`` (+ quality terms) to calibration trials.

    Minimises, in float64 by Newton's method (the objective is convex),
    the prior-weighted cross-entropy of BOSARIS::

        prior * mean_t log(1 + exp(-(llr_t + logit prior)))
        + (1 - prior) * mean_n log(1 + exp(llr_n + logit prior))
        + regularization / 2 * (a^2 + c^2 + d^2)

    then measures the fit on the same trials: thresholds at the EER and
    minDCF points (raw cosine and calibrated), Cllr, minCllr, actDCF and
    minDCF.

    Arguments
    ---------
    target_scores : torch.Tensor
        1-D cosine scores of same-speaker calibration trials.
    nontarget_scores : torch.Tensor
        1-D cosine scores of different-speaker calibration trials.
    target_durations, nontarget_durations : torch.Tensor, optional
        (n, 2) durations in seconds of both sides of each trial; needed
        with ``quality``.
    quality : bool
        Add the duration quality measures (QMF).
    prior : float
        Effective prior of the training objective (see the module
        docstring for why 0.5).
    regularization : float
        L2 penalty on the slopes (>= 0).
    p_target, c_miss, c_fa : float
        Operating point of the stored minDCF threshold, of actDCF and of
        ``Calibration.decide``.

    Returns
    -------
    Calibration

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> target = 0.6 + 0.1 * torch.randn(200, generator=g)
    >>> nontarget = 0.1 * torch.randn(2000, generator=g)
    >>> cal = fit_calibration(target, nontarget)
    >>> cal.slope > 0, cal.statistics["cllr"] < cal.statistics["cllr_raw"]
    (True, True)
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(
            f"fit_calibration: prior must be in (0, 1), got {prior}"
        )
    if regularization < 0:
        raise ValueError(
            f"fit_calibration: regularization must be >= 0, got {regularization}"
        )
    bayes_threshold(p_target, c_miss, c_fa)  # checks the operating point
    name = "fit_calibration"
    target_rows = _design(target_scores, target_durations, quality, name)
    nontarget_rows = _design(
        nontarget_scores, nontarget_durations, quality, name
    )
    params = _newton(target_rows, nontarget_rows, prior, regularization)
    calibration = Calibration(
        slope=float(params[0]),
        offset=float(params[-1]),
        quality_weights=[float(w) for w in params[1:-1]],
        prior=float(prior),
        regularization=float(regularization),
        p_target=float(p_target),
        c_miss=float(c_miss),
        c_fa=float(c_fa),
    )
    target_raw, nontarget_raw = target_rows[:, 0], nontarget_rows[:, 0]
    target_llr = target_rows @ params
    nontarget_llr = nontarget_rows @ params
    operating = {"p_target": p_target, "c_miss": c_miss, "c_fa": c_fa}
    eer, eer_cosine = EER(target_raw, nontarget_raw)
    _, eer_llr = EER(target_llr, nontarget_llr)
    dcf, dcf_cosine = minDCF(target_raw, nontarget_raw, **operating)
    dcf_llr_value, dcf_llr = minDCF(target_llr, nontarget_llr, **operating)
    calibration.thresholds = {
        "eer": {"cosine": eer_cosine, "llr": eer_llr, "value": eer},
        "min_dcf": {"cosine": dcf_cosine, "llr": dcf_llr, "value": dcf},
    }
    actual = act_dcf(target_llr, nontarget_llr, **operating)
    calibration.statistics = {
        "n_target": int(target_rows.shape[0]),
        "n_nontarget": int(nontarget_rows.shape[0]),
        "cllr_raw": cllr(target_raw, nontarget_raw),
        "cllr": cllr(target_llr, nontarget_llr),
        "min_cllr": min_cllr(target_llr, nontarget_llr),
        "act_dcf": actual,
        "min_dcf": dcf_llr_value,
        "act_dcf_normalized": actual / dcf_normalizer(**operating),
        "min_dcf_normalized": dcf_llr_value / dcf_normalizer(**operating),
    }
    return calibration


def sample_trials(speakers, max_trials=100000, seed=0):
    """Calibration trials among utterances of known speakers: every
    same-speaker pair (a seeded sample of ``max_trials // 2`` when there are
    more) and a seeded sample of different-speaker pairs filling up to
    ``max_trials`` (all of them when there are fewer). Each unordered pair
    appears at most once.

    Arguments
    ---------
    speakers : list of str
        The speaker of each utterance.
    max_trials : int
        Most trials returned (>= 2).
    seed : int
        Seed of the samples.

    Returns
    -------
    enrol_index : torch.LongTensor
        (n_trials,) utterance of one side of each trial.
    test_index : torch.LongTensor
        (n_trials,) the other side (``enrol_index < test_index``).
    labels : torch.BoolTensor
        (n_trials,) True for same-speaker trials (listed first).

    Example
    -------
    >>> e, t, labels = sample_trials(["a", "a", "b", "b"], max_trials=10)
    >>> list(zip(e.tolist(), t.tolist())), labels.tolist()
    ([(0, 1), (2, 3), (0, 2), (0, 3), (1, 2), (1, 3)], [True, True, False, False, False, False])
    """
    if max_trials < 2:
        raise ValueError(
            f"sample_trials: max_trials must be >= 2, got {max_trials}"
        )
    groups = {}
    for index, speaker in enumerate(speakers):
        groups.setdefault(speaker, []).append(index)
    rng = random.Random(f"calibration-trials:{seed}")
    targets = [
        pair
        for members in groups.values()
        for pair in itertools.combinations(members, 2)
    ]
    if not targets or len(groups) < 2:
        raise ValueError(
            "sample_trials: calibration needs two speakers and one speaker "
            f"with two utterances; got {len(speakers)} utterances of "
            f"{len(groups)} speakers"
        )
    if len(targets) > max_trials // 2:
        targets = sorted(rng.sample(targets, max_trials // 2))
    n = len(speakers)
    n_nontarget = (n * n - sum(len(m) ** 2 for m in groups.values())) // 2
    wanted = min(n_nontarget, max_trials - len(targets))
    if 2 * wanted >= n_nontarget:  # dense: enumerate, then sample
        pairs = [
            (i, j)
            for i, j in itertools.combinations(range(n), 2)
            if speakers[i] != speakers[j]
        ]
        nontargets = sorted(rng.sample(pairs, wanted))
    else:  # sparse: draw pairs until enough distinct ones
        chosen = set()
        while len(chosen) < wanted:
            i, j = rng.randrange(n), rng.randrange(n)
            if speakers[i] != speakers[j]:
                chosen.add((min(i, j), max(i, j)))
        nontargets = sorted(chosen)
    pairs = torch.tensor(targets + nontargets, dtype=torch.long)
    labels = torch.zeros(pairs.shape[0], dtype=torch.bool)
    labels[: len(targets)] = True
    return pairs[:, 0], pairs[:, 1], labels
