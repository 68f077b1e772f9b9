"""Tests of the figures (speechbrain_mrmha/app/plotting.py): they render to real
PNG files, show the right numbers (EER point, entropies, densities), write
atomically, and bad input gets clear errors."""

import math
import sys
import types

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import imread
from scipy.stats import norm
from speechbrain.utils.metric_stats import EER as speechbrain_EER

from speechbrain_mrmha.app import plotting
from speechbrain_mrmha.app.plotting import (
    det_curve,
    plot_attention,
    plot_det,
    plot_score_histograms,
)
from speechbrain_mrmha.dataio.trials import read_scores
from speechbrain_mrmha.inference.model import utterance_attention
from speechbrain_mrmha.scoring.metrics import EER

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    """A real PNG with visible content (not a blank canvas)."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.01


@pytest.fixture
def saved_figures(monkeypatch):
    """Figures passed to savefig, for inspecting what was drawn."""
    figures = []
    original = Figure.savefig

    def recording(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    return figures


def random_pair(seed, targets=60, nontargets=400, shift=1.5):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(targets, generator=g, dtype=torch.float64) + shift,
        torch.randn(nontargets, generator=g, dtype=torch.float64),
    )


def write_scores(path, positive, negative):
    lines = [
        f"e{i}.wav t{i}.wav {float(s):.6f} 1" for i, s in enumerate(positive)
    ]
    lines += [
        f"e{i}.wav n{i}.wav {float(s):.6f} 0" for i, s in enumerate(negative)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def rates_at(positive, negative, threshold):
    """Brute force: miss = targets <= threshold, false alarm = non-targets above."""
    positive, negative = np.asarray(positive), np.asarray(negative)
    return float((negative > threshold).mean()), float(
        (positive <= threshold).mean()
    )


def test_det_curve_matches_speechbrain_eer_and_brute_force():
    positive, negative = random_pair(0)
    curve = det_curve(positive, negative)
    sb_eer, sb_threshold = speechbrain_EER(positive.float(), negative.float())
    assert curve.eer == pytest.approx(sb_eer, abs=1e-6)
    assert (curve.eer, curve.threshold) == EER(positive, negative)
    p_fa, p_miss = rates_at(positive, negative, curve.threshold)
    assert (curve.eer_p_fa, curve.eer_p_miss) == (p_fa, p_miss)
    assert (p_fa + p_miss) / 2 == pytest.approx(curve.eer, abs=1e-6)
    # every point of the curve is the brute-force rate at one threshold
    thresholds = [-math.inf] + sorted(
        set(torch.cat([positive, negative]).tolist())
    )
    expected = np.array([rates_at(positive, negative, t) for t in thresholds])
    np.testing.assert_allclose(curve.p_fa.numpy(), expected[:, 0])
    np.testing.assert_allclose(curve.p_miss.numpy(), expected[:, 1])


def test_plot_det_marks_the_eer_point(tmp_path, saved_figures):
    first, second = random_pair(1), random_pair(2, shift=0.8)
    score_file = write_scores(tmp_path / "scores.txt", *first)
    out = plot_det(
        [score_file, second],
        tmp_path / "figures" / "det.png",
        labels=["A", "B"],
    )
    assert out == tmp_path / "figures" / "det.png"
    assert_png(out)
    axes = saved_figures[-1].axes[0]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    file_scores = read_scores(score_file)  # the file holds 6-decimal scores
    for index, (name, (positive, negative)) in enumerate(
        zip("AB", [(file_scores.positive, file_scores.negative), second])
    ):
        eer, threshold = EER(positive, negative)
        assert legend[index] == f"{name} (EER {100 * eer:.2f}%)"
        p_fa, p_miss = rates_at(positive, negative, threshold)
        marker = [
            line
            for line in axes.get_lines()
            if line.get_gid() == f"eer-{index}"
        ][0]
        x, y = marker.get_xdata()[0], marker.get_ydata()[0]
        # the marker sits at the normal deviates of the error rates at the EER threshold
        assert x == pytest.approx(norm.ppf(p_fa), abs=1e-9)
        assert y == pytest.approx(norm.ppf(p_miss), abs=1e-9)


def test_plot_det_label_count_and_extension_errors(tmp_path):
    with pytest.raises(ValueError, match="1 labels for 2 systems"):
        plot_det(
            [random_pair(0), random_pair(1)], tmp_path / "det.png", labels=["A"]
        )
    with pytest.raises(
        ValueError, match="det.xyz: unsupported figure extension"
    ):
        plot_det(random_pair(0), tmp_path / "det.xyz")
    assert list(tmp_path.iterdir()) == []


def test_plot_score_histograms_densities_and_threshold(tmp_path, saved_figures):
    positive, negative = random_pair(3)
    out = plot_score_histograms(
        write_scores(tmp_path / "scores.txt", positive, negative),
        tmp_path / "hist.png",
        bins=20,
    )
    assert_png(out)
    axes = saved_figures[-1].axes[0]
    # two density histograms: each integrates to 1
    area = sum(p.get_height() * p.get_width() for p in axes.patches)
    assert area == pytest.approx(2.0, rel=1e-6)
    scores = read_scores(tmp_path / "scores.txt")
    _, threshold = EER(scores.positive, scores.negative)
    vertical = [
        line for line in axes.get_lines() if len(set(line.get_xdata())) == 1
    ]
    assert vertical[0].get_xdata()[0] == pytest.approx(threshold)


def entropy_nats(row):
    row = np.asarray(row, dtype=np.float64)
    row = row[row > 0]
    return float(-(row * np.log(row)).sum())


def test_plot_attention_legend_shows_each_head_entropy(tmp_path, saved_figures):
    g = torch.Generator().manual_seed(4)
    weights = torch.softmax(
        torch.randn(3, 40, generator=g) * torch.tensor([[3.0], [1.0], [0.2]]), 1
    )
    reference = torch.softmax(torch.randn(1, 40, generator=g), dim=1)
    out = plot_attention(
        weights,
        tmp_path / "attention.png",
        reference=reference,
        temperatures=[1, 5, 10],
        title="utt",
    )
    assert_png(out)
    top, bottom = saved_figures[-1].axes
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    for head, temperature in enumerate([1, 5, 10]):
        expected = f"head {head + 1} (T={temperature}): E = {entropy_nats(weights[head]):.3f} nats"
        assert legend[head] == expected
    assert [t.get_text() for t in bottom.get_legend().get_texts()] == [
        f"weights: E = {entropy_nats(reference[0]):.3f} nats"
    ]
    np.testing.assert_allclose(
        top.get_lines()[1].get_ydata(), weights[1].numpy(), rtol=1e-6
    )


@pytest.mark.parametrize(
    "weights, message",
    [
        (torch.full((2, 4), 0.3), "must sum to 1"),
        (torch.tensor([[1.5, -0.5]]), "finite and >= 0"),
        (torch.ones(2, 2, 2) / 2, "expected \\(heads, time\\)"),
    ],
)
def test_plot_attention_rejects_invalid_weights(tmp_path, weights, message):
    with pytest.raises(ValueError, match=message):
        plot_attention(weights, tmp_path / "a.png")


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        args[0].write(b"partial")  # the handle of the temporary file
        raise OSError("disk full")

    out = tmp_path / "det.png"
    plot_det(random_pair(0), out)
    before = out.read_bytes()
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plot_det(random_pair(5), out)
    assert [p.name for p in tmp_path.iterdir()] == ["det.png"]
    assert out.read_bytes() == before


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    for name in (
        "matplotlib",
        "matplotlib.figure",
        "matplotlib.backends.backend_agg",
    ):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(
        ImportError, match=r"pip install speechbrain-mrmha\[plot\]"
    ):
        plot_det(random_pair(0), tmp_path / "det.png")


def test_utterance_attention_equals_the_forward_pass(tiny_encoder):
    g = torch.Generator().manual_seed(6)
    signal = torch.randn(20000, generator=g) * 0.1
    weights = utterance_attention(tiny_encoder, signal)
    with torch.no_grad():
        tiny_encoder.encode_batch(signal[None])
    forward = tiny_encoder.mods.embedding_model.pooling.last_attention
    assert weights.shape == forward.shape[1:] and weights.shape[0] == 2
    torch.testing.assert_close(weights, forward[0].cpu(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    # the PyTorch backend (what load_backend gives) shows the same weights
    from speechbrain_mrmha.inference.backends import TorchEncoder

    backend = TorchEncoder.from_encoder(tiny_encoder)
    torch.testing.assert_close(
        utterance_attention(backend, signal), weights, atol=0, rtol=0
    )


def test_utterance_attention_needs_an_attention_pooling():
    from speechbrain_mrmha.layers.pooling import MaskedStatisticsPooling

    model = types.SimpleNamespace(pooling=MaskedStatisticsPooling())
    encoder = types.SimpleNamespace(
        mods=types.SimpleNamespace(embedding_model=model)
    )
    with pytest.raises(
        ValueError, match="MaskedStatisticsPooling has no attention weights"
    ):
        utterance_attention(encoder, torch.zeros(16000))


def test_module_keeps_matplotlib_optional():
    source = open(plotting.__file__).read().split('"""', 2)[2]
    top_level = [
        line
        for line in source.splitlines()
        if line.startswith(("import", "from"))
    ]
    assert not any("matplotlib" in line for line in top_level)
