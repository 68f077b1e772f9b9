"""Trial lists and score files (speechbrain_mrmha/dataio/trials.py): the official
VoxCeleb formats, every error case, byte-order marks, atomic writes; trial
entries resolved to audio files (with or without a wav/ level and .wav, or
IDs of annotation CSVs), every bad entry in one error; the cohort of score
normalisation."""

import os
import random

import numpy as np
import pytest
import soundfile
import torch

from speechbrain_mrmha.dataio.trials import (
    Trial,
    TrialList,
    check_trials,
    cohort_utterances,
    load_trials,
    outside_entries,
    read_scores,
    read_trials,
    resolve_entries,
    resolve_trials,
    trial_files,
    trial_labels,
    write_scores,
    write_trials,
)

OFFICIAL_LINES = [  # as in veri_test2.txt and list_test_hard2.txt
    "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav",
    "0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav",
    "1 id10001/1zcIwhmdeo4/00001.wav id10001/Y8hIVOBuels/00002.wav",
    "0 id10001/1zcIwhmdeo4/00001.wav id10943/vNCVj7yLWPU/00005.wav",
]


def write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


def test_parses_official_format(tmp_path):
    f = write(tmp_path / "veri_test2.txt", "\n".join(OFFICIAL_LINES) + "\n")
    trials = read_trials(f)
    assert [t.label for t in trials] == [
        int(line[0]) for line in OFFICIAL_LINES
    ]
    assert [f"{t.label} {t.enrol} {t.test}" for t in trials] == OFFICIAL_LINES
    assert all(isinstance(t.label, int) for t in trials)


def test_tolerates_whitespace_crlf_and_blank_lines(tmp_path):
    text = "1\tid1/a/00001.wav   id1/b/00002.wav\r\n\r\n0 id1/a/00001.wav id2/c/00001.wav  \r\n\n"
    trials = read_trials(write(tmp_path / "t.txt", text))
    assert trials == [
        Trial(1, "id1/a/00001.wav", "id1/b/00002.wav"),
        Trial(0, "id1/a/00001.wav", "id2/c/00001.wav"),
    ]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        read_trials(tmp_path / "nowhere.txt")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file_is_an_error(tmp_path, text):
    f = write(tmp_path / "empty.txt", text)
    with pytest.raises(ValueError, match="empty.txt.*no trial"):
        read_trials(f)


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("1 id1/a/00001.wav", "3 fields"),
        ("1 id1/a/00001.wav id2/b/00001.wav extra", "3 fields"),
        ("2 id1/a/00001.wav id2/b/00001.wav", "label must be 0 or 1"),
        ("target id1/a/00001.wav id2/b/00001.wav", "label must be 0 or 1"),
        ("-1 id1/a/00001.wav id2/b/00001.wav", "label must be 0 or 1"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, problem):
    lines = OFFICIAL_LINES[:2] + [""] + [bad] + OFFICIAL_LINES[2:]
    f = write(tmp_path / "broken.txt", "\n".join(lines) + "\n")
    with pytest.raises(ValueError) as info:
        read_trials(f)
    message = str(info.value)
    assert f"broken.txt:{lines.index(bad) + 1}:" in message
    assert problem in message


def test_write_read_round_trip(tmp_path):
    rng = random.Random(0)
    trials = [
        Trial(
            rng.randint(0, 1),
            f"id{rng.randint(1, 9)}/v/{i:05d}.wav",
            f"id{rng.randint(1, 9)}/w/{i:05d}.wav",
        )
        for i in range(50)
    ]
    path = tmp_path / "out.txt"
    assert write_trials(path, trials) == 50
    assert read_trials(path) == trials
    assert [p.name for p in tmp_path.iterdir()] == [
        "out.txt"
    ]  # no temp file left


def test_trial_files_unique_in_first_use_order():
    trials = [
        Trial(1, "b", "a"),
        Trial(0, "a", "c"),
        Trial(1, "c", "b"),
        Trial(0, "d", "d"),
    ]
    files = trial_files(trials)
    assert sorted(files) == sorted(
        {x for t in trials for x in (t.enrol, t.test)}
    )
    flat = [x for t in trials for x in (t.enrol, t.test)]
    assert files == sorted(files, key=flat.index)


# --- score files ------------------------------------------------------------


