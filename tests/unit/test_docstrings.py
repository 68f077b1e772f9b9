"""Docstring coverage of the package and the recipe scripts, read with ``ast``
(nothing is imported, so a module that fails to import is still checked).

* Every module under ``speechbrain_mrmha/`` (recursively, new subpackages
  included) and every ``recipes/VoxCeleb1/*.py`` has a module docstring, and
  every public module-level function and class, and every public method of a
  public class (``forward`` included), has a non-empty docstring.
* Every public module-level function and class of ``speechbrain_mrmha`` has an
  ``Example`` section with at least one ``>>>`` line (run by
  ``--doctest-modules``), except the command-line entry points and the
  explicit ``EXAMPLE_ALLOW_LIST`` below.
* Citations of ``docs/EQUATIONS.md`` name sections that exist, and nothing
  cites the paper summary that is not part of the repository.

"Public" means a name that does not start with ``_``. Each test is
parametrised per file and lists every problem of the file in one message, as
``path:line name: problem``.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "speechbrain_mrmha"
RECIPES = ROOT / "recipes" / "VoxCeleb1"
EQUATIONS = ROOT / "docs" / "EQUATIONS.md"

PACKAGE_FILES = sorted(PACKAGE.rglob("*.py"))
RECIPE_FILES = sorted(RECIPES.glob("*.py"))
ALL_FILES = PACKAGE_FILES + RECIPE_FILES

# Argparse entry points of ``python -m`` commands (``main(argv)``,
# ``parse_args(argv)``, ``build_parser()``): they parse a command line and run
# a whole command, and are tested end to end by tests/integration. They still
# need a docstring, not an Example.
CLI_ENTRY_POINTS = {"main", "parse_args", "build_parser"}

# Public package objects exempt from the Example requirement, as
# "<path relative to the repository>::<name>". Keep it small: an entry must
# name an existing object that has no Example
# (test_example_allow_list_is_current).
EXAMPLE_ALLOW_LIST = {
    # Need a pretrained-model folder on disk loaded through SpeechBrain's
    # EncoderClassifier (what training writes), not just tensors; covered by
    # tests/unit/test_extraction.py and the integration tests with the tiny
    # pretrained fixtures of tests/conftest.py.
    "speechbrain_mrmha/inference/pretrained.py::load_encoder",
    "speechbrain_mrmha/inference/extraction.py::embed_files",
    "speechbrain_mrmha/inference/extraction.py::use_channels_last",
    # Steps of the demo: each runs the training / scoring recipes in
    # subprocesses (minutes of CPU time); covered by
    # tests/integration/test_demo.py.
    "speechbrain_mrmha/app/demo.py::run",
    "speechbrain_mrmha/app/demo.py::train_and_score",
    "speechbrain_mrmha/app/demo.py::figures",
}

DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
EXAMPLE_HEADING = re.compile(r"^Examples?\n-{3,}[ \t]*$", re.MULTILINE)


def _relative(path):
    return path.relative_to(ROOT).as_posix()


def _parse(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _module_level(body):
    """Definitions at module level, also inside module-level ``if`` / ``try``
    / ``with`` blocks (conditional definitions), not inside functions."""
    for node in body:
        if isinstance(node, DEFINITIONS):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            blocks = [
                node.body,
                getattr(node, "orelse", []),
                getattr(node, "finalbody", []),
            ]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            for block in blocks:
                yield from _module_level(block)


def _is_accessor_or_overload(node):
    """``@x.setter`` / ``@x.deleter`` share the property's docstring and
    ``@overload`` stubs document nothing; both are skipped."""
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Attribute):
            name = decorator.attr
        else:
            name = getattr(decorator, "id", "")
        if name in ("setter", "deleter", "overload"):
            return True
    return False


def _public_class_members(cls, prefix):
    """(qualified name, node) of the public methods and nested public classes
    of a public class, recursively."""
    for node in cls.body:
        if not isinstance(node, DEFINITIONS) or node.name.startswith("_"):
            continue
        if isinstance(node, FUNCTIONS) and _is_accessor_or_overload(node):
            continue
        name = f"{prefix}.{node.name}"
        yield name, node
        if isinstance(node, ast.ClassDef):
            yield from _public_class_members(node, name)


def _public_objects(tree):
    """(qualified name, node) of every object that needs a docstring."""
    for node in _module_level(tree.body):
        if node.name.startswith("_"):
            continue
        yield node.name, node
        if isinstance(node, ast.ClassDef):
            yield from _public_class_members(node, node.name)


def _has_docstring(node):
    return bool((ast.get_docstring(node) or "").strip())


def _example_problem(docstring):
    """None if the docstring has an Example section with a doctest line."""
    match = EXAMPLE_HEADING.search(docstring)
    if match is None:
        return "no Example section"
    if not re.search(r"^\s*>>> ", docstring[match.end() :], re.MULTILINE):
        return "Example section without a >>> line"
    return None


def _example_candidates(path):
    """(name, node) of the module-level public objects of a package file
    that need an Example (CLI entry points excluded)."""
    for node in _module_level(_parse(path).body):
        if node.name.startswith("_"):
            continue
        if isinstance(node, FUNCTIONS) and node.name in CLI_ENTRY_POINTS:
            continue
        yield node.name, node


def test_files_are_found():
    assert (PACKAGE / "__init__.py") in PACKAGE_FILES
    assert (PACKAGE / "layers" / "pooling.py") in PACKAGE_FILES
    assert RECIPE_FILES, f"no recipe scripts under {RECIPES}"


@pytest.mark.parametrize("path", ALL_FILES, ids=_relative)
def test_docstrings_present(path):
    tree = _parse(path)
    where = _relative(path)
    missing = []
    if not _has_docstring(tree):
        missing.append(f"{where}:1 <module>: no module docstring")
    for name, node in _public_objects(tree):
        if not _has_docstring(node):
            missing.append(f"{where}:{node.lineno} {name}: no docstring")
    assert not missing, f"{len(missing)} missing docstring(s):\n" + "\n".join(
        missing
    )


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=_relative)
def test_public_objects_have_examples(path):
    where = _relative(path)
    problems = []
    for name, node in _example_candidates(path):
        if f"{where}::{name}" in EXAMPLE_ALLOW_LIST:
            continue
        problem = _example_problem(ast.get_docstring(node) or "")
        if problem:
            problems.append(f"{where}:{node.lineno} {name}: {problem}")
    assert not problems, (
        f"{len(problems)} public object(s) without a doctest Example "
        "(add one, or justify an entry in EXAMPLE_ALLOW_LIST):\n"
        + "\n".join(problems)
    )


def test_example_allow_list_is_current():
    """Every allow-listed object exists and still lacks an Example; remove
    entries when objects move, disappear or gain an Example."""
    stale = []
    for entry in sorted(EXAMPLE_ALLOW_LIST):
        relative, name = entry.split("::")
        path = ROOT / relative
        nodes = dict(_example_candidates(path)) if path.is_file() else {}
        if name not in nodes:
            stale.append(f"{entry}: no such public module-level object")
        elif _example_problem(ast.get_docstring(nodes[name]) or "") is None:
            stale.append(f"{entry}: has an Example now, remove the entry")
    assert not stale, "stale EXAMPLE_ALLOW_LIST entries:\n" + "\n".join(stale)


# ------------------------------------------------------------- citations


def _citing_files():
    """Text files of the repository that may cite documentation."""
    files = []
    for folder in ("speechbrain_mrmha", "recipes", "tests", "bench", "docs"):
        for pattern in ("*.py", "*.md", "*.yaml", "*.txt"):
            files += (ROOT / folder).rglob(pattern)
    for name in ("README.md", "Makefile"):
        if (ROOT / name).is_file():
            files.append(ROOT / name)
    return sorted(set(files) - {EQUATIONS})


def _read(path):
    return path.read_text(encoding="utf-8", errors="replace")


def _section_titles():
    text = EQUATIONS.read_text(encoding="utf-8")
    lines = text.splitlines()
    return [line[3:].strip() for line in lines if line.startswith("## ")]


def _anchor(title):
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _joined(text):
    """The text on one line, comment markers dropped, so that a citation
    broken over comment or docstring lines reads as one."""
    lines = text.splitlines()
    return " ".join(re.sub(r"^\s*#+\s?", "", line).strip() for line in lines)


CITATION = re.compile(
    r"docs/EQUATIONS\.md,?\s+sections?\s+"
    r'("[^"]+"(?:\s*(?:,|and|to|or|, and)\s*"[^"]+")*)'
)


def test_equations_citations_resolve():
    titles = _section_titles()
    anchors = {_anchor(title) for title in titles}
    assert "Global multi-head attention" in titles
    problems = []
    for path in _citing_files():
        text = _joined(_read(path))
        for match in CITATION.finditer(text):
            for title in re.findall(r'"([^"]+)"', match.group(1)):
                if title not in titles:
                    problems.append(
                        f"{_relative(path)}: unknown section {title!r}"
                    )
        for anchor in re.findall(r"EQUATIONS\.md#([\w\-]+)", text):
            if anchor not in anchors:
                problems.append(f"{_relative(path)}: unknown anchor #{anchor}")
    for anchor in re.findall(r"\]\(#([\w\-]+)\)", _read(EQUATIONS)):
        if anchor not in anchors:
            problems.append(f"docs/EQUATIONS.md: unknown link #{anchor}")
    assert not problems, "\n".join(problems)


def test_no_citation_of_files_outside_the_repository():
    """The paper summary PAPER.md is not in the repository: cite the
    matching section of docs/EQUATIONS.md instead."""
    this_file = Path(__file__).resolve()
    citing = [
        f"{_relative(path)}:{number}"
        for path in _citing_files()
        if path.resolve() != this_file
        for number, line in enumerate(_read(path).splitlines(), 1)
        if "PAPER.md" in line
    ]
    assert not citing, "PAPER.md is cited at:\n" + "\n".join(citing)
