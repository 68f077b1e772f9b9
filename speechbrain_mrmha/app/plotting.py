"""Figures: attention weights along time with each head's entropy (the
paper's Fig. 2), DET curves with their EER points, target / non-target score
histograms.

matplotlib is an optional extra (``pip install speechbrain-mrmha[plot]``); it
is imported inside the functions and drives the Agg canvas directly (no
pyplot, no display needed). Every figure is written atomically
(``io.atomic_write``). Score files are read by ``trials.read_scores``.

Reference
---------
Zhiming Wang, Kaisheng Yao, Xiaolong Li, Shuo Fang, "Multi-Resolution
Multi-Head Attention in Deep Speaker Embedding", ICASSP 2020 (Fig. 2).

Authors
 * speechbrain-mrmha developers
"""

import os
from pathlib import Path
from typing import NamedTuple

import torch

from speechbrain_mrmha.dataio.files import atomic_write
from speechbrain_mrmha.dataio.trials import TrialScores, read_scores
from speechbrain_mrmha.layers.pooling import attention_entropy
from speechbrain_mrmha.scoring.metrics import EER

__all__ = [
    "DetCurve",
    "det_curve",
    "plot_attention",
    "plot_det",
    "plot_score_histograms",
]

_DET_TICKS = (
    0.0001,
    0.001,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    0.9,
    0.95,
    0.98,
    0.99,
    0.999,
    0.9999,
)


class DetCurve(NamedTuple):
    """Operating points of a detector and its equal error rate.

    Arguments
    ---------
    p_fa, p_miss : torch.Tensor
        False-alarm and miss probabilities, one point per threshold (a trial
        is accepted when its score is above it): first accepting every
        trial, then at each unique score in increasing order.
    eer, threshold : float
        The result of ``speechbrain_mrmha.scoring.metrics.EER``.
    eer_p_fa, eer_p_miss : float
        The error rates at that threshold (their mean is ``eer``).

    Example
    -------
    >>> DetCurve._fields[-2:]
    ('eer_p_fa', 'eer_p_miss')
    """

    p_fa: torch.Tensor
    p_miss: torch.Tensor
    eer: float
    threshold: float
    eer_p_fa: float
    eer_p_miss: float


def _matplotlib():
    """Figure and Agg canvas classes, or an ImportError saying how to get them."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "speechbrain_mrmha.app.plotting needs matplotlib, an optional extra: "
            f"pip install speechbrain-mrmha[plot] ({error})"
        ) from None
    return Figure, FigureCanvasAgg


def _new_figure(width, height):
    Figure, FigureCanvasAgg = _matplotlib()
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, out_path, dpi=120):
    """Write ``figure`` atomically; the format follows the file extension."""
    out_path = Path(out_path)
    fmt = out_path.suffix.lstrip(".").lower()
    supported = figure.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"{out_path}: unsupported figure extension {out_path.suffix or '(none)'!r}; "
            f"use one of {', '.join('.' + k for k in sorted(supported))}"
        )
    with atomic_write(out_path, "wb") as handle:
        figure.savefig(handle, format=fmt, dpi=dpi)
    return out_path


def _as_scores(item, name):
    """TrialScores from a score-file path or a (positive, negative) pair."""
    if isinstance(item, (str, os.PathLike)):
        return read_scores(item)
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ValueError(
            f"{name}: expected a score file or a (positive, negative) pair"
        )
    pair = []
    for label, values in zip(("positive", "negative"), item):
        values = torch.as_tensor(values, dtype=torch.float64).flatten()
        if values.numel() == 0:
            raise ValueError(f"{name}: no {label} scores")
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"{name}: {label} scores contain NaN or inf")
        pair.append(values)
    return TrialScores(*pair)


def _is_pair(item):
    """True for a (positive, negative) pair of 1-D score arrays."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        return False
    for values in item:
        if isinstance(values, (str, os.PathLike)):
            return False
        if hasattr(values, "ndim"):  # tensor or numpy array
            if values.ndim != 1:
                return False
        elif not (
            isinstance(values, (tuple, list))
            and all(isinstance(v, (int, float)) for v in values)
        ):
            return False
    return True


