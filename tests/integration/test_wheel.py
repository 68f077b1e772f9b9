"""The plugin as a researcher installs it: a wheel built from the repository,
installed (not editable) into a fresh environment, run from another folder.

Export (``write_pretrained``), loading with SpeechBrain's
``EncoderClassifier.from_hparams`` and with the plugin's ``SpeakerModel``,
and every CLI subcommand must work from
the installed files alone; ``demo``, which drives the recipe of a clone,
says so in one line.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import HANG_GUARD_SECONDS, run_process

ROOT = Path(__file__).resolve().parents[2]
IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "results",
    "demo_output",
    "bench",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Python of a fresh environment holding only the installed wheel; the
    dependencies (torch, speechbrain, ...) come from this environment's
    site-packages as a plain path, so no editable install can leak in."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = shutil.copytree(ROOT, tmp / "source", ignore=IGNORED)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_SECONDS,
    )
    wheel = next((tmp / "dist").glob("speechbrain_mrmha-*.whl"))
    env = tmp / "env"
    venv.create(env, with_pip=False)
    site = Path(
        subprocess.run(
            [
                str(env / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_SECONDS,
    )
    (site / "_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return {
        "python": str(env / "bin" / "python"),
        "site": site,
        "cwd": elsewhere,
    }


def run(installed, args, check=True):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    command = [installed["python"], *map(str, args)]
    return run_process(command, cwd=installed["cwd"], env=env, check=check)


EXPORT = """
import sys, torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.classifiers import EncoderClassifier
import speechbrain_mrmha
from speechbrain_mrmha.training.config import model_definition
from speechbrain_mrmha.inference.pretrained import write_pretrained

assert speechbrain_mrmha.__file__.startswith(sys.argv[1]), speechbrain_mrmha.__file__
config, folder, wav = sys.argv[2:5]
overrides = {"data_folder": ".", "channels": [4, 8, 8, 8], "block_counts": [1, 1, 1, 1],
             "emb_dim": 16, "n_classes": 2, "num_heads": 2}
hparams = load_hyperpyyaml(open(config), overrides)
labels = CategoricalEncoder()
labels.update_from_iterable(["spk1", "spk2"])
write_pretrained(folder, model_definition(config, overrides),
                 hparams["embedding_model"].eval(), hparams["classifier"], labels)
encoder = EncoderClassifier.from_hparams(source=folder, savedir=folder + "_links")
embedding = encoder.encode_batch(encoder.load_audio(wav).unsqueeze(0))
assert embedding.shape == (1, 1, 16), embedding.shape
from speechbrain_mrmha.inference.model import SpeakerModel
result = SpeakerModel(folder).verify(wav, wav)
assert result.decision and abs(result.cosine - 1) < 1e-4, result
print("exported", folder)
"""


def test_installed_wheel_exports_loads_and_runs_every_command(
    installed, tmp_path
):
    cwd = installed["cwd"]
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        soundfile.write(cwd / name, 0.1 * rng.standard_normal(24000), 16000)
    model = cwd / "model"

    result = run(
        installed,
        [
            "-c",
            EXPORT,
            str(installed["site"]),
            ROOT / "recipes/VoxCeleb1/hparams/mrmha.yaml",
            model,
            "a.wav",
        ],
    )
    assert "exported" in result.stdout
    assert not (cwd / "hparams").exists() and not (cwd / "recipes").exists()

    cli = ["-m", "speechbrain_mrmha"]
    verify = run(
        installed, cli + ["verify", "--model", model, "a.wav", "b.wav"]
    )
    assert "score:" in verify.stdout and "decision:" in verify.stdout
    run(
        installed,
        cli + ["embed", "--model", model, "a.wav", "b.wav", "--out", "e.npy"],
    )
    assert np.load(cwd / "e.npy").shape == (2, 16)
    run(
        installed,
        cli
        + [
            "plot",
            "attention",
            "--model",
            model,
            "--wav",
            "a.wav",
            "--out",
            "attention.png",
        ],
    )
    (cwd / "scores.txt").write_text(
        "a b 0.9 1\na c 0.1 0\nb c 0.3 0\nb d 0.7 1\n"
    )
    run(installed, cli + ["plot", "det", "scores.txt", "--out", "det.png"])
    run(installed, cli + ["plot", "hist", "scores.txt", "--out", "hist.png"])
    for figure in ("attention.png", "det.png", "hist.png"):
        assert (cwd / figure).stat().st_size > 1000, figure

    demo = run(installed, cli + ["demo", "--output", "demo"], check=False)
    assert demo.returncode == 2
    lines = demo.stderr.strip().splitlines()
    assert len(lines) == 1 and "clone" in lines[0], demo.stderr
    assert not (cwd / "demo").exists()