def test_read_scores_splits_targets_and_nontargets(tmp_path):
    path = tmp_path / "scores.txt"
    path.write_text("a b 0.25 1\n\nc d -0.5 0\n e f 1e-3 1 \nc a 0.75 0\n")
    scores = read_scores(path)
    assert scores.positive.tolist() == [0.25, 0.001]
    assert scores.negative.tolist() == [-0.5, 0.75]


@pytest.mark.parametrize(
    "content, message",
    [
        ("a b 0.5 1\nc d 0.5\n", "line 2: expected 4 fields"),
        ("a b 0.5 1\nc d high 0\n", "line 2: score 'high' is not a number"),
        ("a b nan 1\nc d 0.1 0\n", "line 1: score 'nan' is not finite"),
        ("a b 0.5 1\nc d 0.1 2\n", "line 2: label '2' must be 1"),
        ("a b 0.5 1\nc d 0.1 1\n", "got 2 and 0"),
        ("", "needs both target"),
    ],
)
def test_read_scores_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad_scores.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match="bad_scores.txt") as error:
        read_scores(path)
    assert message in str(error.value)


def test_read_scores_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.txt does not exist"):
        read_scores(tmp_path / "nothing.txt")


BOM = "\ufeff"


def test_trial_list_with_a_byte_order_mark(tmp_path):
    """A BOM (as some Windows editors write) is not part of the first label."""
    f = write(tmp_path / "bom.txt", BOM + "\n".join(OFFICIAL_LINES) + "\n")
    assert f.read_bytes()[:3] == b"\xef\xbb\xbf"
    trials = read_trials(f)
    assert [f"{t.label} {t.enrol} {t.test}" for t in trials] == OFFICIAL_LINES


@pytest.mark.parametrize(
    "text", ["a b 0.5 1\nc d 0.25 0\n", "\n  a b 0.5 1\nc d 0.25 0\n"]
)
def test_score_file_with_a_byte_order_mark(tmp_path, text):
    """The BOM is dropped, not read as a field (the second file would then
    have a line of one field, or of five)."""
    f = write(tmp_path / "scores.txt", BOM + text)
    scores = read_scores(f)
    assert scores.positive.tolist() == [0.5] and scores.negative.tolist() == [
        0.25
    ]


def test_write_scores_round_trip(tmp_path):
    trials = [
        Trial(1, "s1/a/1.wav", "s1/b/2.wav"),
        Trial(0, "s1/a/1.wav", "s2/c/1.wav"),
        Trial(0, "s2/c/1.wav", "s1/b/2.wav"),
    ]
    scores = torch.tensor([0.8125, -0.25, 0.1234567])
    path = tmp_path / "scores.txt"
    assert write_scores(path, trials, scores) == 3
    assert path.read_text().splitlines() == [
        "s1/a/1.wav s1/b/2.wav 0.812500 1",
        "s1/a/1.wav s2/c/1.wav -0.250000 0",
        "s2/c/1.wav s1/b/2.wav 0.123457 0",
    ]
    read = read_scores(path)
    assert read.positive.tolist() == [0.8125]
    assert read.negative.tolist() == [-0.25, 0.123457]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.txt"]


@pytest.mark.parametrize(
    "scores, problem",
    [
        ([0.5], "1 scores for 2 trials"),
        ([0.5, float("nan")], "score nan of trial a.wav c.wav is not finite"),
    ],
)
def test_write_scores_refuses_bad_scores_and_keeps_the_old_file(
    tmp_path, scores, problem
):
    path = tmp_path / "scores.txt"
    path.write_text("old\n")
    with pytest.raises(ValueError, match="scores.txt") as error:
        write_scores(
            path,
            [Trial(1, "a.wav", "b.wav"), Trial(0, "a.wav", "c.wav")],
            scores,
        )
    assert problem in str(error.value)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.txt"]


# --- trial entries -> audio files ------------------------------------------