def _items(score_files_or_arrays):
    if isinstance(score_files_or_arrays, (str, os.PathLike)) or _is_pair(
        score_files_or_arrays
    ):
        return [score_files_or_arrays]
    return list(score_files_or_arrays)


def _default_label(item, index):
    if isinstance(item, (str, os.PathLike)):
        parts = Path(item).parts
        return "/".join(parts[-3:])
    return f"system {index + 1}"


def det_curve(positive, negative):
    """Miss and false-alarm probabilities at every threshold, with the EER.

    Arguments
    ---------
    positive : torch.Tensor
        1-D target-trial scores.
    negative : torch.Tensor
        1-D non-target-trial scores.

    Returns
    -------
    curve : DetCurve
        Points ordered by increasing threshold (p_fa falls, p_miss rises).

    Example
    -------
    >>> curve = det_curve(torch.tensor([0.6, 0.7, 0.8, 0.5]), torch.tensor([0.4, 0.3, 0.2, 0.55]))
    >>> curve.eer, curve.threshold, curve.eer_p_fa, curve.eer_p_miss
    (0.25, 0.5, 0.25, 0.25)
    """
    positive = torch.as_tensor(positive, dtype=torch.float64).flatten()
    negative = torch.as_tensor(negative, dtype=torch.float64).flatten()
    eer, threshold = EER(positive, negative)
    thresholds = torch.unique(torch.cat([positive, negative]))  # sorted
    sorted_pos, _ = torch.sort(positive)
    sorted_neg, _ = torch.sort(negative)
    # accepting scores above t: misses are positives <= t, false alarms negatives > t
    misses = torch.searchsorted(sorted_pos, thresholds, right=True)
    false_alarms = negative.numel() - torch.searchsorted(
        sorted_neg, thresholds, right=True
    )
    p_miss = torch.cat(
        [torch.zeros(1, dtype=torch.float64), misses / positive.numel()]
    )
    p_fa = torch.cat(
        [torch.ones(1, dtype=torch.float64), false_alarms / negative.numel()]
    )
    eer_p_miss = float((positive <= threshold).double().mean())
    eer_p_fa = float((negative > threshold).double().mean())
    return DetCurve(
        p_fa, p_miss, float(eer), float(threshold), eer_p_fa, eer_p_miss
    )


def _probit(p, floor):
    p = torch.as_tensor(p, dtype=torch.float64).clamp(floor, 1 - floor)
    return torch.special.ndtri(p)


def _percent(p):
    return f"{100 * p:g}"


