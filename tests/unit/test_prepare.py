"""VoxCeleb1 data preparation: splits, durations, label encoder, reruns,
errors and the command line; and the shared preparation pieces of the
plugin (``speechbrain_mrmha.dataio.preparation``): the header reader on
many files, the training-audio checks, the calibration speakers and their
annotation."""

import csv
import importlib.util
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_process, small_corpus

from speechbrain_mrmha.dataio.audio import audio_info
from speechbrain_mrmha.dataio.preparation import (
    calibration_speaker_count,
    calibration_utterances,
    check_training_audio,
    read_headers,
)
from speechbrain_mrmha.dataio.trials import read_trials, trial_files

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb1"
_spec = importlib.util.spec_from_file_location(
    "voxceleb1_prepare", RECIPE / "voxceleb1_prepare.py"
)
prep = importlib.util.module_from_spec(_spec)
sys.modules.setdefault(
    "voxceleb1_prepare", prep
)  # as `from voxceleb1_prepare import` does
_spec.loader.exec_module(prep)

K = 2  # valid utterances per speaker


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return small_corpus(
        tmp_path_factory.mktemp("prep") / "vox1", 6, 3, (0.5, 0.9), seed=21
    )


def prepare_k(corpus, save, data_folder=None, seed=3):
    """``prepare_voxceleb1`` of ``corpus`` with K valid utterances."""
    return prep.prepare_voxceleb1(
        data_folder or corpus.root,
        str(save),
        corpus.verification_file,
        valid_utterances_per_speaker=K,
        seed=seed,
        num_workers=1,
    )


def same_bytes(a, b):
    return Path(a).read_bytes() == Path(b).read_bytes()


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    return prepare_k(corpus, tmp_path_factory.mktemp("prep_save"))


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def disk_files(wav_folder):
    return sorted(
        str(p.relative_to(wav_folder)) for p in Path(wav_folder).rglob("*.wav")
    )


def rel(row, wav_folder):
    return os.path.relpath(row["wav"], wav_folder)


def test_splits(prepared, corpus):
    train, valid = rows(prepared.train_csv), rows(prepared.valid_csv)
    assert list(train[0]) == ["ID", "duration", "wav", "spk_id"]
    trial_speakers = {
        f.split("/")[0]
        for f in trial_files(read_trials(corpus.verification_file))
    }
    expected = [
        f
        for f in disk_files(corpus.wav_folder)
        if f.split("/")[0] not in trial_speakers
    ]
    train_files = {rel(r, corpus.wav_folder) for r in train}
    valid_files = {rel(r, corpus.wav_folder) for r in valid}
    assert not train_files & valid_files
    assert sorted(train_files | valid_files) == expected
    speakers = sorted({f.split("/")[0] for f in expected})
    assert sorted({r["spk_id"] for r in train}) == speakers
    for spk in speakers:
        assert sum(r["spk_id"] == spk for r in valid) == K
    assert all(
        r["spk_id"] == rel(r, corpus.wav_folder).split("/")[0]
        for r in train + valid
    )
    ids = [r["ID"] for r in train + valid]
    assert len(set(ids)) == len(ids)


def test_durations_equal_soundfile(prepared):
    for path in (prepared.train_csv, prepared.valid_csv, prepared.trials_csv):
        for r in rows(path):
            assert float(r["duration"]) == sf.info(r["wav"]).duration, r["wav"]


def test_trial_outputs(prepared, corpus):
    copied = Path(prepared.verification_file).read_bytes()
    assert copied == Path(corpus.verification_file).read_bytes()
    trial_rows = rows(prepared.trials_csv)
    assert list(trial_rows[0]) == ["ID", "duration", "wav"]
    expected = trial_files(read_trials(corpus.verification_file))
    assert [rel(r, corpus.wav_folder) for r in trial_rows] == expected


