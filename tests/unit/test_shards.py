"""WebDataset shards of an annotation (``speechbrain_mrmha.dataio.shards``):
the bytes and metadata come back as written (also through WebDataset's own
reader), a rerun finishes or repairs only what is missing, every bad file
is named in one error before anything is written, and the assignment of
utterances to shards is a function of the rows and the seed alone."""

import json
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from speechbrain_mrmha.dataio import shards as shards_module
from speechbrain_mrmha.dataio.shards import (
    MANIFEST,
    plan_shards,
    read_manifest,
    write_shards,
)

SPEAKERS, PER_SPEAKER = 5, 6


def make_rows(folder, speakers=SPEAKERS, per_speaker=PER_SPEAKER):
    """Tiny audio files of several formats (ID ``spkK/uttJ``) and their
    rows, as ``read_annotation`` gives them."""
    rows = {}
    rng = np.random.default_rng(0)
    for k in range(speakers):
        for j in range(per_speaker):
            ext = ("wav", "flac")[j % 2]
            path = Path(folder, f"spk{k}", f"utt{j}.{ext}")
            path.parent.mkdir(parents=True, exist_ok=True)
            frames = 1600 + 160 * j
            sf.write(path, 0.1 * rng.standard_normal(frames), 16000)
            rows[f"spk{k}/utt{j}"] = {
                "wav": str(path),
                "spk_id": f"spk{k}",
                "duration": frames / 16000,
            }
    return rows


@pytest.fixture
def rows(tmp_path):
    return make_rows(tmp_path / "audio")


def shard_files(folder):
    return sorted(p for p in Path(folder).glob("shard-*.tar"))


