"""Configuration helpers of training (speechbrain_mrmha.training.config):
the command line with fractional checkpoint intervals, and the training
options in which one configuration differs from another, which is how the
demo takes the modern options from hparams/mrmha_modern.yaml."""

from pathlib import Path

import pytest

from speechbrain_mrmha.app.demo import CONFIGS, MODERN, expand_overrides
from speechbrain_mrmha.training.config import (
    fractional_checkpoint_interval,
    parse_arguments,
    training_options,
)

HPARAMS = (
    Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb1" / "hparams"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["a.yaml", "--ckpt_interval_minutes=0.25", "--lr=0.1"],
        ["a.yaml", "--ckpt_interval_minutes", "0.25", "--lr=0.1"],
    ],
)
def test_checkpoint_interval_may_be_a_fraction(argv):
    assert fractional_checkpoint_interval(argv) == (
        ["a.yaml", "--lr=0.1"],
        0.25,
    )
    hparams_file, run_opts, overrides = parse_arguments(argv)
    assert hparams_file == "a.yaml"
    assert overrides == {"lr": 0.1, "ckpt_interval_minutes": 0.25}
    assert fractional_checkpoint_interval(["a.yaml"]) == (["a.yaml"], None)
    with pytest.raises(ValueError, match="must be a number, got 'soon'"):
        fractional_checkpoint_interval(["--ckpt_interval_minutes=soon"])


def test_modern_options_are_read_from_the_yaml():
    """What mrmha_modern.yaml sets beyond mrmha.yaml, less the model's own
    entries (heads, class count): the options the demo gives another
    pooling's configuration."""
    options = training_options(
        HPARAMS / "mrmha.yaml",
        HPARAMS / "mrmha_modern.yaml",
        {"data_folder": "/data"},
    )
    assert options == {
        "loss": "aam",
        "margin_warmup_start_fraction": 0.125,
        "margin_warmup_end_fraction": 0.25,
    }
    modern = [f"--{key}={value}" for key, value in options.items()]
    assert expand_overrides((MODERN,)) == modern
    _, models = CONFIGS["modern"]
    assert [extra for *_, extra in models] == [(), (MODERN,)]
    # every other configuration takes those keys as overrides
    for yaml in ("attentive_statistics.yaml", "statistics.yaml"):
        assert (
            training_options(
                HPARAMS / yaml, HPARAMS / yaml, {"data_folder": "/data"}
            )
            == {}
        )


def test_options_that_change_the_model_are_left_out(tmp_path):
    base, other = tmp_path / "a.yaml", tmp_path / "b.yaml"
    base.write_text(
        "n: 4\nk: 1\nlr: 0.1\nname: a\n"
        "classifier: !new:torch.nn.Linear [!ref <n>, !ref <k>]\n"
    )
    other.write_text(
        "n: 8\nk: 1\nlr: 0.5\nname: !ref b<n>\nextra: 3\n"
        "classifier: !new:torch.nn.Linear [!ref <n>, !ref <k>]\n"
    )
    # n sizes the model, name is a reference, extra is not in the base
    assert training_options(base, other, keys=("classifier",)) == {"lr": 0.5}