def test_valid_split_is_seeded(prepared, corpus, tmp_path):
    again = prepare_k(corpus, tmp_path / "a")
    assert same_bytes(again.valid_csv, prepared.valid_csv)
    draws = set()
    for seed in range(4, 8):
        other = prepare_k(corpus, tmp_path / f"s{seed}", seed=seed)
        draws.add(Path(other.valid_csv).read_bytes())
    assert len(draws) > 1


def test_rerun_skips_and_changed_options_redo(corpus, tmp_path):
    save = tmp_path / "save"
    args = (corpus.root, str(save), corpus.verification_file)
    first = prep.prepare_voxceleb1(
        *args, valid_utterances_per_speaker=1, seed=1, num_workers=1
    )
    assert not first.skipped
    n_valid = len(rows(first.valid_csv))
    stamps = {p.name: p.stat().st_mtime_ns for p in save.iterdir()}
    assert set(stamps) == {
        "train.csv",
        "valid.csv",
        "veri_test2.txt",
        "trials_files.csv",
        "calibration.csv",
        prep.OPTIONS_FILE,
    }
    second = prep.prepare_voxceleb1(
        *args, valid_utterances_per_speaker=1, seed=1, num_workers=2
    )
    assert second.skipped
    assert {p.name: p.stat().st_mtime_ns for p in save.iterdir()} == stamps
    redo = prep.prepare_voxceleb1(
        *args, valid_utterances_per_speaker=2, seed=1, num_workers=1
    )
    assert not redo.skipped
    assert len(rows(redo.valid_csv)) == 2 * n_valid
    assert all(
        sum(r["spk_id"] == s for r in rows(redo.valid_csv)) == 2
        for s in {r["spk_id"] for r in rows(redo.train_csv)}
    )
    os.remove(save / "train.csv")  # a missing output also redoes
    assert not prep.prepare_voxceleb1(
        *args, valid_utterances_per_speaker=2, seed=1
    ).skipped
    assert (save / "train.csv").is_file()
    assert not any(".tmp" in p.name for p in save.iterdir())


def test_changed_trial_content_redoes(corpus, tmp_path):
    trials_path = tmp_path / "veri.txt"
    lines = Path(corpus.verification_file).read_text().splitlines(keepends=True)
    trials_path.write_text("".join(lines))
    args = (corpus.root, str(tmp_path / "save"), str(trials_path))
    assert not prep.prepare_voxceleb1(*args, num_workers=1).skipped
    trials_path.write_text("".join(lines[:2]))
    assert not prep.prepare_voxceleb1(*args, num_workers=1).skipped
    assert len(rows(tmp_path / "save" / "trials_files.csv")) == len(
        trial_files(read_trials(trials_path))
    )


def test_missing_data_folder(tmp_path, corpus):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prep.prepare_voxceleb1(
            str(tmp_path / "nowhere"),
            str(tmp_path / "s"),
            corpus.verification_file,
        )


def test_no_wav_files(tmp_path, corpus):
    (tmp_path / "data" / "wav" / "id10001" / "video").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no WAV files.*data"):
        prep.prepare_voxceleb1(
            str(tmp_path / "data"),
            str(tmp_path / "s"),
            corpus.verification_file,
        )


def test_missing_verification_file(tmp_path, corpus):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        prep.prepare_voxceleb1(
            corpus.root, str(tmp_path / "s"), str(tmp_path / "absent.txt")
        )


def test_trial_files_missing_from_disk(tmp_path, corpus):
    data = tmp_path / "data"
    shutil.copytree(corpus.root, data)
    needed = trial_files(read_trials(corpus.verification_file))
    for f in needed[:7]:
        os.remove(data / "wav" / f)
    with pytest.raises(FileNotFoundError) as info:
        prep.prepare_voxceleb1(
            str(data), str(tmp_path / "s"), corpus.verification_file
        )
    message = str(info.value)
    assert (
        "veri_test2.txt" in message
        and "missing" in message
        and "7, e.g." in message
    )
    assert sum(f in message for f in needed[:7]) == 5


