"""SpeechBrain's recipe checks, run the way its harness
(``tests/utils/recipe_tests.py``) runs them, on a copy of its sample layout:

* ``tests/recipes/VoxCeleb1.csv`` has SpeechBrain's exact header, one row
  per training configuration and one for verification;
* every row runs from the repository root with ``PYTHONPATH`` set to the
  recipe folder, its ``test_debug_flags`` plus ``--device=cpu
  --output_folder=tests/tmp/<id> --debug --debug_persistently``, in the
  harness' order (sorted row ids), and leaves the files its
  ``test_debug_checks`` lists;
* every yaml loads with only data_folder and output_folder overridden
  (SpeechBrain's ``load_yaml_test``).

The sample layout is SpeechBrain's ``tests/samples``: ``ASR/spk1_snt1.wav``
and ``ASR/spk1_snt2.wav`` (one speaker), ``annotation/ASR_train.csv`` (with
SpeechBrain's extra columns and its ``ID, duration`` header) and the 4-line
``annotation/verification.txt``; the audio here is generated.
"""

import csv
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import run_process

ROOT = Path(__file__).resolve().parents[2]
RECIPE_CSV = ROOT / "tests" / "recipes" / "VoxCeleb1.csv"
HEADER = (
    "Task,Dataset,Script_file,Hparam_file,Data_prep_file,Readme_file,"
    "Result_url,HF_repo,test_debug_flags,test_debug_checks,performance"
)
HARNESS_OPTIONS = "--device=cpu"


def recipe_rows():
    """Rows by the harness' recipe id, ``<csv name>_row_<line>``."""
    with open(RECIPE_CSV, newline="") as fin:
        reader = csv.DictReader(fin, delimiter=",", skipinitialspace=True)
        return {
            f"VoxCeleb1_row_{i + 2:02d}": row for i, row in enumerate(reader)
        }


@pytest.fixture(scope="module")
def speechbrain_root(tmp_path_factory):
    """A folder laid out like a SpeechBrain checkout for these rows: the
    recipe under recipes/VoxCeleb1 and generated tests/samples."""
    root = tmp_path_factory.mktemp("speechbrain")
    (root / "recipes").mkdir()
    (root / "recipes" / "VoxCeleb1").symlink_to(ROOT / "recipes" / "VoxCeleb1")
    samples = root / "tests" / "samples"
    (samples / "ASR").mkdir(parents=True)
    (samples / "annotation").mkdir()
    rng = np.random.default_rng(0)
    lines = ["ID, duration,start,stop,wav,spk_id,wrd"]
    for name, seconds in (("spk1_snt1", 2.87), ("spk1_snt2", 3.15)):
        samples_n = int(seconds * 16000)
        t = np.arange(samples_n) / 16000
        voice = (
            0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))
        )
        audio = voice + 0.05 * rng.standard_normal(samples_n)
        soundfile.write(
            samples / "ASR" / f"{name}.wav",
            audio.astype("float32"),
            16000,
            subtype="PCM_16",
        )
        lines.append(
            f"{name},{seconds},0,16000,tests/samples/ASR/{name}.wav,spk1,a b c"
        )
    (samples / "annotation" / "ASR_train.csv").write_text(
        "\n".join(lines) + "\n"
    )
    (samples / "annotation" / "verification.txt").write_text(
        "1 spk1_snt1 spk1_snt1.wav\n0 spk1_snt1 spk1_snt2.wav\n"
        "0 spk1_snt2 spk1_snt1.wav\n0 spk1_snt2 spk1_snt2.wav\n"
    )
    return root


def test_recipe_csv_follows_speechbrain_format():
    text = RECIPE_CSV.read_text()
    assert text.splitlines()[0] == HEADER
    rows = list(recipe_rows().values())
    with open(RECIPE_CSV, newline="") as fin:
        assert all(len(r) == len(HEADER.split(",")) for r in csv.reader(fin))
    hparams = sorted(Path(row["Hparam_file"]).name for row in rows)
    on_disk = sorted(
        p.name for p in (ROOT / "recipes/VoxCeleb1/hparams").glob("*.yaml")
    )
    assert (
        hparams == on_disk
    )  # one row per configuration, verification included
    for row in rows:
        for field in (
            "Script_file",
            "Hparam_file",
            "Data_prep_file",
            "Readme_file",
        ):
            assert (ROOT / row[field]).is_file(), row[field]
        assert row["test_debug_checks"].startswith("file_exists=[")
    # verification runs last (rows run in sorted id order) on a trained model
    ids = sorted(recipe_rows())
    assert recipe_rows()[ids[-1]]["Script_file"].endswith(
        "speaker_verification_cosine.py"
    )


def check_files(check, output_folder):
    """The files of ``file_exists=[...]`` missing from ``output_folder``."""
    listed = re.search(r"file_exists=\[(.*?)\]", check).group(1).split(",")
    return [
        name
        for name in listed
        if not os.path.exists(os.path.join(output_folder, name))
    ]


def test_every_row_runs_like_speechbrains_harness(speechbrain_root):
    rows = recipe_rows()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    failures = []
    for recipe_id in sorted(rows):
        row = rows[recipe_id]
        output = f"tests/tmp/{recipe_id}"
        script = row["Script_file"].strip()
        cmd = (
            f"PYTHONPATH={speechbrain_root}/{os.path.dirname(script)} "
            f"{sys.executable} {script} {row['Hparam_file'].strip()} "
            f"{row['test_debug_flags'].strip()} {HARNESS_OPTIONS} "
            f"--output_folder={output} --debug --debug_persistently"
        )
        done = run_process(
            cmd, cwd=speechbrain_root, env=env, shell=True, check=False
        )
        if done.returncode != 0:
            failures.append(
                f"{recipe_id} ({row['Hparam_file']}) exit "
                f"{done.returncode}:\n{done.stderr[-2000:]}"
            )
            continue
        missing = check_files(
            row["test_debug_checks"], speechbrain_root / output
        )
        if missing:
            failures.append(f"{recipe_id}: missing {missing}")
    assert not failures, "\n".join(failures)


def test_every_yaml_loads_with_speechbrains_overrides(tmp_path):
    """SpeechBrain's load_yaml_test: data_folder and output_folder only."""
    from hyperpyyaml import load_hyperpyyaml

    for row in recipe_rows().values():
        with open(ROOT / row["Hparam_file"]) as fin:
            load_hyperpyyaml(
                fin,
                {
                    "data_folder": str(tmp_path),
                    "output_folder": str(tmp_path / "out"),
                },
            )
