"""Model folders from elsewhere: a hyperparams.yaml that would call
anything outside the allow-list is refused, naming the tag and its line,
unless the caller trusts the folder; every folder this package writes
passes."""

from pathlib import Path

import pytest

from speechbrain_mrmha.inference.trust import (
    UntrustedFolderError,
    check_trusted,
)

RECIPE_HPARAMS = (
    Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb1" / "hparams"
)
TRAINING_YAMLS = sorted(
    p.name
    for p in RECIPE_HPARAMS.glob("*.yaml")
    if p.name != "verification.yaml"
)


@pytest.mark.parametrize("yaml", TRAINING_YAMLS)
def test_every_pretrained_folder_we_write_passes(yaml, tmp_path, tiny_corpus):
    from conftest import _write_tiny_pretrained

    folder = _write_tiny_pretrained(
        tmp_path / "pretrained", tiny_corpus, yaml, 0
    )
    check_trusted(Path(folder) / "hyperparams.yaml")


@pytest.mark.parametrize(
    "line, named",
    [
        ("x: !apply:os.system ['touch {marker}']", "!apply:os.system"),
        (
            "x: !new:subprocess.Popen [['touch', '{marker}']]",
            "!new:subprocess.Popen",
        ),
        ("x: !name:builtins.exec", "!name:builtins.exec"),
        ("x: !apply:torch.hub.load ['a/b', 'c']", "!apply:torch.hub.load"),
        ("x: !new:torch.hub.load ['a/b', 'c']", "!new:torch.hub.load"),
        ("x: !include:other.yaml", "!include:other.yaml"),
        (
            "x: !apply:speechbrain_mrmha.layers.margins.margin_loss []",
            "!apply:",
        ),
    ],
)
def test_a_folder_that_would_run_code_is_refused_naming_tag_and_line(
    tmp_path, line, named
):
    marker = tmp_path / "owned"
    yaml = tmp_path / "hyperparams.yaml"
    yaml.write_text("seed: 1\n" + line.format(marker=marker) + "\n")
    with pytest.raises(UntrustedFolderError) as error:
        check_trusted(yaml)
    assert f"line 2: {named}" in str(error.value)
    assert "--trust-folder" in str(error.value)
    assert not marker.exists()


def test_nested_tags_are_found_and_all_listed(tmp_path):
    yaml = tmp_path / "hyperparams.yaml"
    yaml.write_text(
        "model: !new:torch.nn.Sequential\n"
        "    - !new:torch.nn.Linear [2, 2]\n"
        "    - !apply:os.getcwd []\n"
        "other:\n"
        "    deep:\n"
        "        - !name:os.remove\n"
    )
    with pytest.raises(UntrustedFolderError) as error:
        check_trusted(yaml)
    assert "line 3: !apply:os.getcwd" in str(error.value)
    assert "line 6: !name:os.remove" in str(error.value)


def test_the_seed_and_references_are_allowed(tmp_path):
    yaml = tmp_path / "hyperparams.yaml"
    yaml.write_text(
        "seed: 1\n"
        "__set_seed: !apply:speechbrain.utils.seed.seed_everything\n"
        "    seed: !ref <seed>\n"
        "n: !ref <seed> + 1\n"
        "layer: !new:torch.nn.Linear [!ref <n>, 2]\n"
    )
    check_trusted(yaml)


def test_trusting_the_folder_skips_the_check(tmp_path):
    yaml = tmp_path / "hyperparams.yaml"
    yaml.write_text("x: !apply:os.getcwd []\n")
    check_trusted(yaml, trust_folder=True)


@pytest.mark.parametrize(
    "target",
    [
        "speechbrain.lobes.features.torch.hub.load",
        "torch.nn.modules.module.torch.hub.load",
        "speechbrain.nnet.linear.torch.load",
        "torch.nn.Linear.__init__",
        "speechbrain_mrmha.layers.pooling.NoSuchPooling",
    ],
)
def test_an_allowed_prefix_reaching_another_object_is_refused(tmp_path, target):
    """The allow-list judges the object a path names, not its spelling:
    an allowed module's attribute ``torch`` leads anywhere."""
    yaml = tmp_path / "hyperparams.yaml"
    yaml.write_text(f"x: !new:{target} ['a/b', 'c']\n")
    with pytest.raises(UntrustedFolderError, match=f"line 1: !new:{target}"):
        check_trusted(yaml)


def test_the_pretrainer_may_not_fetch_checkpoints_from_elsewhere(tmp_path):
    yaml = tmp_path / "hyperparams.yaml"
    yaml.write_text(
        "model: !new:torch.nn.Linear [2, 2]\n"
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
        "    loadables:\n"
        "        model: !ref <model>\n"
        "    paths:\n"
        "        model: https://example.com/evil.ckpt\n"
    )
    with pytest.raises(UntrustedFolderError, match="line 5: .*'paths'"):
        check_trusted(yaml)
