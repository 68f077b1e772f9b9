"""SpeechBrain's yaml-vs-script consistency check on the recipe, as its
``tests/consistency/test_yaml.py`` runs it on every row of
``tests/recipes/*.csv``.

The check lives in SpeechBrain's repository (``tests/utils/check_yaml.py``,
``check_yaml_vs_script``), not in the pip package, so its rules are
restated here:

* the keys checked are the top-level ``key:`` lines of the yaml, except
  comments, lines holding ``!!`` or ``!apply`` and Pretrainer entries;
* a key referenced as ``<key>`` (or ``<key[...]>``) on a ``!ref`` line
  after its definition is used by the yaml and not checked;
* every other key must appear in the script on one line as ``["key"]``,
  ``hparams.key``, ``modules.key``, ``attr(self.hparams, "key`` or
  ``hparams.get("key``; Brain run options (``RunOptions``) are exempt.

So a key read as ``hparams[\\n"key"\\n]`` (split by a formatter) is unused.
"""

import re
from dataclasses import fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "VoxCeleb1"
TRAINING_YAMLS = sorted(
    p.name
    for p in (RECIPE / "hparams").glob("*.yaml")
    if p.name != "verification.yaml"
)
PAIRS = [(yaml, "train_speaker_embeddings.py") for yaml in TRAINING_YAMLS]
PAIRS.append(("verification.yaml", "speaker_verification_cosine.py"))


def declared_keys(yaml_text):
    """The yaml keys SpeechBrain's check requires the script to use."""
    keys = []
    for line in yaml_text.splitlines():
        if len(line) <= 1 or line.startswith("#"):
            continue
        if "speechbrain.utils.parameter_transfer.Pretrainer" in line:
            continue
        line = line.rstrip()
        if ":" not in line and "- !ref" not in line:
            continue
        name = line[: line.find(":")]
        if name[:1] not in (" ", "\t") and not (
            "!!" in line or "!apply" in line
        ):
            keys.append(name)
        if "!ref" in line:
            for reference in re.findall(r"<([^<>]*)>", line):
                reference = reference.split("[")[0]
                if reference in keys:
                    keys.remove(reference)
    return keys


def used_in_script(key, script_text):
    """True when one line of the script reads ``key`` the ways the check
    recognises."""
    patterns = (
        f'["{key}"]',
        f"hparams.{key}",
        f"modules.{key}",
        f'attr(self.hparams, "{key}',
        f'hparams.get("{key}',
    )
    lines = script_text.splitlines()
    return any(pattern in line for line in lines for pattern in patterns)


def unused_keys(yaml_text, script_text):
    """The keys SpeechBrain's check reports as declared but not used."""
    from speechbrain.utils.run_opts import RunOptions

    run_options = {field.name for field in fields(RunOptions)}
    return [
        key
        for key in declared_keys(yaml_text)
        if key not in run_options and not used_in_script(key, script_text)
    ]


def test_the_check_finds_what_speechbrains_finds():
    """A key split over lines, or only referenced before its definition, is
    unused; a reference after it, or an !apply entry, is not checked."""
    yaml_text = (
        "# a: comment\nout: !ref r<late>\nlate: 1\nseed: 2\n"
        "__set: !apply:f [!ref <seed>]\nsplit: 3\nsize: 4\n"
        "model: !new:M\n    n: !ref <size>\nrun: 5\nnoprogressbar: True\n"
    )
    script = (
        'a = hparams[\n    "split"\n]\nb = hparams["model"]\nc = hparams.run\n'
    )
    assert declared_keys(yaml_text) == [
        "out",
        "late",
        "split",
        "model",
        "run",
        "noprogressbar",
    ]
    assert unused_keys(yaml_text, script) == ["out", "late", "split"]


@pytest.mark.parametrize("yaml, script", PAIRS, ids=[y for y, _ in PAIRS])
def test_yaml_script_consistency(yaml, script):
    """SpeechBrain's tests/consistency/test_yaml.py on the recipe's rows."""
    unused = unused_keys(
        (RECIPE / "hparams" / yaml).read_text(encoding="utf-8"),
        (RECIPE / script).read_text(encoding="utf-8"),
    )
    assert not unused, f"{yaml}: variables not used in {script}: {unused}"


@pytest.mark.parametrize("yaml, script", PAIRS, ids=[y for y, _ in PAIRS])
def test_every_yaml_key_is_used(yaml, script):
    """Each top-level key appears in the script (hparams["key"] /
    hparams.key) or is referenced as <key> in the yaml."""
    from speechbrain.utils.run_opts import RunOptions

    text = (RECIPE / "hparams" / yaml).read_text()
    code = (RECIPE / script).read_text()
    brain_options = {f.name for f in fields(RunOptions)}  # read by sb.Brain
    unused = []
    for key in re.findall(r"^([A-Za-z_]\w*)\s*:", text, flags=re.MULTILINE):
        if key.startswith("__") or key in brain_options:
            continue
        if not (
            f'"{key}"' in code
            or f".{key}" in code
            or f"<{key}>" in text
            or f"<{key}[" in text
        ):
            unused.append(key)
    assert not unused, f"{yaml}: keys not used: {unused}"


@pytest.mark.parametrize("yaml", TRAINING_YAMLS)
def test_the_script_uses_only_modules_the_yaml_lists(yaml):
    """SpeechBrain's check_module_vars: every self.modules.X of the script
    is an entry of the yaml's ``modules``."""
    text = (RECIPE / "hparams" / yaml).read_text()
    block = re.search(r"^modules:\n((?:[ \t]+.*\n)+)", text, re.MULTILINE)
    listed = set(re.findall(r"^\s+(\w+):", block.group(1), re.MULTILINE))
    code = (RECIPE / "train_speaker_embeddings.py").read_text()
    used = set(re.findall(r"self\.modules\.(\w+)", code))
    assert used and used <= listed, used - listed
