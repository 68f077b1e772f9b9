"""One ruff version everywhere: the test extra that CI installs, the
pre-commit hook and the ruff that runs here are the same release, so
``make lint`` and ``pre-commit`` agree on every file."""

import configparser
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def pinned_in_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    test_extra = config["options.extras_require"]["test"]
    (line,) = [x for x in test_extra.split() if x.startswith("ruff")]
    match = re.fullmatch(r"ruff==(\d+\.\d+\.\d+)", line)
    assert match, f"setup.cfg pins ruff loosely: {line!r}"
    return match[1]


def pinned_in_pre_commit():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (repo,) = [
        r for r in config["repos"] if r["repo"].endswith("ruff-pre-commit")
    ]
    return repo["rev"].removeprefix("v")


def test_ci_and_pre_commit_pin_the_same_ruff():
    assert pinned_in_setup_cfg() == pinned_in_pre_commit()


def test_the_installed_ruff_is_the_pinned_one():
    ruff = Path(sys.executable).with_name("ruff")
    command = [str(ruff)] if ruff.is_file() else [sys.executable, "-m", "ruff"]
    output = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert output.split()[-1] == pinned_in_setup_cfg()


def test_no_test_depends_on_how_fast_the_machine_is():
    """A subprocess a test starts is limited only by the shared hang guard
    (conftest.HANG_GUARD_SECONDS), never by a time a loaded machine can
    exceed, and no helper process lives for a fixed time (sleep) instead
    of until the test releases it."""
    import ast

    problems = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            values = []
            if isinstance(node, ast.keyword) and node.arg == "timeout":
                values = [node.value]
            elif isinstance(node, ast.arguments):
                named = node.args[len(node.args) - len(node.defaults) :]
                values = [
                    d
                    for a, d in zip(named, node.defaults)
                    if a.arg == "timeout"
                ]
            for value in values:
                if not (
                    isinstance(value, ast.Name)
                    and value.id == "HANG_GUARD_SECONDS"
                ):
                    problems.append(f"{path.name}:{value.lineno} timeout")
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "time.sleep(" in node.value
                and path.name != "test_style.py"
            ):
                problems.append(f"{path.name}:{node.lineno} sleep")
    assert not problems, problems