def plot_det(score_files_or_arrays, out_png, labels=None, title="DET curve"):
    """DET curves (miss vs false-alarm probability on normal-deviate axes)
    with the EER point of each system marked and its EER in the legend.

    Arguments
    ---------
    score_files_or_arrays : path, pair, or list of them
        Score files (``enrol test score label``, see ``trials.read_scores``) and/or
        ``(positive, negative)`` pairs of 1-D score arrays.
    out_png : str or Path
        Output figure (the extension sets the format).
    labels : list of str, optional
        One legend name per system (default: the last parts of the path,
        or "system i").
    title : str, optional
        Figure title.

    Returns
    -------
    out_png : Path

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> pair = (torch.randn(50, generator=g) + 2, torch.randn(200, generator=g))
    >>> import tempfile
    >>> out = plot_det([pair], Path(tempfile.mkdtemp()) / "det.png", labels=["demo"])
    >>> out.name, out.stat().st_size > 0
    ('det.png', True)
    """
    items = _items(score_files_or_arrays)
    if not items:
        raise ValueError("plot_det: no score files or score arrays given")
    if labels is not None and len(labels) != len(items):
        raise ValueError(
            f"plot_det: {len(labels)} labels for {len(items)} systems"
        )
    systems = [
        _as_scores(item, f"plot_det system {i + 1}")
        for i, item in enumerate(items)
    ]
    curves = [det_curve(s.positive, s.negative) for s in systems]
    largest = max(max(s.positive.numel(), s.negative.numel()) for s in systems)
    floor = max(0.5 / largest, 1e-4)
    upper = 0.5 if max(c.eer for c in curves) < 0.3 else 1 - floor

    figure = _new_figure(5.5, 5.0)
    axes = figure.add_subplot()
    for index, (item, curve) in enumerate(zip(items, curves)):
        name = (
            labels[index] if labels is not None else _default_label(item, index)
        )
        (line,) = axes.plot(
            _probit(curve.p_fa, floor),
            _probit(curve.p_miss, floor),
            label=f"{name} (EER {100 * curve.eer:.2f}%)",
        )
        axes.plot(
            [float(_probit(curve.eer_p_fa, floor))],
            [float(_probit(curve.eer_p_miss, floor))],
            "o",
            color=line.get_color(),
            gid=f"eer-{index}",
        )
    diagonal = [float(_probit(floor, floor)), float(_probit(upper, floor))]
    axes.plot(diagonal, diagonal, ":", color="grey", linewidth=0.8)
    ticks = [p for p in _DET_TICKS if floor <= p <= upper]
    positions = [float(_probit(p, floor)) for p in ticks]
    for set_ticks, set_labels, set_limits in (
        (axes.set_xticks, axes.set_xticklabels, axes.set_xlim),
        (axes.set_yticks, axes.set_yticklabels, axes.set_ylim),
    ):
        set_ticks(positions)
        set_labels([_percent(p) for p in ticks], fontsize="small")
        set_limits(diagonal)
    axes.set_xlabel("false alarm probability (%)")
    axes.set_ylabel("miss probability (%)")
    axes.grid(True, linewidth=0.4)
    axes.legend(loc="upper right", fontsize="small")
    if title:
        axes.set_title(title)
    return _save(figure, out_png)


