"""VoxCeleb2 preparation (recipes/VoxCeleb2/voxceleb2_prepare.py) on a tiny
dev layout of AAC files (24 speakers x 2 videos x 3 utterances of 0.5-1.5
s, written with PyAV's encoder): the CSVs hold every file exactly once,
calibration speakers are never trained or validated on, durations are the
decoded lengths, the shards hold exactly train.csv's rows (as FLAC, or as
the m4a bytes), a rerun skips without touching a file, a changed option
prepares again, and bad input (a corrupt file, a missing dev/aac, bad
options) is named in one error with nothing written."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import noise, run_process

from speechbrain_mrmha.dataio.audio import load_audio
from speechbrain_mrmha.dataio.preparation import calibration_speaker_count
from speechbrain_mrmha.dataio.shards import read_manifest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb2"
sys.path.insert(0, str(RECIPE))
from voxceleb2_prepare import main, prepare_voxceleb2  # noqa: E402

SPEAKERS, VIDEOS, UTTERANCES = 24, 2, 3


def write_m4a(av, path, signal, faststart):
    """16 kHz mono AAC, as the ffmpeg command writes it (edit list), moov
    first (``faststart``) or last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="ipod", options=options) as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            signal.numpy()[None, :], format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def make_layout(av, root, speakers, videos, utterances):
    """``root/dev/aac/idNNNNN/<video>/<nnnnn>.m4a`` (the odd utterances with
    their moov first); returns the relative paths under dev/aac."""
    rng = np.random.default_rng(len(str(root)))
    files = []
    for s in range(speakers):
        for v in range(videos):
            for u in range(utterances):
                rel = f"id{s + 10:05d}/vid-{s}_{v}/{u + 1:05d}.m4a"
                seconds = float(rng.uniform(0.5, 1.5))
                signal = noise(seconds, len(files))
                write_m4a(av, root / "dev" / "aac" / rel, signal, u % 2 == 0)
                files.append(rel)
    return sorted(files)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    av = pytest.importorskip("av")
    root = tmp_path_factory.mktemp("vox2") / "VOX2"
    return root, make_layout(av, root, SPEAKERS, VIDEOS, UTTERANCES)


@pytest.fixture(scope="module")
def prepared(layout, tmp_path_factory):
    root, _ = layout
    save = tmp_path_factory.mktemp("prepared")
    result = prepare_voxceleb2(root, save, samples_per_shard=20, num_workers=2)
    return save, result


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def real(root, wav):
    return wav.replace("$data_root", str(root))


def tree(folder):
    """(inode, mtime_ns, size) of every file under folder."""
    return {
        p: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in Path(folder).rglob("*")
        if p.is_file()
    }