def test_trial_entries_resolve_with_or_without_wav_level_and_suffix(tmp_path):
    """VoxCeleb entries (id/video/00001.wav under wav/) and SpeechBrain's
    sample entries (spk1_snt1, spk1_snt1.wav under data_folder) resolve to
    the same files; enrol / test CSVs map IDs; problems are listed together."""
    data = tmp_path / "data"
    vox = data / "wav" / "id1" / "v" / "00001.wav"
    sample = data / "spk1_snt1.wav"
    for path, seconds in ((vox, 1.0), (sample, 1.5)):
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, torch.zeros(int(seconds * 16000)).numpy(), 16000)
    found = resolve_entries(
        ["id1/v/00001.wav", "id1/v/00001", "spk1_snt1", "spk1_snt1.wav"], data
    )
    assert found["id1/v/00001.wav"] == found["id1/v/00001"] == (str(vox), 1.0)
    assert found["spk1_snt1"] == found["spk1_snt1.wav"] == (str(sample), 1.5)

    with pytest.raises(FileNotFoundError) as error:
        resolve_entries(["id1/v/00002.wav", "nothere", "spk1_snt1"], data)
    assert "2 trial entries cannot be read" in str(error.value)
    assert "id1/v/00002.wav: missing" in str(
        error.value
    ) and "nothere: missing" in str(error.value)

    (data / "id1" / "v").mkdir(parents=True)
    soundfile.write(
        data / "id1" / "v" / "00001.wav", torch.zeros(800).numpy(), 16000
    )
    with pytest.raises(FileNotFoundError, match="ambiguous"):
        resolve_entries(["id1/v/00001.wav"], data)

    enrol = tmp_path / "enrol.csv"
    enrol.write_text(
        "ID, duration,wav,spk_id\nspk1_snt1,1.5,$data_root/spk1_snt1.wav,spk1\n"
    )
    found = resolve_entries(["spk1_snt1", "spk1_snt1.wav"], data, enrol)
    assert found["spk1_snt1"] == found["spk1_snt1.wav"] == (str(sample), 1.5)
    with pytest.raises(
        FileNotFoundError, match=r"spk2: no ID 'spk2' in .*enrol.csv"
    ):
        resolve_entries(["spk2"], data, enrol)


def test_too_short_trial_files_are_listed_up_front(tmp_path):
    """A 0.05 s file used to pass the up-front check and fail after the
    other files were embedded."""
    data = tmp_path / "data"
    (data / "wav").mkdir(parents=True)
    for name, seconds in (("good", 1.0), ("short", 0.05), ("edge", 0.49)):
        soundfile.write(
            data / "wav" / f"{name}.wav",
            np.zeros(int(16000 * seconds), "float32"),
            16000,
        )
    with pytest.raises(FileNotFoundError) as error:
        resolve_entries(["good", "short", "missing", "edge"], data)
    message = str(error.value)
    assert "3 trial entries cannot be read" in message
    assert "short.wav: audio too short (0.05 s, need at least 0.5 s)" in message
    assert "edge.wav: audio too short (0.49 s" in message
    assert "missing: missing" in message and "good" not in message

    csv = tmp_path / "test.csv"
    csv.write_text(
        "ID,duration,wav\n"
        f"a,1.0,{data / 'wav' / 'good.wav'}\n"
        f"b,0.2,{data / 'wav' / 'short.wav'}\n"
    )
    assert resolve_entries(["a"], data, csv)["a"][1] == 1.0
    with pytest.raises(
        FileNotFoundError, match=r"b: .*short.wav: audio too short \(0.20 s in "
    ):
        resolve_entries(["a", "b"], data, csv)


def test_resolve_trials_lists_the_bad_entries_of_both_sides_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    soundfile.write(data / "a.wav", np.zeros(16000, "float32"), 16000)
    test = tmp_path / "test.csv"
    test.write_text(f"ID,duration,wav\nt1,2.0,{data / 'a.wav'}\n")
    trials = [
        Trial(1, "a", "t1"),
        Trial(0, "gone", "t2"),
        Trial(0, "gone", "t1"),
    ]
    with pytest.raises(FileNotFoundError) as error:
        resolve_trials(trials, data, test_annotation=test)
    lines = str(error.value).splitlines()
    assert lines[0] == "2 trial entries cannot be read:"
    assert lines[1].startswith("  gone: missing")
    assert lines[2] == f"  t2: no ID 't2' in {test}"
    resolved = resolve_trials(trials[:1], data, test_annotation=test)
    # one file: its duration is the one the first side (enrolment) found
    assert resolved.names == [str(data / "a.wav")]
    assert resolved.enrol.tolist() == resolved.test.tolist() == [0]
    assert resolved.durations.tolist() == [1.0]
    assert trial_labels(trials).tolist() == [True, False, False]


