"""The synthetic VoxCeleb1-layout corpus: layout, formats, determinism,
speaker differences, trial list and the rerun / atomicity contract."""

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechbrain_mrmha.app import synthetic
from speechbrain_mrmha.app.synthetic import (
    OPTIONS_FILE,
    generate_corpus,
    make_trials,
)
from speechbrain_mrmha.dataio.trials import read_trials

SMALL = {
    "speakers": 3,
    "videos": 2,
    "utterances": 1,
    "test_speakers": 2,
    "min_duration": 0.5,
    "max_duration": 0.6,
}
CORPUS = {
    "speakers": 8,
    "videos": 2,
    "utterances": 3,
    "test_speakers": 3,
    "min_duration": 1.2,
    "max_duration": 1.8,
    "seed": 11,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_corpus(
        str(tmp_path_factory.mktemp("syn") / "vox1"), **CORPUS
    )


def wav_files(root):
    return sorted(
        str(p.relative_to(Path(root) / "wav"))
        for p in Path(root, "wav").rglob("*.wav")
    )


def tree_bytes(root):
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def mean_log_f0(x, sr=16000):
    """Median log-f0 of the loudest frames, by autocorrelation (60-400 Hz)."""
    n, hop = 640, 160
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = (frames**2).sum(axis=1)
    frames = frames[energy > np.quantile(energy, 0.6)]
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * n, axis=1)) ** 2, axis=1)[
        :, :n
    ]
    ac /= ac[:, :1] + 1e-12
    lo, hi = sr // 400, sr // 60
    lag = lo + ac[:, lo:hi].argmax(axis=1)
    voiced = ac[np.arange(len(ac)), lag] > 0.5
    assert voiced.sum() >= 5, "too few voiced frames to estimate f0"
    return float(np.median(np.log(sr / lag[voiced])))


def test_layout_and_audio_format(corpus):
    files = wav_files(corpus.root)
    n = CORPUS["speakers"] * CORPUS["videos"] * CORPUS["utterances"]
    assert len(files) == n
    pattern = re.compile(r"^id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav$")
    assert all(pattern.match(f) for f in files), files[:3]
    speakers = sorted({f.split("/")[0] for f in files})
    assert speakers == [f"id{10001 + i}" for i in range(CORPUS["speakers"])]
    for spk in speakers:
        videos = sorted({f.split("/")[1] for f in files if f.startswith(spk)})
        assert len(videos) == CORPUS["videos"]
        for video in videos:
            utts = sorted(
                f.split("/")[2]
                for f in files
                if f.startswith(f"{spk}/{video}/")
            )
            assert utts == [
                f"{u:05d}.wav" for u in range(1, CORPUS["utterances"] + 1)
            ]
    for f in files:
        info = sf.info(os.path.join(corpus.wav_folder, f))
        fmt = (info.samplerate, info.channels, info.subtype, info.format)
        assert fmt == (16000, 1, "PCM_16", "WAV")
        assert (
            CORPUS["min_duration"] - 1e-4
            <= info.duration
            <= CORPUS["max_duration"] + 1e-4
        )
        x, _ = sf.read(os.path.join(corpus.wav_folder, f), dtype="int16")
        assert (
            np.abs(x.astype(float)).max() > 1000
        )  # not silent, not clipped away
        assert np.mean(np.abs(x) >= 32767) < 0.001


def test_meta_files(corpus):
    files = wav_files(corpus.root)
    with open(corpus.iden_split_file) as fh:
        split = [line.split() for line in fh]
    assert all(len(s) == 2 and s[0] in "123" for s in split)
    assert (
        sorted(p for _, p in split) == files
    )  # every file once, as the official file
    assert {s for s, _ in split} == {"1", "2", "3"}
    with open(corpus.meta_file, newline="") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows = list(csv.reader(fh, delimiter="\t"))
    assert header == [
        "VoxCeleb1 ID",
        "VGGFace1 ID",
        "Gender",
        "Nationality",
        "Set",
    ]
    assert [r[0] for r in rows] == sorted({f.split("/")[0] for f in files})
    assert all(r[2] in ("m", "f") and r[1] and r[3] for r in rows)
    n_dev = CORPUS["speakers"] - CORPUS["test_speakers"]
    assert [r[4] for r in rows] == ["dev"] * n_dev + ["test"] * CORPUS[
        "test_speakers"
    ]