def plot_score_histograms(score_file_or_arrays, out_png, bins=50, title=None):
    """Histograms of target and non-target scores, with the EER threshold.

    Arguments
    ---------
    score_file_or_arrays : str, Path or pair
        A score file (see ``trials.read_scores``) or a ``(positive, negative)`` pair.
    out_png : str or Path
        Output figure.
    bins : int
        Number of bins (shared by both histograms).
    title : str, optional
        Figure title (default: the file name).

    Returns
    -------
    out_png : Path

    Example
    -------
    >>> import tempfile
    >>> pair = (torch.linspace(0.3, 0.9, 40), torch.linspace(-0.2, 0.5, 300))
    >>> out = plot_score_histograms(pair, Path(tempfile.mkdtemp()) / "hist.png")
    >>> out.stat().st_size > 0
    True
    """
    scores = _as_scores(score_file_or_arrays, "plot_score_histograms")
    if bins < 1:
        raise ValueError(
            f"plot_score_histograms: bins must be >= 1, got {bins}"
        )
    eer, threshold = EER(scores.positive, scores.negative)
    everything = torch.cat([scores.positive, scores.negative])
    low, high = float(everything.min()), float(everything.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = torch.linspace(low, high, bins + 1).tolist()

    figure = _new_figure(6.0, 4.0)
    axes = figure.add_subplot()
    for values, name in (
        (scores.negative, "non-target"),
        (scores.positive, "target"),
    ):
        axes.hist(
            values.numpy(),
            bins=edges,
            density=True,
            alpha=0.55,
            label=f"{name} ({values.numel()})",
        )
    axes.axvline(
        threshold,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"EER threshold {threshold:.3f} (EER {100 * eer:.2f}%)",
    )
    axes.set_xlabel("score")
    axes.set_ylabel("density")
    axes.legend(fontsize="small", loc="best")
    if title is None and isinstance(score_file_or_arrays, (str, os.PathLike)):
        title = _default_label(score_file_or_arrays, 0)
    if title:
        axes.set_title(title)
    return _save(figure, out_png)


def _as_weights(weights, name):
    """(heads, time) float64 attention weights, validated."""
    weights = torch.as_tensor(weights).detach().cpu().double()
    if weights.dim() == 1:
        weights = weights[None]
    if weights.dim() == 3 and weights.shape[0] == 1:
        weights = weights[0]
    if weights.dim() != 2 or weights.shape[1] == 0:
        raise ValueError(
            f"{name}: expected (heads, time) attention weights, got shape "
            f"{tuple(weights.shape)}"
        )
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(f"{name}: attention weights must be finite and >= 0")
    sums = weights.sum(dim=1)
    if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
        raise ValueError(
            f"{name}: each head's weights must sum to 1 over time, got sums "
            f"{[round(float(s), 4) for s in sums]}"
        )
    return weights


def plot_attention(
    weights,
    out_png,
    reference=None,
    title=None,
    temperatures=None,
    frame_shift=None,
    labels=("multi-head attention", "single-head attention"),
):
    """Attention weights of each head along time for one utterance, with
    each head's entropy E = -sum_t alpha_t log alpha_t (nats) in the legend,
    optionally above a single-head model's weights (the paper's Fig. 2).

    Arguments
    ---------
    weights : torch.Tensor or array
        (heads, time) weights of one utterance, e.g. from
        ``SpeakerModel.attention``.
    out_png : str or Path
        Output figure.
    reference : torch.Tensor or array, optional
        (1, time) or (time,) weights of a single-head (self-attentive) model
        on the same utterance, drawn in a second panel.
    title : str, optional
        Figure title.
    temperatures : list of float, optional
        T_i of each head (MRMHA), shown in the legend.
    frame_shift : float, optional
        Seconds per frame; the time axis is in seconds if given, else frames.
    labels : tuple of str
        Names of the two panels.

    Returns
    -------
    out_png : Path

    Example
    -------
    >>> import tempfile
    >>> w = torch.softmax(torch.randn(4, 30), dim=1)
    >>> ref = torch.softmax(torch.randn(1, 30), dim=1)
    >>> out = plot_attention(w, Path(tempfile.mkdtemp()) / "attention.png", reference=ref,
    ...                      temperatures=[1, 1, 5, 5], frame_shift=0.08)
    >>> out.stat().st_size > 0
    True
    """
    weights = _as_weights(weights, "plot_attention weights")
    panels = [(labels[0], weights, temperatures)]
    if reference is not None:
        panels.append(
            (
                labels[1],
                _as_weights(reference, "plot_attention reference"),
                None,
            )
        )
    if temperatures is not None and len(temperatures) != weights.shape[0]:
        raise ValueError(
            f"plot_attention: {len(temperatures)} temperatures for "
            f"{weights.shape[0]} heads"
        )

    figure = _new_figure(7.0, 2.6 * len(panels) + 0.4)
    for row, (name, values, temps) in enumerate(panels):
        axes = figure.add_subplot(len(panels), 1, row + 1)
        entropy = attention_entropy(values[None])[0]
        steps = torch.arange(values.shape[1], dtype=torch.float64)
        if frame_shift is not None:
            steps = steps * frame_shift
        for head in range(values.shape[0]):
            head_name = f"head {head + 1}" if values.shape[0] > 1 else "weights"
            if temps is not None:
                head_name += f" (T={float(temps[head]):g})"
            axes.plot(
                steps.numpy(),
                values[head].numpy(),
                linewidth=1.0,
                label=f"{head_name}: E = {float(entropy[head]):.3f} nats",
            )
        axes.set_title(
            f"{name}: mean entropy {float(entropy.mean()):.3f} nats "
            f"(uniform: {float(torch.log(torch.tensor(values.shape[1]))):.3f})",
            fontsize="medium",
        )
        axes.set_ylabel("attention weight")
        axes.set_xlabel("time (s)" if frame_shift is not None else "frame")
        axes.legend(fontsize="small", loc="upper right")
    if title:
        figure.suptitle(title)
    return _save(figure, out_png)