def test_cohort_takes_the_first_utterances_of_each_speaker(tmp_path):
    rows = ["ID,duration,wav,spk_id"]
    for index, speaker in enumerate("aabab"):
        wav = tmp_path / f"u{index}.wav"
        wav.write_bytes(b"")
        rows.append(f"u{index},{index + 1}.0,$data_root/u{index}.wav,{speaker}")
    csv = tmp_path / "train.csv"
    csv.write_text("\n".join(rows) + "\n")
    cohort = cohort_utterances(csv, tmp_path, per_speaker=2)
    assert list(cohort) == ["a", "b"]
    assert cohort["a"] == {
        str(tmp_path / "u0.wav"): 1.0,
        str(tmp_path / "u1.wav"): 2.0,
    }
    assert list(cohort["b"].values()) == [3.0, 5.0]
    with pytest.raises(ValueError, match="must be >= 1"):
        cohort_utterances(csv, tmp_path, per_speaker=0)


# --- lists of any size: compact, checked before any embedding ---------------


def old_write_scores(trials, scores):
    """scores.txt as write_scores wrote it before it was streamed."""
    return "".join(
        f"{t.enrol} {t.test} {float(s):.6f} {int(t.label)}\n"
        for t, s in zip(trials, scores)
    )


def test_a_trial_list_is_held_as_index_arrays(tmp_path):
    """No per-trial Python object: int32 rows into one table of entries
    and int8 labels, the same trials as read_trials."""
    rng = random.Random(1)
    names = [f"id{i % 7}/v/{i:05d}.wav" for i in range(40)]
    lines = [
        f"{rng.randint(0, 1)} {rng.choice(names)} {rng.choice(names)}"
        for _ in range(300)
    ]
    path = write(tmp_path / "list.txt", "\n".join(lines) + "\n\n")
    trials = load_trials(path)
    assert (trials.enrol.dtype, trials.test.dtype) == (np.int32, np.int32)
    assert trials.labels.dtype == np.int8
    assert len(trials) == 300 and trials.source == str(path)
    assert len(trials.names) == len(set(trials.names)) <= 40
    assert trials.trials() == read_trials(path)
    assert [f"{t.label} {t.enrol} {t.test}" for t in trials.trials()] == lines


def test_streamed_scores_equal_the_old_file_byte_for_byte(tmp_path):
    """Chunked writing, from a TrialList or from Trial tuples, gives the
    very bytes of the old all-in-memory writer (float32 and float64)."""
    rng = random.Random(2)
    trials = [
        Trial(rng.randint(0, 1), f"e{rng.randint(0, 9)}", f"t{i}.wav")
        for i in range(101)
    ]
    for dtype in (torch.float32, torch.float64):
        scores = (torch.rand(101, dtype=dtype) - 0.5) * 3
        expected = old_write_scores(trials, scores)
        for given, chunk in ((trials, 7), (TrialList.from_trials(trials), 1)):
            path = tmp_path / f"scores_{chunk}.txt"
            assert write_scores(path, given, scores, chunk_size=chunk) == 101
            assert path.read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scores_1.txt",
        "scores_7.txt",
    ]


@pytest.mark.parametrize("label, kind", [("1", "target"), ("0", "non-target")])
def test_a_list_of_one_class_is_refused_naming_the_file(tmp_path, label, kind):
    """It used to fail only after every file was embedded, with a
    traceback from the metrics."""
    path = write(
        tmp_path / "one_class.txt",
        "".join(f"{label} e{i}.wav t{i}.wav\n" for i in range(5)),
    )
    with pytest.raises(ValueError) as error:
        check_trials(load_trials(path))
    message = str(error.value)
    assert f"trial list {path}" in message
    assert f"all 5 trials are {kind} trials (label {label})" in message


def test_pairs_labelled_both_ways_are_listed_in_one_error(tmp_path):
    """A pair is the same trial in either order; every conflicting pair is
    named with its trial numbers."""
    lines = [
        "1 a.wav b.wav",
        "0 a.wav c.wav",
        "0 b.wav a.wav",  # swapped: conflicts with trial 1
        "1 c.wav d.wav",
        "0 c.wav d.wav",  # conflicts with trial 4
        "1 e.wav f.wav",
        "1 f.wav e.wav",  # a duplicate, not a conflict
    ]
    path = write(tmp_path / "conflicts.txt", "\n".join(lines) + "\n")
    with pytest.raises(ValueError) as error:
        check_trials(load_trials(path))
    message = str(error.value).splitlines()
    assert message[0] == f"2 problems in trial list {path}:"
    assert sorted(message[1:]) == [
        "  a.wav b.wav (trials 1, 3) is labelled both 1 and 0",
        "  c.wav d.wav (trials 4, 5) is labelled both 1 and 0",
    ]