def test_trial_list(corpus):
    trials = read_trials(corpus.verification_file)
    on_disk = set(wav_files(corpus.root))
    with open(corpus.meta_file, newline="") as fh:
        test_speakers = {
            r["VoxCeleb1 ID"]
            for r in csv.DictReader(fh, delimiter="\t")
            if r["Set"] == "test"
        }
    labels = [t.label for t in trials]
    assert abs(labels.count(1) - labels.count(0)) <= 1 and len(trials) >= 2
    pairs = [frozenset((t.enrol, t.test)) for t in trials]
    assert len(set(pairs)) == len(pairs) and all(len(p) == 2 for p in pairs)
    used = set()
    for t in trials:
        assert t.enrol in on_disk and t.test in on_disk
        (s1, v1, _), (s2, v2, _) = t.enrol.split("/"), t.test.split("/")
        used |= {s1, s2}
        if t.label == 1:
            assert s1 == s2 and v1 != v2  # targets span two videos
        else:
            assert s1 != s2
    assert (
        used == test_speakers
    )  # test speakers, and only they, are in the list


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path):
    a = generate_corpus(str(tmp_path / "a"), seed=5, num_workers=1, **SMALL)
    b = generate_corpus(str(tmp_path / "b"), seed=5, num_workers=2, **SMALL)
    c = generate_corpus(str(tmp_path / "c"), seed=6, num_workers=1, **SMALL)
    assert tree_bytes(a.root) == tree_bytes(b.root)
    wav_a = {k: v for k, v in tree_bytes(a.root).items() if k.endswith(".wav")}
    wav_c = {k: v for k, v in tree_bytes(c.root).items() if k.endswith(".wav")}
    assert not set(wav_a) & set(wav_c)  # other video ids
    assert set(wav_a.values()).isdisjoint(wav_c.values())


def test_speakers_differ_more_than_utterances_of_one_speaker(tmp_path):
    # one-way ANOVA on an f0 estimate measured from the audio, not from the
    # generator's parameters
    corpus = generate_corpus(
        str(tmp_path / "v"),
        speakers=6,
        videos=2,
        utterances=3,
        test_speakers=2,
        min_duration=1.5,
        max_duration=1.5,
        seed=3,
    )
    groups = {}
    for f in wav_files(corpus.root):
        x, _ = sf.read(os.path.join(corpus.wav_folder, f))
        groups.setdefault(f.split("/")[0], []).append(mean_log_f0(x))
    values = [np.array(v) for v in groups.values()]
    grand = np.concatenate(values).mean()
    between = sum(len(v) * (v.mean() - grand) ** 2 for v in values) / (
        len(values) - 1
    )
    n_values = sum(map(len, values))
    within = sum(((v - v.mean()) ** 2).sum() for v in values) / (
        n_values - len(values)
    )
    assert (
        between / within > 20
    )  # F statistic; F(5, 30) > 3.7 is already p < 0.01


