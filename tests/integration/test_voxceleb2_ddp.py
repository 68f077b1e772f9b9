"""The VoxCeleb2 recipe under DDP: two gloo processes on CPU
(``torch.distributed.run``) prepare a tiny VoxCeleb2 folder of m4a files
(with FLAC shards), train one epoch of shards with two loader workers each,
write a pretrained folder and score two VoxCeleb1 lists. The run trains
exactly one epoch; each process takes the optimizer steps of its half of
the training utterances (``ceil((n // 2) / batch_size)``, not the
``ceil(n / batch_size)`` of a process that reads them all), and those
halves, as ``ShardStream`` splits the run's shards for ranks 0 and 1,
are disjoint and cover the training annotation; the pretrained folder
loads with SpeechBrain's ``EncoderClassifier`` and embeds.

Two single-process runs on CSVs given with ``--skip_prep=True``: with
``use_shards: False`` the recipe trains on the files; a shard folder of
other rows and a batch size that leaves a batch of one are both named in
one error before any training.
"""

import csv
import json
import math
import os
import sys
import tarfile
from pathlib import Path

import torch
import yaml
from conftest import run_process
from test_recipe_harness import write_tiny_voxceleb

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "VoxCeleb2"
BATCH, SEED, SENTENCE_LEN = 4, 1986, 0.5


def _checkpoint(save_folder):
    """The run's only checkpoint folder (one epoch, end of epoch)."""
    (folder,) = Path(save_folder).glob("CKPT+*")
    return folder


def test_two_gloo_processes_train_one_epoch_of_shards(tmp_path):
    from speechbrain.inference.classifiers import EncoderClassifier

    from speechbrain_mrmha.training.crops import RandomCrops
    from speechbrain_mrmha.training.shard_stream import ShardStream

    vox2, vox1 = write_tiny_voxceleb(tmp_path, speakers=4, utterances=3)
    output = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run_process(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(RECIPE / "train_speaker_embeddings.py"),
            str(RECIPE / "hparams" / "attentive_statistics.yaml"),
            f"--data_folder={vox2}",
            f"--vox1_folder={vox1}",
            f"--output_folder={output}",
            "--distributed_backend=gloo",
            "--device=cpu",
            "--number_of_epochs=1",
            f"--batch_size={BATCH}",
            f"--sentence_len={SENTENCE_LEN}",
            "--channels=[4,8,8,8]",
            "--block_counts=[1,1,1,1]",
            "--emb_dim=16",
            "--num_workers=2",
            "--prepare_workers=1",
            "--samples_per_shard=5",
            "--cohort_top_k=3",
        ],
        cwd=RECIPE,
        env=env,
    )
    log = (output / "train_log.txt").read_text().splitlines()
    assert len(log) == 1 and log[0].startswith("epoch: 1,"), log

    with open(output / "prepared" / "train.csv", newline="") as fin:
        train_ids = {row["ID"] for row in csv.DictReader(fin)}
    n = len(train_ids)
    per_process = n // 2
    assert n == 16  # 4 speakers x 6 files, 2 each for validation
    # each process took the steps of its half only (rank 0's record)
    steps = math.ceil(per_process / BATCH)
    assert steps != math.ceil(n / BATCH)
    checkpoint = _checkpoint(output / "save")
    brain = yaml.safe_load((checkpoint / "brain.ckpt").read_text())
    assert brain["optimizer_step"] == steps
    loader = yaml.safe_load((checkpoint / "dataloader-TRAIN.ckpt").read_text())
    assert loader == {
        "epoch": 1,
        "batches": steps,
        "num_workers": 2,
        "batch_size": BATCH,
    }
    # the yaml's shard_format reached preparation: FLAC members, not m4a
    shards = output / "prepared" / "shards"
    for shard in shards.glob("*.tar"):
        names = tarfile.open(shard).getnames()
        assert {Path(name).suffix for name in names} == {".flac", ".json"}
    # the halves of the epoch's utterances, as the stream splits the shards
    halves = []
    for rank in (0, 1):
        crops = RandomCrops(SEED, sentence_len=SENTENCE_LEN)
        crops.epoch = 1
        stream = ShardStream(
            shards,
            crops,
            BATCH,
            rank=rank,
            world_size=2,
        )
        halves.append([item["id"] for item in stream])
    assert [len(half) for half in halves] == [per_process, per_process]
    assert not set(halves[0]) & set(halves[1])
    assert set(halves[0]) | set(halves[1]) == train_ids  # n is even

    pretrained = output / "pretrained"
    encoder = EncoderClassifier.from_hparams(
        source=str(pretrained), savedir=str(tmp_path / "encoder")
    )
    first, second = sorted(vox1.rglob("*.wav"))[:2]
    signals = [encoder.load_audio(str(path)) for path in (first, second)]
    embeddings = [encoder.encode_batch(s.unsqueeze(0)) for s in signals]
    assert all(e.shape == (1, 1, 16) for e in embeddings)
    assert all(torch.isfinite(e).all() for e in embeddings)
    assert not torch.allclose(embeddings[0], embeddings[1])
    # Vox1-O and H in one run, AS-norm against the VoxCeleb2 training
    # speakers, each VoxCeleb1 file embedded once for both lists
    results = json.loads((output / "verification" / "results.json").read_text())
    assert sorted(results["lists"]) == sorted(
        path.name for path in (vox1 / "meta").glob("*.txt")
    )
    for metrics in results["lists"].values():
        assert {"EER", "minDCF", "actDCF", "Cllr"} <= set(metrics)
    assert results["score_norm"] == "as-norm"
    assert results["cohort"]["speakers"] == 4  # the training speakers
    listed = set()
    for trial_list in (vox1 / "meta").glob("*.txt"):
        for line in trial_list.read_text().split("\n"):
            listed.update(line.split()[1:])
    assert results["n_files"] == len(listed)
    assert (output / "verification" / "results.md").is_file()