def test_unreadable_header_names_the_file(tmp_path, corpus):
    data = tmp_path / "data"
    shutil.copytree(corpus.root, data)
    bad = data / "wav" / "id10001" / "brokenvideo" / "00001.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(
        ValueError, match=r"brokenvideo/00001.wav: cannot read audio header"
    ):
        prep.prepare_voxceleb1(
            str(data),
            str(tmp_path / "s"),
            corpus.verification_file,
            num_workers=1,
        )


def test_too_few_utterances(tmp_path, corpus):
    with pytest.raises(
        ValueError, match=r"valid_utterances_per_speaker=6.*id10001 \(6\)"
    ):
        prep.prepare_voxceleb1(
            corpus.root,
            str(tmp_path / "s"),
            corpus.verification_file,
            valid_utterances_per_speaker=6,
        )


@pytest.mark.parametrize(
    "subtype, channels, fmt",
    [
        ("PCM_16", 1, "WAV"),
        ("PCM_24", 2, "WAV"),
        ("PCM_32", 1, "WAV"),
        ("PCM_U8", 1, "WAV"),
        ("FLOAT", 1, "WAV"),
        ("DOUBLE", 2, "WAV"),
        ("ULAW", 1, "WAV"),
        ("ALAW", 1, "WAV"),
        ("PCM_16", 3, "WAVEX"),
        ("IMA_ADPCM", 1, "WAV"),
        ("MS_ADPCM", 1, "WAV"),
    ],
)
def test_header_duration_equals_soundfile(tmp_path, subtype, channels, fmt):
    path = str(tmp_path / "x.wav")
    frames = 12345
    sf.write(
        path, np.zeros((frames, channels)), 8000, subtype=subtype, format=fmt
    )
    assert header_duration(path) == sf.info(path).duration


def header_duration(path):
    """Seconds from the one WAV header reader."""
    frames, rate = audio_info(path)
    return frames / rate


def pcm_wav(frames, extra_chunk=b"", declared=None, odd_chunk=False):
    data = b"\x01\x00" * frames
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    chunks = b"fmt " + struct.pack("<I", 16) + fmt
    if extra_chunk:
        body = extra_chunk + (b"" if not odd_chunk else b"x")
        chunks += (
            b"LIST"
            + struct.pack("<I", len(body))
            + body
            + b"\x00" * (len(body) & 1)
        )
    size = len(data) if declared is None else declared
    chunks += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@pytest.mark.parametrize(
    "blob",
    [
        pcm_wav(
            1000,
            extra_chunk=b"INFOISFT" + b"\x05\x00\x00\x00abcde" + b"\x00" * 700,
        ),
        pcm_wav(
            999, extra_chunk=b"ab", odd_chunk=True
        ),  # odd-sized chunk, padded
        pcm_wav(1000, declared=5000 * 2),  # data size beyond the file
        pcm_wav(1001, declared=0xFFFFFFFF),  # streamed writer
    ],
    ids=["big-list-chunk", "odd-chunk", "truncated", "streamed"],
)
def test_header_duration_unusual_layouts(tmp_path, blob):
    path = str(tmp_path / "x.wav")
    Path(path).write_bytes(blob)
    assert header_duration(path) == sf.info(path).duration


def test_parallel_durations_keep_order(tmp_path):
    sources = []
    for i, frames in enumerate([100, 200, 300, 400, 500]):
        sources.append(str(tmp_path / f"s{i}.wav"))
        sf.write(sources[-1], np.zeros(frames), 16000, subtype="PCM_16")
    paths = []
    for i in range(3000):  # above the parallel threshold
        paths.append(str(tmp_path / f"l{i}.wav"))
        os.link(sources[(i * 7) % 5], paths[-1])
    expected = [(sf.info(s).frames, 16000) for s in sources]
    assert read_headers(paths, num_workers=2) == [
        expected[(i * 7) % 5] for i in range(3000)
    ]


