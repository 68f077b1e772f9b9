"""Trial-list parsing: the official VoxCeleb formats and every error case."""

import random

import pytest

from speechbrain_mrmha.trials import Trial, read_trials, trial_files, write_trials

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
    assert [t.label for t in trials] == [int(line[0]) for line in OFFICIAL_LINES]
    assert [f"{t.label} {t.enrol} {t.test}" for t in trials] == OFFICIAL_LINES
    assert all(isinstance(t.label, int) for t in trials)


def test_tolerates_whitespace_crlf_and_blank_lines(tmp_path):
    text = "1\tid1/a/00001.wav   id1/b/00002.wav\r\n\r\n0 id1/a/00001.wav id2/c/00001.wav  \r\n\n"
    trials = read_trials(write(tmp_path / "t.txt", text))
    assert trials == [Trial(1, "id1/a/00001.wav", "id1/b/00002.wav"),
                      Trial(0, "id1/a/00001.wav", "id2/c/00001.wav")]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        read_trials(tmp_path / "nowhere.txt")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file_is_an_error(tmp_path, text):
    f = write(tmp_path / "empty.txt", text)
    with pytest.raises(ValueError, match="empty.txt.*no trial"):
        read_trials(f)


@pytest.mark.parametrize("bad, problem", [
    ("1 id1/a/00001.wav", "3 fields"),
    ("1 id1/a/00001.wav id2/b/00001.wav extra", "3 fields"),
    ("2 id1/a/00001.wav id2/b/00001.wav", "label must be 0 or 1"),
    ("target id1/a/00001.wav id2/b/00001.wav", "label must be 0 or 1"),
    ("-1 id1/a/00001.wav id2/b/00001.wav", "label must be 0 or 1"),
])
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
    trials = [Trial(rng.randint(0, 1), f"id{rng.randint(1, 9)}/v/{i:05d}.wav",
                    f"id{rng.randint(1, 9)}/w/{i:05d}.wav") for i in range(50)]
    path = tmp_path / "out.txt"
    assert write_trials(path, trials) == 50
    assert read_trials(path) == trials
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left


def test_trial_files_unique_in_first_use_order():
    trials = [Trial(1, "b", "a"), Trial(0, "a", "c"), Trial(1, "c", "b"), Trial(0, "d", "d")]
    files = trial_files(trials)
    assert sorted(files) == sorted({x for t in trials for x in (t.enrol, t.test)})
    flat = [x for t in trials for x in (t.enrol, t.test)]
    assert files == sorted(files, key=flat.index)