def test_duplicate_trials_are_counted_and_logged(tmp_path, caplog):
    lines = [
        "1 a.wav b.wav",
        "0 a.wav c.wav",
        "1 b.wav a.wav",  # swapped duplicate of 1
        "1 a.wav b.wav",  # plain duplicate of 1
        "0 c.wav a.wav",  # swapped duplicate of 2
        "0 d.wav d.wav",
    ]
    path = write(tmp_path / "dups.txt", "\n".join(lines) + "\n")
    with caplog.at_level("WARNING"):
        check = check_trials(load_trials(path))
    assert check.duplicates == 3
    assert sorted(check.examples) == [
        "a.wav b.wav (trials 1, 3, 4)",
        "a.wav c.wav (trials 2, 5)",
    ]
    (record,) = caplog.records
    assert f"{path}: 3 duplicate trials" in record.getMessage()
    assert "a.wav b.wav (trials 1, 3, 4)" in record.getMessage()
    unique = write(tmp_path / "unique.txt", "\n".join(lines[:2]) + "\n")
    caplog.clear()
    assert check_trials(load_trials(unique)) == (0, [])
    assert not caplog.records


def test_pairs_are_compared_by_file_after_resolution(tmp_path):
    """'a' and 'a.wav' are one file: with the resolved rows the check sees
    the conflict the entry strings hide."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b"):
        soundfile.write(data / f"{name}.wav", np.zeros(16000, "f4"), 16000)
    trials = TrialList.from_trials(
        [Trial(1, "a", "b"), Trial(0, "b.wav", "a.wav")], source="list.txt"
    )
    check_trials(trials)  # as entries: two different pairs
    resolved = resolve_trials(trials, data)
    assert resolved.labels is trials.labels
    with pytest.raises(ValueError, match=r"a b \(trials 1, 2\) is labelled"):
        check_trials(trials, resolved.enrol, resolved.test)


def test_entries_outside_the_data_folder_are_refused_unless_allowed(tmp_path):
    """'../x.wav' and absolute paths used to be read wherever they
    pointed (/etc/passwd was tried); now they are listed, all at once,
    before any file is looked at, unless explicitly allowed."""
    data = tmp_path / "data"
    data.mkdir()
    soundfile.write(data / "in.wav", np.zeros(16000, "f4"), 16000)
    soundfile.write(tmp_path / "out.wav", np.zeros(16000, "f4"), 16000)
    trials = TrialList.from_trials(
        [
            Trial(1, "in.wav", "../out.wav"),
            Trial(0, "/etc/passwd", "in.wav"),
            Trial(0, "in.wav", "sub/../../out.wav"),
            Trial(1, str(tmp_path / "out.wav"), "in"),
        ],
        source="list.txt",
    )
    with pytest.raises(ValueError) as error:
        resolve_trials(trials, data)
    lines = str(error.value).splitlines()
    assert lines[0] == (
        f"4 entries of list.txt outside the data folder {data} "
        "(allow_outside_data_folder: True reads them):"
    )
    assert sorted(lines[1:]) == sorted(
        f"  {e}"
        for e in (
            "../out.wav",
            "/etc/passwd",
            "sub/../../out.wav",
            str(tmp_path / "out.wav"),
        )
    )
    allowed = TrialList.from_trials(
        [trials.trial(0), trials.trial(3)], source="list.txt"
    )
    resolved = resolve_trials(allowed, data, allow_outside_data_folder=True)
    assert {os.path.realpath(p) for p in resolved.names} == {
        str((data / "in.wav").resolve()),
        str((tmp_path / "out.wav").resolve()),
    }
    assert outside_entries(["a/b..c.wav", "..a.wav", "id1/x/1.wav"]) == []
    assert outside_entries(["C:\\\\x.wav", "\\\\server\\\\x.wav"]) == [
        "C:\\\\x.wav",
        "\\\\server\\\\x.wav",
    ]


def test_entries_of_an_annotation_are_ids_not_paths(tmp_path):
    """The outside check is about files read from the data folder; an
    annotation CSV maps its IDs to files itself."""
    data = tmp_path / "data"
    data.mkdir()
    soundfile.write(data / "a.wav", np.zeros(16000, "f4"), 16000)
    csv = tmp_path / "test.csv"
    csv.write_text(f"ID,duration,wav\n/abs/id,1.0,{data / 'a.wav'}\n")
    resolved = resolve_trials(
        [Trial(1, "a", "/abs/id"), Trial(0, "a.wav", "/abs/id")],
        data,
        test_annotation=csv,
    )
    assert resolved.names == [str(data / "a.wav")]
