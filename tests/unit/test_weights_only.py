"""Every checkpoint load of the package and the recipes is
``torch.load(..., weights_only=True)``: a checkpoint can then hold tensors
and plain containers only, never a pickle that runs code (torch < 2.6,
which setup.cfg allows, defaulted to the unsafe loader). Read with ``ast``,
so a call in any module counts, imported or not."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = sorted(
    [
        *(ROOT / "speechbrain_mrmha").rglob("*.py"),
        *(ROOT / "recipes").rglob("*.py"),
    ]
)


def _is_torch_load(call):
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "load"
        and isinstance(func.value, ast.Name)
        and func.value.id == "torch"
    )


def _weights_only(call):
    return any(
        keyword.arg == "weights_only"
        and isinstance(keyword.value, ast.Constant)
        and keyword.value.value is True
        for keyword in call.keywords
    )


def test_every_torch_load_uses_weights_only():
    unsafe = []
    calls = 0
    for path in SCANNED:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _is_torch_load(node):
                calls += 1
                if not _weights_only(node):
                    unsafe.append(
                        f"{path.relative_to(ROOT)}:{node.lineno}: "
                        "torch.load without weights_only=True"
                    )
    assert calls > 0  # the scan sees the package's loads
    assert not unsafe, "\n".join(unsafe)