def state(folder):
    """(inode, mtime_ns, size) of every file: what a rerun touched."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in Path(folder).iterdir()
    }


def test_round_trip_of_bytes_and_metadata_also_through_webdataset(
    rows, tmp_path
):
    manifest = write_shards(rows, tmp_path / "s", samples_per_shard=7)
    assert manifest == read_manifest(tmp_path / "s")
    assert manifest["utterances"] == len(rows)
    assert [s["samples"] for s in manifest["shards"]] == [7, 7, 7, 7, 2]
    assert manifest["speakers"] == [f"spk{k}" for k in range(SPEAKERS)]
    assert manifest["seconds"] == pytest.approx(
        sum(r["duration"] for r in rows.values())
    )
    urls = [str(p) for p in shard_files(tmp_path / "s")]
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        row = rows[sample["__key__"]]
        ext = Path(row["wav"]).suffix[1:]
        assert sample[ext] == Path(row["wav"]).read_bytes()  # as stored
        assert meta == {
            "id": sample["__key__"],
            "spk_id": row["spk_id"],
            "duration": row["duration"],
            "wav": row["wav"],
        }
        seen[sample["__key__"]] = seen.get(sample["__key__"], 0) + 1
    assert seen == dict.fromkeys(rows, 1)
    for shard in manifest["shards"]:
        path = tmp_path / "s" / shard["name"]
        assert shard["bytes"] == path.stat().st_size
        with tarfile.open(path) as tar:
            assert all(m.mtime == 0 for m in tar.getmembers())


def test_the_same_rows_give_the_same_bytes(rows, tmp_path):
    write_shards(rows, tmp_path / "a", samples_per_shard=7, workers=1)
    write_shards(rows, tmp_path / "b", samples_per_shard=7, workers=2)
    a, b = shard_files(tmp_path / "a"), shard_files(tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_a_finished_folder_is_left_alone(rows, tmp_path):
    first = write_shards(rows, tmp_path / "s", samples_per_shard=7)
    before = state(tmp_path / "s")
    assert write_shards(rows, tmp_path / "s", samples_per_shard=7) == first
    assert state(tmp_path / "s") == before


def test_a_rerun_rewrites_only_a_truncated_shard(rows, tmp_path):
    folder = tmp_path / "s"
    write_shards(rows, folder, samples_per_shard=7)
    good = {p.name: p.read_bytes() for p in shard_files(folder)}
    victim = folder / "shard-000002.tar"
    with open(victim, "r+b") as fh:
        fh.truncate(victim.stat().st_size // 2)
    with pytest.raises(ValueError, match="shard-000002.tar: .* bytes"):
        read_manifest(folder)
    before = state(folder)
    write_shards(rows, folder, samples_per_shard=7, workers=2)
    after = state(folder)
    changed = sorted(n for n in after if after[n] != before.get(n))
    assert changed == sorted(
        [MANIFEST, "shard-000002.json", "shard-000002.tar"]
    )
    assert {p.name: p.read_bytes() for p in shard_files(folder)} == good


def test_an_interrupted_run_is_finished_by_a_rerun(rows, tmp_path):
    """A run killed while writing shard 3 left shards 0-2 and their
    records, a temporary file, and no manifest."""
    folder = tmp_path / "s"
    write_shards(rows, folder, samples_per_shard=7)
    reference = {p.name: p.read_bytes() for p in shard_files(folder)}
    for name in (MANIFEST, "shard-000003.tar", "shard-000003.json"):
        (folder / name).unlink()
    (folder / "shard-000004.json").unlink()  # killed before its record
    (folder / ".shard-000003.tar.123.abcdef01.tmp").write_bytes(b"half")
    with pytest.raises(FileNotFoundError, match="never finished"):
        read_manifest(folder)
    before = state(folder)
    write_shards(rows, folder, samples_per_shard=7)
    after = state(folder)
    assert {n for n in before if n in after and after[n] == before[n]} == {
        f"shard-00000{i}.{e}" for i in range(3) for e in ("tar", "json")
    }
    assert not list(folder.glob(".*.tmp"))
    assert {p.name: p.read_bytes() for p in shard_files(folder)} == reference
    read_manifest(folder)


def test_verify_finds_a_shard_changed_in_place(rows, tmp_path):
    folder = tmp_path / "s"
    write_shards(rows, folder, samples_per_shard=7)
    victim = folder / "shard-000001.tar"
    original = victim.read_bytes()
    with open(victim, "r+b") as fh:  # same size, other content
        fh.seek(1000)
        fh.write(b"\xff" * 16)
    write_shards(rows, folder, samples_per_shard=7)  # size only: kept
    assert victim.read_bytes() != original
    write_shards(rows, folder, samples_per_shard=7, verify=True)
    assert victim.read_bytes() == original


def test_other_rows_rewrite_the_folder_with_a_warning(rows, tmp_path, caplog):
    folder = tmp_path / "s"
    write_shards(rows, folder, samples_per_shard=7)
    fewer = dict(list(rows.items())[:10])
    with caplog.at_level(logging.WARNING, logger=shards_module.__name__):
        manifest = write_shards(fewer, folder, samples_per_shard=7)
    assert "holds shards of other rows (30 rows" in caplog.text
    assert "for these 10 rows" in caplog.text
    names = {p.name for p in folder.iterdir()}
    assert names == {
        "shard-000000.json",
        "shard-000000.tar",
        "shard-000001.json",
        "shard-000001.tar",
        MANIFEST,
    }
    urls = [str(p) for p in shard_files(folder)]
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert sorted(keys) == sorted(fewer)
    assert manifest["utterances"] == 10


def test_every_unusable_file_is_named_in_one_error_before_any_write(
    rows, tmp_path
):
    bad = dict(rows)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio at all" * 10)
    empty = tmp_path / "empty.wav"  # a header, no frames
    sf.write(empty, np.zeros(0), 16000)
    other_rate = tmp_path / "rate.wav"
    sf.write(other_rate, np.zeros(800), 8000)
    for key, path in [
        ("x/missing", tmp_path / "missing.wav"),
        ("x/garbage", garbage),
        ("x/empty", empty),
        ("x/rate", other_rate),
    ]:
        bad[key] = {"wav": str(path), "spk_id": "x", "duration": 1.0}
    with pytest.raises(ValueError) as caught:
        write_shards(
            bad, tmp_path / "s", samples_per_shard=7, sample_rate=16000
        )
    message = str(caught.value)
    assert message.startswith("4 of 34 audio files cannot be written")
    assert f"{tmp_path / 'missing.wav'}: cannot read audio header" in message
    assert f"{garbage}: cannot read audio header" in message
    assert f"{empty}: no samples" in message
    assert f"{other_rate}: 8000 Hz" in message
    assert not (tmp_path / "s").exists()


def test_bad_rows_are_named_in_one_error(tmp_path):
    rows = {
        "a.1": {"wav": "/d/a.wav", "spk_id": "s", "duration": 1.0},
        "b": {"wav": "/d/b", "spk_id": "s", "duration": 1.0},
        "c": {"wav": "/d/c.json", "spk_id": "", "duration": 0.0},
        "/d": {"wav": "/d/d.wav", "spk_id": "s", "duration": 1.0},
        "ok/e": {"wav": "/d/e.WAV", "spk_id": "s", "duration": 1.0},
    }
    with pytest.raises(ValueError) as caught:
        write_shards(rows, tmp_path / "s")
    lines = str(caught.value).splitlines()
    assert lines[0] == "6 rows cannot be written to shards:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "ID '/d'",
        "ID 'a.1'",
        "ID b",
        "ID c",
        "ID c",
        "ID c",
    ]
    assert not (tmp_path / "s").exists()


def test_a_file_that_fails_while_writing_stops_the_manifest_only(
    rows, tmp_path, monkeypatch
):
    """A file readable at the check and gone when its shard is written: the
    other shards are finished, the error names the shard and the file, and
    no manifest is written; a rerun with the file back finishes."""
    folder = tmp_path / "s"
    plan = plan_shards(rows, 7)
    victim = plan.shards[1][2][3][1]  # a file of shard 1
    content = Path(victim).read_bytes()
    checked = shards_module.read_headers

    def check_then_remove(paths, workers):
        headers = checked(paths, workers)
        os.remove(victim)
        return headers

    monkeypatch.setattr(shards_module, "read_headers", check_then_remove)
    with pytest.raises(ValueError) as caught:
        write_shards(rows, folder, samples_per_shard=7, workers=1)
    assert str(caught.value).splitlines() == [
        "1 of 5 shards cannot be written (rerun to finish the others):",
        f"  {folder / 'shard-000001.tar'} reading {victim}: "
        "No such file or directory",
    ]
    assert not (folder / MANIFEST).exists()
    assert sorted(p.name for p in shard_files(folder)) == [
        f"shard-00000{i}.tar" for i in (0, 2, 3, 4)
    ]
    monkeypatch.undo()
    Path(victim).write_bytes(content)
    write_shards(rows, folder, samples_per_shard=7)
    assert read_manifest(folder)["utterances"] == len(rows)


def test_the_assignment_depends_on_the_rows_and_the_seed_only(rows):
    plan = plan_shards(rows, 7, seed=3)
    assert plan == plan_shards(dict(reversed(list(rows.items()))), 7, seed=3)
    assert plan.shards != plan_shards(rows, 7, seed=4).shards
    assert plan.input_digest == plan_shards(rows, 7, seed=4).input_digest
    placed = [s[0] for _, _, samples in plan.shards for s in samples]
    assert sorted(placed) == sorted(rows)  # each row in one shard once


def test_shards_mix_speakers(tmp_path):
    """Rows sorted by speaker are spread: every shard of 10 holds utterances
    of several of the 10 speakers (a sorted split would give one each)."""
    rows = {
        f"spk{k}/u{j}": {
            "wav": f"/d/{k}/{j}.wav",
            "spk_id": f"spk{k}",
            "duration": 1.0,
        }
        for k in range(10)
        for j in range(10)
    }
    plan = plan_shards(rows, 10, seed=0)
    assert all(
        len({s[2] for s in samples}) >= 4 for _, _, samples in plan.shards
    )


# FLAC shards of AAC (.m4a) files: decoded once, stored as 16-bit FLAC

QUANTUM = 1 / 32768  # a 16-bit step; rounding is within half of it


@pytest.fixture
def m4a_rows(tmp_path):
    """12 AAC files of 3 speakers (0.6-1.7 s, PyAV's encoder; the last
    peaks above 1) and their rows, with the durations their headers
    give."""
    av = pytest.importorskip("av")
    from test_audio_m4a import make_signal, write_aac

    from speechbrain_mrmha.dataio.audio import audio_info

    rows = {}
    for i in range(12):
        path = tmp_path / "m4a" / f"spk{i % 3}" / f"u{i}.m4a"
        path.parent.mkdir(parents=True, exist_ok=True)
        gain = 1.0 if i == 11 else 0.5
        signal = gain * make_signal(16000, 0.6 + 0.1 * i, seed=i)
        write_aac(av, path, signal, 16000, faststart=i % 2 == 0)
        frames, rate = audio_info(path)
        rows[f"spk{i % 3}/u{i}"] = {
            "wav": str(path),
            "spk_id": f"spk{i % 3}",
            "duration": frames / rate,
        }
    return rows


def members(folder):
    """Every sample of the shards: ID -> (extension, audio bytes, meta)."""
    found = {}
    urls = [str(p) for p in shard_files(folder)]
    for sample in wds.WebDataset(urls, shardshuffle=False):
        (ext,) = [k for k in sample if k != "json" and not k.startswith("__")]
        found[sample["__key__"]] = (
            ext,
            sample[ext],
            json.loads(sample["json"]),
        )
    return found


def test_flac_members_are_the_decoded_m4a_to_16_bits(m4a_rows, tmp_path):
    import io

    import torch

    from speechbrain_mrmha.dataio.audio import load_audio

    manifest = write_shards(
        m4a_rows, tmp_path / "s", samples_per_shard=5, audio_format="flac"
    )
    assert manifest["audio_format"] == "flac"
    assert all(s["audio_format"] == "flac" for s in manifest["shards"])
    found, peaks = members(tmp_path / "s"), 0
    assert sorted(found) == sorted(m4a_rows)
    for key, (ext, audio, meta) in found.items():
        row = m4a_rows[key]
        assert ext == "flac" and meta["wav"] == row["wav"]
        info = sf.info(io.BytesIO(audio))
        assert (info.format, info.subtype) == ("FLAC", "PCM_16")
        assert (info.samplerate, info.channels) == (16000, 1)
        decoded = load_audio(row["wav"], min_seconds=0)
        stored = load_audio(audio, extension="flac", min_seconds=0)
        assert stored.shape == decoded.shape
        assert info.frames == round(row["duration"] * 16000)
        clipped = decoded.clamp(-1.0, 1.0 - QUANTUM)  # 16 bits' range
        peaks += bool((clipped != decoded).any())
        error = (stored - clipped).abs().max().item()
        assert error <= QUANTUM / 2 + 1e-7
        assert torch.equal(stored * 32768, torch.round(stored * 32768))
    assert peaks == 1  # the loud file was clipped, the others were not


def test_a_shard_stream_reads_flac_shards(m4a_rows, tmp_path):
    """Every utterance once, each crop within a 16-bit step of the same
    crop (same draw) read from the original m4a file (clipped)."""
    from speechbrain_mrmha.training.crops import RandomCrops
    from speechbrain_mrmha.training.shard_stream import ShardStream

    write_shards(
        m4a_rows, tmp_path / "s", samples_per_shard=5, audio_format="flac"
    )
    crops = RandomCrops(5, sentence_len=0.5)
    items = list(ShardStream(tmp_path / "s", crops, batch_size=4))
    assert sorted(item["id"] for item in items) == sorted(m4a_rows)
    for item in items:
        row = m4a_rows[item["id"]]
        expected, _ = crops.read(item["id"], row["wav"], row["duration"])
        expected = expected.clamp(-1.0, 1.0 - QUANTUM)
        assert item["sig"].shape == expected.shape == (8000,)
        error = (item["sig"] - expected).abs().max().item()
        assert error <= QUANTUM / 2 + 1e-7


def test_another_audio_format_rewrites_every_shard(m4a_rows, tmp_path, caplog):
    folder = tmp_path / "s"
    write_shards(m4a_rows, folder, samples_per_shard=5)
    as_they_are = {p.name: p.read_bytes() for p in shard_files(folder)}
    assert {e for e, _, _ in members(folder).values()} == {"m4a"}
    before = state(folder)
    with caplog.at_level(logging.WARNING, logger=shards_module.__name__):
        write_shards(m4a_rows, folder, samples_per_shard=5, audio_format="flac")
    assert "audio format None): rewriting" in caplog.text
    after = state(folder)
    assert all(after[n] != before[n] for n in before)  # every file rewritten
    assert {e for e, _, _ in members(folder).values()} == {"flac"}
    write_shards(m4a_rows, folder, samples_per_shard=5, audio_format="flac")
    assert state(folder) == after  # the same format: left alone
    write_shards(m4a_rows, folder, samples_per_shard=5)  # back again
    assert {p.name: p.read_bytes() for p in shard_files(folder)} == as_they_are
    with pytest.raises(ValueError, match="audio_format must be one of"):
        write_shards(m4a_rows, folder, audio_format="wav")


def test_unreadable_m4a_files_are_named_in_one_error(m4a_rows, tmp_path):
    """Headers: garbage and a file cut in its audio data, both named before
    anything is written. Audio damaged past a good header shows only when
    it is decoded: every such file of every shard in one error, the other
    shards finished, no manifest; a rerun with the files fixed finishes."""
    folder = tmp_path / "s"
    bad = dict(m4a_rows)
    garbage = tmp_path / "garbage.m4a"
    garbage.write_bytes(b"not audio at all" * 100)
    cut = tmp_path / "cut.m4a"
    first = Path(m4a_rows["spk0/u0"]["wav"])  # moov first (faststart)
    cut.write_bytes(first.read_bytes()[: first.stat().st_size - 100])
    for key, path in [("x/garbage", garbage), ("x/cut", cut)]:
        bad[key] = {"wav": str(path), "spk_id": "x", "duration": 1.0}
    with pytest.raises(ValueError) as caught:
        write_shards(bad, folder, samples_per_shard=5, audio_format="flac")
    lines = str(caught.value).splitlines()
    assert lines[0] == "2 of 14 audio files cannot be written to shards:"
    assert any(line.startswith(f"  {garbage}: cannot read") for line in lines)
    assert any(line.startswith(f"  {cut}: truncated audio") for line in lines)
    assert not folder.exists()

    plan = plan_shards(m4a_rows, 5)
    victims = [plan.shards[0][2][0][1], plan.shards[0][2][2][1]]
    victims.append(plan.shards[2][2][1][1])
    originals = {v: Path(v).read_bytes() for v in victims}
    for victim, content in originals.items():
        damaged = bytearray(content)
        middle = len(damaged) * 2 // 3
        damaged[middle : middle + 400] = bytes(range(200)) * 2
        Path(victim).write_bytes(bytes(damaged))
    with pytest.raises(ValueError) as caught:
        write_shards(m4a_rows, folder, samples_per_shard=5, audio_format="flac")
    lines = str(caught.value).splitlines()
    assert lines[0] == (
        "2 of 3 shards cannot be written (rerun to finish the others):"
    )
    named = sorted(
        (line.split(" converting ")[0].strip(), line.split(" converting ")[1])
        for line in lines[1:]
    )
    assert [shard for shard, _ in named] == [
        str(folder / "shard-000000.tar"),
        str(folder / "shard-000000.tar"),
        str(folder / "shard-000002.tar"),
    ]
    assert sorted(v.split(":")[0] for _, v in named) == sorted(victims)
    assert not (folder / MANIFEST).exists()
    assert [p.name for p in shard_files(folder)] == ["shard-000001.tar"]
    for victim, content in originals.items():
        Path(victim).write_bytes(content)
    write_shards(m4a_rows, folder, samples_per_shard=5, audio_format="flac")
    assert read_manifest(folder)["utterances"] == len(m4a_rows)
