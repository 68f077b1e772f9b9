"""Outputs follow the umask, and a pretrained folder loads read-only.

* With umask 022, every file and folder we write (pretrained folder and the
  threshold verification records in it, cache, score and metrics files,
  CLI embeddings, figures, synthetic corpus) is
  readable by group and others: writers create files with ``open`` and
  folders with ``mkdir``, never with ``tempfile.mkstemp`` / ``mkdtemp``
  (0600 / 0700 whatever the umask).
* ``export.load_encoder(folder)`` with no savedir reads the folder in place
  and writes nothing into it (it used to create ``<folder>/.sb_cache``), so
  a read-only model folder (a shared install, a read-only mount) loads.
"""

import ast
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder):
    """Relative path -> permission bits of a folder and everything in it."""
    folder = Path(folder)
    found = {".": stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        found[str(path.relative_to(folder))] = stat.S_IMODE(path.stat().st_mode)
    return found


def assert_readable_by_all(folder):
    for name, mode in modes(folder).items():
        path = Path(folder) / name
        want = 0o755 if path.is_dir() else 0o644
        assert mode == want, f"{path}: {oct(mode)}, want {oct(want)}"


def test_outputs_follow_the_umask(umask_022, tmp_path, tiny_corpus):
    from conftest import _write_tiny_pretrained, small_corpus

    from speechbrain_mrmha.app.cli import write_embeddings
    from speechbrain_mrmha.app.plotting import plot_score_histograms
    from speechbrain_mrmha.dataio.files import write_text_atomic
    from speechbrain_mrmha.dataio.trials import Trial, write_scores
    from speechbrain_mrmha.inference.extraction import EmbeddingCache
    from speechbrain_mrmha.inference.pretrained import write_threshold

    out = tmp_path / "out"
    model = _write_tiny_pretrained(
        out / "run" / "pretrained", tiny_corpus, "mrmha.yaml", 1, num_heads=2
    )
    cache = EmbeddingCache(out / "verification" / "embeddings.pt", "m")
    cache.put("d", torch.ones(3), None)
    cache.save()
    trials = [Trial(i % 2, f"e{i}.wav", f"t{i}.wav") for i in range(40)]
    scores = torch.linspace(0, 1, 40) + 0.3 * (torch.arange(40) % 2)
    write_scores(out / "verification" / "scores.txt", trials, scores)
    write_text_atomic(out / "verification" / "metrics.json", "{}\n")
    write_threshold(
        model, scores[1::2], scores[::2], out / "verification" / "scores.txt"
    )
    write_embeddings(["a.wav"], {"a.wav": torch.ones(3)}, out / "e" / "e.pt")
    plot_score_histograms(
        out / "verification" / "scores.txt", out / "figures" / "hist.png"
    )
    small_corpus(out / "corpus", 3, 1, (0.6, 0.7), seed=0)
    assert len(modes(out)) > 20
    assert_readable_by_all(out)


def test_no_private_temporary_files_or_modes_in_the_code():
    """mkstemp / mkdtemp / NamedTemporaryFile create 0600 / 0700 entries
    whatever the umask, and explicit private modes do the same: none in the
    package and recipe code (doctests may use them for scratch folders)."""
    files = sorted((ROOT / "speechbrain_mrmha").rglob("*.py")) + sorted(
        (ROOT / "recipes").rglob("*.py")
    )
    problems = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = (
                node.attr
                if isinstance(node, ast.Attribute)
                else node.id
                if isinstance(node, ast.Name)
                else None
            )
            if name in ("mkstemp", "mkdtemp", "NamedTemporaryFile"):
                problems.append(f"{path}:{node.lineno} {name}")
            if isinstance(node, ast.Constant) and node.value in (0o600, 0o700):
                problems.append(f"{path}:{node.lineno} mode {oct(node.value)}")
    assert not problems, problems


def test_read_only_pretrained_folder_loads_without_savedir(
    tiny_pretrained, tmp_path
):
    from speechbrain_mrmha.inference.extraction import encode_signals
    from speechbrain_mrmha.inference.pretrained import load_encoder

    folder = tmp_path / "shared" / "pretrained"
    shutil.copytree(tiny_pretrained, folder)
    before = modes(folder.parent)
    for path in [folder.parent, folder, *folder.iterdir()]:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    try:
        encoder = load_encoder(folder)
        signal = 0.1 * torch.randn(
            16000, generator=torch.Generator().manual_seed(0)
        )
        embedding, _ = encode_signals(encoder, [signal])
        # nothing written (as root the permissions alone would not show it)
        assert sorted(modes(folder.parent)) == sorted(before)
    finally:
        for path in [folder.parent, folder, *folder.iterdir()]:
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)
    reference = load_encoder(tiny_pretrained, savedir=tmp_path / "links")
    expected, _ = encode_signals(reference, [signal])
    assert torch.equal(embedding, expected)
