"""The package's three rings, read with ``ast``: every import, also inside
functions, points inward. Library modules (layers, encoder, loss, scoring and
their helpers) import no service or application module; services (files in
and out) import no application module (``speechbrain_mrmha.app``). A new
top-level module must be placed in a ring here."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "speechbrain_mrmha"
LIBRARY = [
    "pooling",
    "resnet",
    "cosams",
    "scoring",
    "calibration",
    "lengths",
    "windowing",
]
SERVICES = [
    "io",
    "extraction",
    "export",
    "trials",
    "config",
    "annotation",
    "runs",
    "deploy",
]


def imported_modules(path):
    """Every ``speechbrain_mrmha`` module a file imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("speechbrain_mrmha.")}


def ring_of(module):
    """'library', 'services', 'app' or None (the package root)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "app":
        return "app"
    if len(parts) > 1 and parts[1] in LIBRARY:
        return "library"
    if len(parts) > 1 and parts[1] in SERVICES:
        return "services"
    return None


def test_every_module_has_a_ring():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert top == set(LIBRARY) | set(SERVICES)
    assert (PACKAGE / "app" / "__init__.py").is_file()


@pytest.mark.parametrize(
    "name, outer",
    [(n, ("services", "app")) for n in LIBRARY]
    + [(n, ("app",)) for n in SERVICES],
)
def test_imports_point_inward(name, outer):
    wrong = sorted(
        m
        for m in imported_modules(PACKAGE / f"{name}.py")
        if ring_of(m) in outer
    )
    assert not wrong, f"speechbrain_mrmha/{name}.py imports {wrong}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from speechbrain_mrmha.app.plotting import plot_det\n"
    )
    assert imported_modules(source) == {
        "speechbrain_mrmha.app.plotting.plot_det"
    }
    assert ring_of("speechbrain_mrmha.app.plotting.plot_det") == "app"
