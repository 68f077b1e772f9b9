"""The package's rings, read with ``ast``: every import, also inside
functions, points inward. The subpackages are ordered from the innermost
out; each imports only itself and the ones before it. ``layers``,
``scoring``, ``dataio`` and ``training`` are the library ring,
``inference`` the services ring, ``app`` the application ring. A new
module must live in one of them."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "speechbrain_mrmha"
ORDER = ["layers", "scoring", "dataio", "training", "inference", "app"]
RINGS = {
    "library": ["layers", "scoring", "dataio", "training"],
    "services": ["inference"],
    "application": ["app"],
}


def imported_modules(path):
    """Every ``speechbrain_mrmha`` module a file imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("speechbrain_mrmha.")}


def subpackage_of(module):
    """The subpackage a dotted module name lies in, or None (the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else None


def test_the_tree_is_the_rings():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__"}, "modules belong in a subpackage"
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(ORDER)
    assert [s for ring in RINGS.values() for s in ring] == ORDER


@pytest.mark.parametrize(
    "path",
    sorted(PACKAGE.glob("*/*.py")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_imports_point_inward(path):
    allowed = ORDER[: ORDER.index(path.parent.name) + 1]
    wrong = sorted(
        m
        for m in imported_modules(path)
        if subpackage_of(m) is not None and subpackage_of(m) not in allowed
    )
    assert not wrong, f"{path.parent.name}/{path.name} imports {wrong}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from speechbrain_mrmha.app.plotting import plot_det\n"
    )
    assert imported_modules(source) == {
        "speechbrain_mrmha.app.plotting.plot_det"
    }
    assert subpackage_of("speechbrain_mrmha.app.plotting.plot_det") == "app"


@pytest.mark.parametrize(
    "old, new, name",
    [
        (
            "pooling",
            "layers.pooling",
            "MultiResolutionMultiHeadAttentionPooling",
        ),
        ("resnet", "layers.resnet", "ResNet34"),
        ("cosams", "layers.margins", "CosineClassifier"),
        ("lengths", "layers.lengths", "FrameExactLengths"),
    ],
)
def test_import_paths_of_older_pretrained_folders_load(old, new, name):
    """hyperparams.yaml files written before the subpackages name e.g.
    speechbrain_mrmha.pooling.X: hyperpyyaml must find the same object."""
    import importlib

    from hyperpyyaml import load_hyperpyyaml

    module = importlib.import_module(f"speechbrain_mrmha.{new}")
    loaded = load_hyperpyyaml(f"x: !name:speechbrain_mrmha.{old}.{name}")
    assert loaded["x"] is getattr(module, name)