def shard_samples(folder):
    urls = sorted(str(p) for p in Path(folder).glob("shard-*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False))


def test_every_file_once_and_calibration_speakers_held_out(layout, prepared):
    root, files = layout
    save, result = prepared
    assert not result.skipped
    tables = {
        name: read_csv(getattr(result, f"{name}_csv"))
        for name in ("train", "valid", "calibration")
    }
    rows = [row for table in tables.values() for row in table]
    aac = root / "dev" / "aac"
    assert sorted(real(root, r["wav"]) for r in rows) == [
        str(aac / f) for f in files
    ]
    for row in rows:
        assert row["wav"].startswith("$data_root/dev/aac/")
        rel = row["wav"][len("$data_root/dev/aac/") :]
        assert row["ID"] == rel[:-4].replace("/", "--")
        assert row["spk_id"] == rel.split("/")[0]
    held_out = {r["spk_id"] for r in tables["calibration"]}
    assert len(held_out) == calibration_speaker_count(SPEAKERS, 0.01) == 5
    trained = {r["spk_id"] for r in tables["train"] + tables["valid"]}
    assert not held_out & trained
    assert len(held_out | trained) == SPEAKERS
    per_speaker = {}
    for row in tables["valid"]:
        per_speaker[row["spk_id"]] = per_speaker.get(row["spk_id"], 0) + 1
    assert per_speaker == dict.fromkeys(trained, 2)


def test_durations_are_the_decoded_lengths(layout, prepared):
    root, _ = layout
    save, result = prepared
    for name in ("train_csv", "valid_csv", "calibration_csv"):
        for row in read_csv(getattr(result, name)):
            decoded = load_audio(real(root, row["wav"]), min_seconds=0)
            assert float(row["duration"]) * 16000 == pytest.approx(
                len(decoded), abs=1e-6
            )


def test_the_shards_hold_exactly_the_training_rows_as_flac(layout, prepared):
    root, _ = layout
    save, result = prepared
    assert Path(result.shard_folder) == save / "shards"
    train = {r["ID"]: r for r in read_csv(result.train_csv)}
    manifest = read_manifest(result.shard_folder)
    assert manifest["utterances"] == len(train)
    assert manifest["audio_format"] == "flac"
    assert manifest["speakers"] == sorted({r["spk_id"] for r in train.values()})
    samples = shard_samples(result.shard_folder)
    assert sorted(s["__key__"] for s in samples) == sorted(train)
    for sample in samples:
        meta, row = json.loads(sample["json"]), train[sample["__key__"]]
        assert {k for k in sample if not k.startswith("__")} == {"flac", "json"}
        assert meta["wav"] == real(root, row["wav"])
        assert meta["spk_id"] == row["spk_id"]
        assert meta["duration"] == float(row["duration"])


def test_a_rerun_skips_and_touches_nothing(layout, prepared):
    root, _ = layout
    save, result = prepared
    before = tree(save)
    again = prepare_voxceleb2(root, save, samples_per_shard=20)
    assert again == result._replace(skipped=True)
    assert tree(save) == before


def test_a_changed_option_prepares_again(layout, tmp_path):
    """Prepared again with one utterance per speaker for validation: new
    CSVs, and shards of the new train rows."""
    root, files = layout
    first = prepare_voxceleb2(
        root, tmp_path, samples_per_shard=20, num_workers=1
    )
    options = json.loads((tmp_path / "prepare_options.json").read_text())
    second = prepare_voxceleb2(
        root,
        tmp_path,
        valid_utterances_per_speaker=1,
        samples_per_shard=20,
        num_workers=1,
    )
    assert not first.skipped and not second.skipped
    changed = json.loads((tmp_path / "prepare_options.json").read_text())
    assert {k for k in options if options[k] != changed[k]} == {
        "valid_utterances_per_speaker"
    }
    valid = read_csv(second.valid_csv)
    assert len(valid) == SPEAKERS - 5  # one per trained speaker
    train = {r["ID"] for r in read_csv(second.train_csv)}
    assert len(train) + len(valid) + len(read_csv(second.calibration_csv)) == (
        len(files)
    )
    samples = shard_samples(second.shard_folder)
    assert sorted(s["__key__"] for s in samples) == sorted(train)


def test_the_cli_without_shards_and_with_m4a_shards(layout, tmp_path, capsys):
    root, _ = layout
    result = main(
        [
            "--data_folder",
            str(root),
            "--save_folder",
            str(tmp_path / "csv"),
            "--no_shards",
            "--num_workers",
            "1",
        ]
    )
    assert (
        result.shard_folder is None and not (tmp_path / "csv/shards").exists()
    )
    assert capsys.readouterr().out == f"prepared: {tmp_path / 'csv'}\n"
    result = main(
        [
            "--data_folder",
            str(root),
            "--save_folder",
            str(tmp_path / "m4a"),
            "--shard_format",
            "null",  # the yaml's spelling; "m4a" is the same
            "--num_workers",
            "1",
        ]
    )
    train = {r["ID"]: r for r in read_csv(result.train_csv)}
    samples = shard_samples(result.shard_folder)
    assert sorted(s["__key__"] for s in samples) == sorted(train)
    for sample in samples:
        wav = real(root, train[sample["__key__"]]["wav"])
        assert sample["m4a"] == Path(wav).read_bytes()


def test_corrupt_files_are_named_and_nothing_is_written(tmp_path):
    av = pytest.importorskip("av")
    root = tmp_path / "VOX2"
    files = make_layout(av, root, 3, 1, 4)
    aac = root / "dev" / "aac"
    garbage, cut = aac / files[1], aac / files[6]  # cut: moov first
    garbage.write_bytes(b"this is not an m4a file" * 40)
    cut.write_bytes(cut.read_bytes()[:-200])  # its audio data cut short
    with pytest.raises(ValueError) as caught:
        prepare_voxceleb2(root, tmp_path / "save", num_workers=1)
    lines = str(caught.value).splitlines()
    assert lines[0] == "2 problems with the VoxCeleb2 files (none written):"
    assert lines[1].startswith(f"  {garbage}: cannot read audio header")
    assert lines[2].startswith(f"  {cut}: truncated audio")
    assert not (tmp_path / "save").exists()


def test_a_missing_dev_aac_and_bad_options_are_named(layout, tmp_path):
    root, _ = layout
    with pytest.raises(FileNotFoundError) as caught:
        prepare_voxceleb2(root / "dev", tmp_path / "save")
    message = str(caught.value)
    assert str(root / "dev" / "dev" / "aac") in message
    assert "vox2_dev_aac_parta*" in message
    with pytest.raises(ValueError) as caught:
        prepare_voxceleb2(
            root,
            tmp_path / "save",
            valid_utterances_per_speaker=0,
            calibration_speakers=0.9,
            samples_per_shard=0,
            shard_format="ogg",
        )
    lines = str(caught.value).splitlines()
    assert lines[0] == "4 options of prepare_voxceleb2 are wrong:"
    assert [line.split()[0] for line in lines[1:]] == [
        "valid_utterances_per_speaker",
        "samples_per_shard",
        "shard_format",
        "calibration_speakers",
    ]
    assert not (tmp_path / "save").exists()


def test_a_folder_prepared_by_the_cli_is_shared_by_every_recipe_yaml(
    layout, tmp_path
):
    """The README's "prepare once and share": a folder the CLI prepared
    with its defaults is up to date for the training script of every
    yaml given it as --prepare_folder (nothing rewritten), and a run of
    one epoch trains from its shards."""
    import os

    root, _ = layout
    shared = tmp_path / "vox2_prepared"
    main(["--data_folder", str(root), "--save_folder", str(shared)])
    before = tree(shared)
    for config in ("mrmha.yaml", "attentive_statistics.yaml", "mqmha.yaml"):
        output = tmp_path / config.replace(".yaml", "")
        result = run_process(
            [
                sys.executable,
                str(RECIPE / "train_speaker_embeddings.py"),
                str(RECIPE / "hparams" / config),
                f"--data_folder={root}",
                f"--prepare_folder={shared}",
                f"--output_folder={output}",
                "--device=cpu",
                "--number_of_epochs=1",
                "--batch_size=8",
                "--sentence_len=0.5",
                "--channels=[4,8,8,8]",
                "--block_counts=[1,1,1,1]",
                "--emb_dim=16",
                "--num_workers=0",
                "--prepare_workers=1",
            ],
            cwd=RECIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        log = result.stdout + result.stderr
        assert "VoxCeleb2 preparation up to date" in log, config
        assert (output / "pretrained" / "embedding_model.ckpt").is_file()
        assert not (output / "prepared").exists()
    assert tree(shared) == before
