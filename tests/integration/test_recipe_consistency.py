"""SpeechBrain's yaml-vs-script consistency check on the recipes (VoxCeleb1
and VoxCeleb2), as its ``tests/consistency/test_yaml.py`` runs it on every
row of ``tests/recipes/*.csv``.

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
from test_recipe import _canonical  # one canonical form of a resolved yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
# (recipe, yaml) of every training configuration
TRAINING_YAMLS = [
    (recipe, p.name)
    for recipe in ("VoxCeleb1", "VoxCeleb2")
    for p in sorted((RECIPES / recipe / "hparams").glob("*.yaml"))
    if p.name != "verification.yaml"
]
PAIRS = [
    (recipe, yaml, "train_speaker_embeddings.py")
    for recipe, yaml in TRAINING_YAMLS
]
PAIRS.append(
    ("VoxCeleb1", "verification.yaml", "speaker_verification_cosine.py")
)
PAIR_IDS = [f"{recipe}/{yaml}" for recipe, yaml, _ in PAIRS]


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


def test_every_recipe_configuration_is_checked():
    """Both recipes' training configurations are among the pairs."""
    assert {r for r, _ in TRAINING_YAMLS} == {"VoxCeleb1", "VoxCeleb2"}
    assert ("VoxCeleb2", "mqmha.yaml") in TRAINING_YAMLS


@pytest.mark.parametrize("recipe, yaml, script", PAIRS, ids=PAIR_IDS)
def test_yaml_script_consistency(recipe, yaml, script):
    """SpeechBrain's tests/consistency/test_yaml.py on the recipe's rows."""
    unused = unused_keys(
        (RECIPES / recipe / "hparams" / yaml).read_text(encoding="utf-8"),
        (RECIPES / recipe / script).read_text(encoding="utf-8"),
    )
    assert not unused, f"{yaml}: variables not used in {script}: {unused}"


@pytest.mark.parametrize("recipe, yaml, script", PAIRS, ids=PAIR_IDS)
def test_every_yaml_key_is_used(recipe, yaml, script):
    """Each top-level key appears in the script (hparams["key"] /
    hparams.key) or is referenced as <key> in the yaml."""
    from speechbrain.utils.run_opts import RunOptions

    text = (RECIPES / recipe / "hparams" / yaml).read_text()
    code = (RECIPES / recipe / script).read_text()
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


@pytest.mark.parametrize(
    "recipe, yaml", TRAINING_YAMLS, ids=[f"{r}/{y}" for r, y in TRAINING_YAMLS]
)
def test_the_script_uses_only_modules_the_yaml_lists(recipe, yaml):
    """SpeechBrain's check_module_vars: every self.modules.X of the script
    is an entry of the yaml's ``modules``."""
    text = (RECIPES / recipe / "hparams" / yaml).read_text()
    block = re.search(r"^modules:\n((?:[ \t]+.*\n)+)", text, re.MULTILINE)
    listed = set(re.findall(r"^\s+(\w+):", block.group(1), re.MULTILINE))
    code = (RECIPES / recipe / "train_speaker_embeddings.py").read_text()
    used = set(re.findall(r"self\.modules\.(\w+)", code))
    assert used and used <= listed, used - listed


VOX2_YAMLS = [yaml for recipe, yaml in TRAINING_YAMLS if recipe == "VoxCeleb2"]


def _resolved(path, overrides):
    from ruamel.yaml import YAML

    from speechbrain_mrmha.training.config import resolve_config

    text = resolve_config(path, overrides)
    return {k: _canonical(v) for k, v in YAML(typ="rt").load(text).items()}


def _pooling_keys(text):
    """The keys the ``pooling:`` entry of a yaml references."""
    block = re.search(
        r"^pooling: .*?(?=^\S)", text, flags=re.MULTILINE | re.DOTALL
    )
    return set(re.findall(r"<(\w+)>", block.group(0)))


def test_voxceleb2_configurations_differ_only_in_the_pooling():
    """With one output folder, every VoxCeleb2 configuration resolves to
    mrmha.yaml's values except the pooling entry and the keys only the
    pooling uses; the output folders differ (one per configuration)."""
    hparams = RECIPES / "VoxCeleb2" / "hparams"
    assert VOX2_YAMLS == [
        "attentive_statistics.yaml",
        "mqmha.yaml",
        "mrmha.yaml",
    ]
    same = {"data_folder": "/data", "output_folder": "/out"}
    reference = _resolved(hparams / "mrmha.yaml", same)
    reference_keys = _pooling_keys((hparams / "mrmha.yaml").read_text())
    folders = set()
    for yaml in VOX2_YAMLS:
        text = (hparams / yaml).read_text()
        pooling_keys = _pooling_keys(text) | reference_keys
        config = _resolved(hparams / yaml, same)
        differing = {
            k
            for k in reference.keys() | config.keys()
            if reference.get(k) != config.get(k)
        }
        assert differing <= {"pooling"} | pooling_keys, (
            yaml,
            differing - pooling_keys,
        )
        assert (yaml == "mrmha.yaml") == (differing == set()), yaml
        # the pooling's keys are used by the pooling only (and the folder)
        lines = [
            line
            for line in text.splitlines()
            if not line.startswith("output_folder:")
        ]
        for key in _pooling_keys(text):
            assert sum(f"<{key}>" in line for line in lines) == 1, (yaml, key)
        own = _resolved(hparams / yaml, {"data_folder": "/data"})
        folders.add(own["output_folder"])
    assert len(folders) == len(VOX2_YAMLS)


@pytest.mark.parametrize("yaml", VOX2_YAMLS)
def test_voxceleb2_configurations_build_and_embed(yaml, tmp_path):
    """Each VoxCeleb2 configuration builds its model at full size (the
    MQMHA heads divide the frame size) and embeds a batch."""
    import torch
    from hyperpyyaml import load_hyperpyyaml

    path = RECIPES / "VoxCeleb2" / "hparams" / yaml
    with open(path) as fin:
        hparams = load_hyperpyyaml(fin, {"data_folder": str(tmp_path)})
    model = hparams["embedding_model"].eval()
    pooling = type(model.pooling).__name__
    expected = {
        "mrmha.yaml": "MultiResolutionMultiHeadAttentionPooling",
        "mqmha.yaml": "MultiQueryMultiHeadAttentionPooling",
        "attentive_statistics.yaml": "AttentiveStatisticsPooling",
    }
    assert pooling == expected[yaml]
    assert hparams["classifier"].weight.shape == (5994, 512)
    assert hparams["vox1_folder"] is None and hparams["use_shards"]
    feats = torch.randn(2, 60, hparams["n_mels"])
    with torch.no_grad():
        embeddings = model(feats, torch.tensor([1.0, 0.6]))
    assert embeddings.shape == (2, 1, 512)
    assert torch.isfinite(embeddings).all()