def test_rerun_is_a_no_op_and_other_options_are_an_error(tmp_path):
    out = tmp_path / "vox"
    first = generate_corpus(str(out), seed=1, **SMALL)
    assert first.generated
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = generate_corpus(str(out), seed=1, **SMALL)
    assert not again.generated and again == first._replace(generated=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    with pytest.raises(ValueError, match=r"vox.*other options.*seed"):
        generate_corpus(str(out), seed=2, **SMALL)
    assert sorted(os.listdir(tmp_path)) == ["vox"]  # no temporary folder left


def test_foreign_non_empty_folder_is_an_error_and_empty_one_is_used(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"foreign.*{OPTIONS_FILE}"):
        generate_corpus(str(foreign), **SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_corpus(str(empty), **SMALL).generated
    assert (empty / OPTIONS_FILE).is_file()


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_write_meta", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_corpus(str(tmp_path / "vox"), num_workers=1, **SMALL)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"speakers": 3, "test_speakers": 3}, "test_speakers < speakers"),
        ({"speakers": 3, "test_speakers": 1}, "2 <= test_speakers"),
        ({"videos": 1}, "videos >= 2"),
        (
            {"min_duration": 2.0, "max_duration": 1.0},
            "min_duration <= max_duration",
        ),
    ],
)
def test_bad_options(tmp_path, options, problem):
    with pytest.raises(ValueError, match=problem):
        generate_corpus(str(tmp_path / "vox"), **{**SMALL, **options})


def test_make_trials_balanced_and_limited():
    files = [
        f"id{s}/v{v}/{u:05d}.wav"
        for s in (1, 2, 3)
        for v in (1, 2)
        for u in (1, 2)
    ]
    trials = make_trials(files, None, np.random.default_rng(0))
    # cross-video target pairs: 3 speakers x (2 x 2) pairs; non-targets are plenty
    assert sum(t.label for t in trials) == 12 and len(trials) == 24
    odd = make_trials(files, 7, np.random.default_rng(1))
    assert [t.label for t in odd].count(1) == 3 and len(odd) == 7
    with pytest.raises(ValueError, match="cannot draw 26 balanced trials"):
        make_trials(files, 26, np.random.default_rng(0))


def test_command_line(tmp_path, capsys):
    out = str(tmp_path / "cli")
    synthetic.main(
        [
            out,
            "--speakers",
            "3",
            "--utterances",
            "1",
            "--min-duration",
            "0.5",
            "--max-duration",
            "0.6",
            "--seed",
            "4",
            "--num-workers",
            "1",
        ]
    )
    assert "generated" in capsys.readouterr().out
    direct = generate_corpus(str(tmp_path / "direct"), seed=4, **SMALL)
    assert tree_bytes(out) == tree_bytes(direct.root)


def test_channel_strength_controls_cross_video_mismatch(tmp_path):
    """The same speakers through weaker channels: their videos sound more
    alike (long-term log spectra closer), and the option is recorded."""
    import json

    import soundfile as sf

    def video_spectra(strength):
        out = tmp_path / f"s{strength}"
        generate_corpus(
            str(out),
            speakers=3,
            videos=3,
            utterances=2,
            test_speakers=2,
            min_duration=1.0,
            max_duration=1.2,
            seed=5,
            num_workers=1,
            channel_strength=strength,
        )
        spread = []
        for speaker in sorted((out / "wav").iterdir()):
            spectra = []
            for video in sorted(speaker.iterdir()):
                audio = np.concatenate(
                    [sf.read(str(w))[0] for w in sorted(video.iterdir())]
                )
                power = (
                    np.abs(np.fft.rfft(audio[:16000].reshape(-1, 400), axis=1))
                    ** 2
                )
                spectra.append(10 * np.log10(power.mean(axis=0) + 1e-10))
            spectra = np.array(spectra)
            spectra -= spectra.mean(axis=1, keepdims=True)  # shape, not level
            spread.append(np.abs(spectra - spectra.mean(axis=0)).mean())
        return float(np.mean(spread)), out

    strong, strong_dir = video_spectra(1.0)
    weak, weak_dir = video_spectra(0.0)
    assert weak < 0.9 * strong
    assert (
        json.loads((weak_dir / "synthetic_options.json").read_text())[
            "channel_strength"
        ]
        == 0.0
    )
    assert "channel_strength" not in json.loads(
        (strong_dir / "synthetic_options.json").read_text()
    )
    with pytest.raises(ValueError, match="channel_strength"):
        generate_corpus(str(tmp_path / "bad"), channel_strength=1.5)