def test_parallel_error_names_the_file(tmp_path):
    paths = []
    good = tmp_path / "good.wav"
    sf.write(str(good), np.zeros(10), 16000, subtype="PCM_16")
    for i in range(3000):
        paths.append(str(tmp_path / f"l{i}.wav"))
        os.link(good, paths[-1])
    (tmp_path / "bad.wav").write_bytes(b"not a wav at all")
    paths.insert(2500, str(tmp_path / "bad.wav"))
    with pytest.raises(ValueError, match="(?s)1 of 3001 .*bad.wav"):
        check_training_audio(paths, num_workers=2)


def test_command_line(corpus, tmp_path):
    save = tmp_path / "cli"
    cmd = [
        sys.executable,
        str(RECIPE / "voxceleb1_prepare.py"),
        "--data_folder",
        corpus.root,
        "--save_folder",
        str(save),
        "--verification_file",
        corpus.verification_file,
        "--valid_utterances_per_speaker",
        "1",
        "--num_workers",
        "1",
    ]
    done = run_process(cmd)
    assert "prepared" in done.stdout
    direct = prep.prepare_voxceleb1(
        corpus.root,
        str(tmp_path / "direct"),
        corpus.verification_file,
        valid_utterances_per_speaker=1,
    )
    for name in ("train.csv", "valid.csv", "trials_files.csv"):
        assert (save / name).read_bytes() == Path(
            getattr(
                direct,
                {
                    "train.csv": "train_csv",
                    "valid.csv": "valid_csv",
                    "trials_files.csv": "trials_csv",
                }[name],
            )
        ).read_bytes()
    bad = run_process(
        cmd[:2]
        + [
            "--data_folder",
            str(tmp_path / "none"),
            "--save_folder",
            str(save),
            "--verification_file",
            corpus.verification_file,
        ],
        check=False,
    )
    assert bad.returncode != 0 and "none" in bad.stderr


def test_wav_folder_itself_is_accepted(prepared, corpus, tmp_path):
    direct = prepare_k(corpus, tmp_path / "s", data_folder=corpus.wav_folder)
    assert same_bytes(direct.train_csv, prepared.train_csv)


