"""SpeechBrain's recipe checks, run the way its harness
(``tests/utils/recipe_tests.py``) runs them, on a copy of its sample layout:

* ``tests/recipes/VoxCeleb1.csv`` and ``VoxCeleb2.csv`` have SpeechBrain's
  exact header and one row per configuration (VoxCeleb1: and one for
  verification);
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
``annotation/verification.txt``; the audio here is generated. SpeechBrain's
samples hold no VoxCeleb2 layout, so the VoxCeleb2 rows run on a generated
one (``write_tiny_voxceleb``): ``VoxCeleb2/dev/aac/<speaker>/<video>/*.m4a``
(AAC written with PyAV) and ``VoxCeleb1/wav/...`` with two trial lists in
``VoxCeleb1/meta/``; they prepare (with shards), train, write the
pretrained folder and score the lists with AS-norm.
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
DATASETS = ("VoxCeleb1", "VoxCeleb2")
HEADER = (
    "Task,Dataset,Script_file,Hparam_file,Data_prep_file,Readme_file,"
    "Result_url,HF_repo,test_debug_flags,test_debug_checks,performance"
)
HARNESS_OPTIONS = "--device=cpu"


def recipe_csv(dataset):
    return ROOT / "tests" / "recipes" / f"{dataset}.csv"


def recipe_rows(dataset):
    """Rows by the harness' recipe id, ``<csv name>_row_<line>``."""
    with open(recipe_csv(dataset), newline="") as fin:
        reader = csv.DictReader(fin, delimiter=",", skipinitialspace=True)
        return {
            f"{dataset}_row_{i + 2:02d}": row for i, row in enumerate(reader)
        }


def speech_like(seconds, f0, rng, rate=16000):
    """A voiced tone at ``f0`` Hz with a syllable rhythm, plus noise."""
    t = np.arange(int(seconds * rate)) / rate
    voice = 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (voice + 0.05 * rng.standard_normal(len(t))).astype("float32")


def write_m4a(path, signal, rate=16000):
    """Mono AAC in an .m4a file, with PyAV's encoder (as FFmpeg writes it:
    the encoder's priming skipped by an edit list)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            signal[None], format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def write_tiny_voxceleb(root, speakers=4, videos=2, utterances=2, seed=0):
    """Tiny VoxCeleb2 and VoxCeleb1 folders under ``root``:

    * ``VoxCeleb2/dev/aac/id0000<s>/vid<v>/0000<u>.m4a``: ``speakers`` x
      ``videos`` x ``utterances`` files of 1.0 to 1.5 s, a pitch per
      speaker;
    * ``VoxCeleb1/wav/id1000<s>/vid0/0000<u>.wav``: 3 speakers x 2 files,
      with ``meta/veri_test2.txt`` (6 trials) and ``meta/list_test_hard2.txt``
      (2 trials), both with target and non-target trials.

    Returns the two folders.
    """
    rng = np.random.default_rng(seed)
    vox2, vox1 = Path(root) / "VoxCeleb2", Path(root) / "VoxCeleb1"
    for s in range(speakers):
        for v in range(videos):
            for u in range(utterances):
                signal = speech_like(rng.uniform(1.0, 1.5), 100 + 30 * s, rng)
                name = f"dev/aac/id0000{s}/vid{v}/0000{u + 1}.m4a"
                write_m4a(vox2 / name, signal)
    for s in range(3):
        for u in range(2):
            path = vox1 / "wav" / f"id1000{s}" / "vid0" / f"0000{u + 1}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            signal = speech_like(rng.uniform(1.0, 1.5), 115 + 30 * s, rng)
            soundfile.write(path, signal, 16000, subtype="PCM_16")
    (vox1 / "meta").mkdir()
    a, b, c = (f"id1000{s}/vid0/0000" for s in range(3))
    (vox1 / "meta" / "veri_test2.txt").write_text(
        f"1 {a}1.wav {a}2.wav\n0 {a}1.wav {b}1.wav\n1 {b}1.wav {b}2.wav\n"
        f"0 {b}2.wav {c}1.wav\n1 {c}1.wav {c}2.wav\n0 {a}2.wav {c}2.wav\n"
    )
    (vox1 / "meta" / "list_test_hard2.txt").write_text(
        f"1 {a}2.wav {a}1.wav\n0 {c}2.wav {b}2.wav\n"
    )
    return vox2, vox1


@pytest.fixture(scope="module")
def speechbrain_root(tmp_path_factory):
    """A folder laid out like a SpeechBrain checkout for these rows: the
    recipes under recipes/ and generated tests/samples."""
    root = tmp_path_factory.mktemp("speechbrain")
    (root / "recipes").mkdir()
    for dataset in DATASETS:
        (root / "recipes" / dataset).symlink_to(ROOT / "recipes" / dataset)
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
    write_tiny_voxceleb(samples)
    return root


@pytest.mark.parametrize("dataset", DATASETS)
def test_recipe_csv_follows_speechbrain_format(dataset):
    text = recipe_csv(dataset).read_text()
    assert text.splitlines()[0] == HEADER
    rows = recipe_rows(dataset)
    with open(recipe_csv(dataset), newline="") as fin:
        assert all(len(r) == len(HEADER.split(",")) for r in csv.reader(fin))
    hparams = sorted(Path(row["Hparam_file"]).name for row in rows.values())
    on_disk = sorted(
        p.name for p in (ROOT / "recipes" / dataset / "hparams").glob("*.yaml")
    )
    # one row per configuration, VoxCeleb1's verification included
    assert hparams == on_disk
    for row in rows.values():
        assert row["Dataset"] == dataset
        for field in (
            "Script_file",
            "Hparam_file",
            "Data_prep_file",
            "Readme_file",
        ):
            assert (ROOT / row[field]).is_file(), row[field]
            assert row[field].startswith(f"recipes/{dataset}/"), row[field]
        assert row["test_debug_checks"].startswith("file_exists=[")
    if dataset == "VoxCeleb1":
        # verification runs last (rows run in sorted id order) on a trained model
        last = rows[sorted(rows)[-1]]
        assert last["Script_file"].endswith("speaker_verification_cosine.py")
    else:  # each row prepares with shards (no skip_prep) and verifies
        for row in rows.values():
            flags, checks = row["test_debug_flags"], row["test_debug_checks"]
            assert "--skip_prep" not in flags and "--use_shards" not in flags
            assert "--vox1_folder=" in flags
            for name in (
                "prepared/shards/shards.json",
                "pretrained/hyperparams.yaml",
                "verification/results.md",
            ):
                assert name in checks


def check_files(check, output_folder):
    """The files of ``file_exists=[...]`` missing from ``output_folder``."""
    listed = re.search(r"file_exists=\[(.*?)\]", check).group(1).split(",")
    return [
        name
        for name in listed
        if not os.path.exists(os.path.join(output_folder, name))
    ]


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_row_runs_like_speechbrains_harness(speechbrain_root, dataset):
    rows = recipe_rows(dataset)
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


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_yaml_loads_with_speechbrains_overrides(tmp_path, dataset):
    """SpeechBrain's load_yaml_test: data_folder and output_folder only."""
    from hyperpyyaml import load_hyperpyyaml

    for row in recipe_rows(dataset).values():
        with open(ROOT / row["Hparam_file"]) as fin:
            load_hyperpyyaml(
                fin,
                {
                    "data_folder": str(tmp_path),
                    "output_folder": str(tmp_path / "out"),
                },
            )