def _write_annotation(path, rows):
    """An annotation CSV of ``{ID: (duration, wav, speaker)}``."""
    lines = ["ID,duration,wav,spk_id"]
    lines += [f"{key},{d},{wav},{spk}" for key, (d, wav, spk) in rows.items()]
    Path(path).write_text("\n".join(lines) + "\n")


def _own_annotations(vox2, folder):
    """Train / valid CSVs of the tiny VoxCeleb2 folder (the first file of
    each speaker for validation) and the training rows."""
    from speechbrain_mrmha.dataio.audio import audio_seconds

    train, valid = {}, {}
    for path in sorted(vox2.rglob("*.m4a")):
        speaker = path.relative_to(vox2 / "dev" / "aac").parts[0]
        key = str(path.relative_to(vox2 / "dev" / "aac").with_suffix(""))
        row = (audio_seconds(path), f"$data_root/{path.relative_to(vox2)}")
        chosen = (
            valid if speaker not in {r[2] for r in valid.values()} else train
        )
        chosen[key] = (*row, speaker)
    _write_annotation(folder / "train.csv", train)
    _write_annotation(folder / "valid.csv", valid)
    return train


def _run(vox2, folder, output, *extra, check=True):
    """One process of the recipe on the CSVs in ``folder`` (skip_prep)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return run_process(
        [
            sys.executable,
            str(RECIPE / "train_speaker_embeddings.py"),
            str(RECIPE / "hparams" / "mrmha.yaml"),
            f"--data_folder={vox2}",
            f"--output_folder={output}",
            "--skip_prep=True",
            f"--train_annotation={folder / 'train.csv'}",
            f"--valid_annotation={folder / 'valid.csv'}",
            "--number_of_epochs=1",
            f"--sentence_len={SENTENCE_LEN}",
            "--channels=[4,8,8,8]",
            "--block_counts=[1,1,1,1]",
            "--emb_dim=16",
            "--num_workers=0",
            "--prepare_workers=1",
            "--device=cpu",
            *extra,
        ],
        cwd=RECIPE,
        env=env,
        check=check,
    )


def test_one_process_trains_on_files_without_shards(tmp_path):
    """use_shards: False reads each file of the training CSV (every
    utterance, in whole batches) and writes the pretrained folder; no
    shards are needed."""
    vox2, _ = write_tiny_voxceleb(tmp_path, speakers=3, utterances=2)
    train = _own_annotations(vox2, tmp_path)
    output = tmp_path / "files"
    _run(vox2, tmp_path, output, "--use_shards=False", "--batch_size=4")
    log = (output / "train_log.txt").read_text().splitlines()
    assert len(log) == 1 and log[0].startswith("epoch: 1,"), log
    brain = yaml.safe_load(
        (_checkpoint(output / "save") / "brain.ckpt").read_text()
    )
    assert len(train) == 9 and brain["optimizer_step"] == 9 // 4  # drop_last
    assert (output / "pretrained" / "embedding_model.ckpt").is_file()
    assert not (output / "prepared").exists()  # nothing prepared


def test_shards_of_other_rows_and_a_batch_of_one_stop_before_training(
    tmp_path,
):
    """With skip_prep, a shard folder that does not hold the training CSV's
    utterances, and a batch size that would end each epoch with a batch of
    one utterance, are both named in one error before any training."""
    from speechbrain_mrmha.dataio.shards import write_shards

    vox2, _ = write_tiny_voxceleb(tmp_path, speakers=3, utterances=2)
    train = _own_annotations(vox2, tmp_path)
    rows = {
        key: {
            "wav": wav.replace("$data_root", str(vox2)),
            "spk_id": spk,
            "duration": seconds,
        }
        for key, (seconds, wav, spk) in list(train.items())[:-1]
    }
    shards = tmp_path / "shards"
    write_shards(rows, shards, samples_per_shard=3, workers=1)  # 8 of 9
    output = tmp_path / "refused"
    result = _run(
        vox2,
        tmp_path,
        output,
        f"--shard_folder={shards}",
        "--batch_size=7",  # 8 utterances: batches of 7 and 1
        check=False,
    )
    assert result.returncode != 0
    error = result.stdout + result.stderr  # SpeechBrain logs it to stdout
    assert "2 problems with the training shards" in error
    assert f"shard_folder {shards}: holds 8 utterances" in error
    assert f"{tmp_path / 'train.csv'} 9 (shards of other rows" in error
    assert "batch_size=7: the last batch of each epoch would hold 1" in error
    assert not (output / "train_log.txt").exists()
    assert not list((output / "save").glob("CKPT+*"))


def test_calibration_speakers_are_held_out_then_calibrate(tmp_path):
    """The recipe's whole path on 20 speakers: preparation holds out
    calibration_speakers whole (at least 5), training never sees them (not
    in the label encoder, the training CSV or the shards' speakers), and
    the pretrained folder gets a calibration fitted on exactly them."""
    from speechbrain_mrmha.dataio.annotation import read_annotation
    from speechbrain_mrmha.inference.pretrained import load_calibration

    vox2, vox1 = write_tiny_voxceleb(tmp_path, speakers=20, utterances=2)
    output = tmp_path / "calibrated"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run_process(
        [
            sys.executable,
            str(RECIPE / "train_speaker_embeddings.py"),
            str(RECIPE / "hparams" / "mrmha.yaml"),
            f"--data_folder={vox2}",
            f"--vox1_folder={vox1}",
            f"--output_folder={output}",
            "--device=cpu",
            "--number_of_epochs=1",
            "--batch_size=8",
            f"--sentence_len={SENTENCE_LEN}",
            "--channels=[4,8,8,8]",
            "--block_counts=[1,1,1,1]",
            "--emb_dim=16",
            "--num_workers=0",
            "--prepare_workers=1",
            "--samples_per_shard=10",
            "--cohort_top_k=3",
            "--calibration_speakers=0.01",  # 20 speakers: the minimum, 5
        ],
        cwd=RECIPE,
        env=env,
    )
    prepared = output / "prepared"
    held_out = {
        row["spk_id"]
        for row in read_annotation(
            prepared / "calibration.csv", check_files=False
        ).values()
    }
    assert len(held_out) == 5
    trained = {
        row["spk_id"]
        for row in read_annotation(
            prepared / "train.csv", check_files=False
        ).values()
    }
    assert len(trained) == 15 and not held_out & trained
    manifest = json.loads((prepared / "shards" / "shards.json").read_text())
    assert not held_out & set(manifest["speakers"])
    labels = (output / "pretrained" / "label_encoder.txt").read_text()
    assert not any(f"'{speaker}'" in labels for speaker in held_out)
    calibration = load_calibration(output / "pretrained")
    assert calibration is not None
    assert calibration.statistics["n_speakers"] == 5
    assert calibration.statistics["n_utterances"] == 5 * 4  # whole speakers


def test_a_vox1_folder_without_lists_stops_before_preparation(tmp_path):
    """A --vox1_folder with no trial list in meta/ is refused before the
    run creates its folder: before preparation, which takes hours on
    VoxCeleb2, not after it."""
    vox2, _ = write_tiny_voxceleb(tmp_path, speakers=2, utterances=2)
    empty = tmp_path / "NotVoxCeleb1"
    empty.mkdir()
    output = tmp_path / "refused"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = run_process(
        [
            sys.executable,
            str(RECIPE / "train_speaker_embeddings.py"),
            str(RECIPE / "hparams" / "mrmha.yaml"),
            f"--data_folder={vox2}",
            f"--vox1_folder={empty}",
            f"--output_folder={output}",
            "--device=cpu",
        ],
        cwd=RECIPE,
        env=env,
        check=False,
    )
    assert result.returncode != 0
    error = result.stdout + result.stderr
    assert f"vox1_folder: no trial list in {empty / 'meta'}" in error
    assert not output.exists()