def test_every_bad_training_file_in_one_error(corpus, tmp_path):
    """Unreadable files, files with no samples and other sample rates are
    all listed in one error; allow_resampling accepts the rates."""
    data = tmp_path / "vox"
    shutil.copytree(corpus.root, data)
    video = data / "wav" / "id10001" / "badvideo"
    video.mkdir()
    (video / "00001.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    (video / "00002.wav").write_bytes(b"")
    sf.write(str(video / "00003.wav"), np.zeros(0), 16000, subtype="PCM_16")
    sf.write(str(video / "00004.wav"), np.zeros(8000), 8000, subtype="PCM_16")
    sf.write(str(video / "00005.wav"), np.zeros(44100), 44100, subtype="PCM_16")
    args = (str(data), str(tmp_path / "save"), corpus.verification_file)
    with pytest.raises(ValueError) as error:
        prep.prepare_voxceleb1(
            *args, valid_utterances_per_speaker=1, num_workers=1
        )
    message = str(error.value)
    assert message.startswith("5 of ")
    for name in ("00001", "00002", "00003", "00004", "00005"):
        assert f"badvideo/{name}.wav" in message, name
    assert "00003.wav: no samples" in message
    assert "00004.wav: 8000 Hz" in message and "00005.wav: 44100 Hz" in message
    for name in ("00001", "00002", "00003"):
        (video / f"{name}.wav").unlink()
    done = prep.prepare_voxceleb1(
        *args,
        valid_utterances_per_speaker=1,
        num_workers=1,
        allow_resampling=True,
    )
    assert (
        "badvideo/00004.wav"
        in Path(done.train_csv).read_text() + Path(done.valid_csv).read_text()
    )


def test_rerun_prepares_again_when_files_change(corpus, tmp_path):
    data = tmp_path / "vox"
    shutil.copytree(corpus.root, data)
    args = (str(data), str(tmp_path / "save"), corpus.verification_file)
    first = prep.prepare_voxceleb1(
        *args, valid_utterances_per_speaker=1, num_workers=1
    )
    speakers = {r["spk_id"] for r in rows(first.train_csv)}
    # a new speaker is added: prepared again, and trained on
    new = data / "wav" / "id19999" / "video1"
    new.mkdir(parents=True)
    for i in range(3):
        sf.write(str(new / f"0000{i}.wav"), np.ones(16000) * 0.1, 16000)
    again = prep.prepare_voxceleb1(
        *args, valid_utterances_per_speaker=1, num_workers=1
    )
    assert not again.skipped
    assert {r["spk_id"] for r in rows(again.train_csv)} == speakers | {
        "id19999"
    }
    # a file removed: prepared again, and gone from the CSVs
    (new / "00000.wav").unlink()
    third = prep.prepare_voxceleb1(
        *args, valid_utterances_per_speaker=1, num_workers=1
    )
    assert not third.skipped
    listed = (
        Path(third.train_csv).read_text() + Path(third.valid_csv).read_text()
    )
    assert "id19999/video1/00000.wav" not in listed
    assert prep.prepare_voxceleb1(
        *args, valid_utterances_per_speaker=1, num_workers=1
    ).skipped


@pytest.fixture(scope="module")
def calibration_corpus(tmp_path_factory):
    """20 candidate training speakers: enough for a calibration hold-out."""
    return small_corpus(
        tmp_path_factory.mktemp("prep_cal") / "vox1", 22, 2, (0.5, 0.6), seed=4
    )


def test_calibration_speakers_are_held_out_whole(calibration_corpus, tmp_path):
    args = (
        calibration_corpus.root,
        str(tmp_path / "save"),
        calibration_corpus.verification_file,
    )
    result = prep.prepare_voxceleb1(
        *args,
        valid_utterances_per_speaker=1,
        calibration_speakers=0.25,
        num_workers=1,
    )
    train, valid = rows(result.train_csv), rows(result.valid_csv)
    calibration = rows(result.calibration_csv)
    assert list(calibration[0]) == ["ID", "duration", "wav", "spk_id"]
    held_out = {r["spk_id"] for r in calibration}
    assert len(held_out) == 5  # round(0.25 * 20)
    assert not held_out & {r["spk_id"] for r in train + valid}
    # every utterance of a calibration speaker, and of no one else
    trial_speakers = {
        f.split("/")[0]
        for f in trial_files(read_trials(calibration_corpus.verification_file))
    }
    on_disk = {
        str(p)
        for p in Path(calibration_corpus.root, "wav").rglob("*.wav")
        if p.parts[-3] not in trial_speakers
    }
    assert {r["wav"] for r in train + valid + calibration} == on_disk
    assert {r["wav"] for r in calibration} == {
        w for w in on_disk if Path(w).parts[-3] in held_out
    }
    # deterministic: the same seed holds out the same speakers, another
    # seed (eventually) others
    again = prep.prepare_voxceleb1(
        *args[:1],
        str(tmp_path / "again"),
        args[2],
        valid_utterances_per_speaker=1,
        calibration_speakers=0.25,
        num_workers=1,
    )
    assert (
        Path(again.calibration_csv).read_bytes()
        == Path(result.calibration_csv).read_bytes()
    )
    draws = {
        frozenset(
            r["spk_id"]
            for r in rows(
                prep.prepare_voxceleb1(
                    *args[:1],
                    str(tmp_path / f"seed{seed}"),
                    args[2],
                    valid_utterances_per_speaker=1,
                    calibration_speakers=0.25,
                    seed=seed,
                    num_workers=1,
                ).calibration_csv
            )
        )
        for seed in range(4)
    }
    assert len(draws) > 1


def test_calibration_option_change_re_prepares(calibration_corpus, tmp_path):
    args = (
        calibration_corpus.root,
        str(tmp_path / "save"),
        calibration_corpus.verification_file,
    )
    options = {"valid_utterances_per_speaker": 1, "num_workers": 1}
    first = prep.prepare_voxceleb1(*args, calibration_speakers=0.2, **options)
    assert len({r["spk_id"] for r in rows(first.calibration_csv)}) == 5
    assert prep.prepare_voxceleb1(
        *args, calibration_speakers=0.2, **options
    ).skipped
    off = prep.prepare_voxceleb1(*args, calibration_speakers=0, **options)
    assert not off.skipped
    assert rows(off.calibration_csv) == []
    assert len({r["spk_id"] for r in rows(off.train_csv)}) == 20
    more = prep.prepare_voxceleb1(*args, calibration_speakers=0.4, **options)
    assert not more.skipped
    assert len({r["spk_id"] for r in rows(more.calibration_csv)}) == 8
    os.remove(more.calibration_csv)  # a missing calibration.csv also redoes
    assert not prep.prepare_voxceleb1(
        *args, calibration_speakers=0.4, **options
    ).skipped
    with pytest.raises(ValueError, match="calibration_speakers"):
        prep.prepare_voxceleb1(*args, calibration_speakers=0.9, **options)


def test_calibration_speaker_count_rule():
    count = calibration_speaker_count
    assert count(19, 0.3) == 0  # too few speakers to spare any
    assert count(20, 0.02) == 5  # at least 5
    assert count(1211, 0.02) == 24 and count(1211, 0) == 0
    with pytest.raises(ValueError, match="calibration_speakers"):
        count(100, -0.1)


def test_calibration_annotation_is_checked_up_front(tmp_path, caplog):
    """Before any training: a calibration speaker who is also a training
    speaker is an error naming both CSVs; no calibration CSV (null, missing
    with skip_prep, or without rows) is a warning, never silence."""
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000), 16000)
    csv_path = tmp_path / "calibration.csv"
    csv_path.write_text(
        "ID,duration,wav,spk_id\n"
        f"u1,1.0,{wav},spkA\nu2,1.0,{wav},spkB\nu3,1.0,{wav},spkC\n"
    )
    checked = []
    options = {
        "data_folder": str(tmp_path),
        "train_annotation": "train.csv",
        "missing_ok": True,  # as with skip_prep
        "check_audio": checked.append,
    }
    with pytest.raises(ValueError, match="spkB") as error:
        calibration_utterances(str(csv_path), ["spkB", "spkD"], **options)
    assert str(csv_path) in str(error.value) and "train.csv" in str(error.value)
    utterances = calibration_utterances(str(csv_path), ["spkD"], **options)
    assert utterances == {
        f"u{i}": (str(wav), 1.0, f"spk{name}")
        for i, name in zip((1, 2, 3), "ABC")
    }
    assert checked == [[str(wav)] * 3]  # the audio checks of preparation
    for annotation, text in (
        (None, None),
        (str(tmp_path / "absent.csv"), None),
        (str(tmp_path / "empty.csv"), "ID,duration,wav,spk_id\n"),
    ):
        if text is not None:
            Path(annotation).write_text(text)
        caplog.clear()
        with caplog.at_level("WARNING"):
            found = calibration_utterances(annotation, ["spkD"], **options)
        assert found is None
        assert "no calibration" in caplog.text
    # without skip_prep, preparation wrote the CSV: a missing one is an error
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        calibration_utterances(
            str(tmp_path / "absent.csv"), ["spkD"], str(tmp_path)
        )
    # bad calibration audio stops the run with the checks' error
    with pytest.raises(ValueError, match="1 of 1 training audio files"):
        calibration_utterances(
            str(csv_path),
            ["spkD"],
            str(tmp_path),
            check_audio=lambda paths: check_training_audio(
                paths[:1], sample_rate=8000, num_workers=1
            ),
        )
