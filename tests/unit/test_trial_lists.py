"""Several trial lists checked together (dataio/trial_lists.py): each audio
file looked up once over all lists, every problem of every list in one
error naming list and line, the known VoxCeleb1 lists found in a folder;
and the results table of a verification run
(inference/verification.py)."""

from collections import Counter

import numpy as np
import pytest
import soundfile

from speechbrain_mrmha.dataio import trials as trials_module
from speechbrain_mrmha.dataio.trial_lists import (
    cohort_overlap,
    find_trial_lists,
    load_trial_lists,
)
from speechbrain_mrmha.dataio.trials import load_trials
from speechbrain_mrmha.inference.verification import results_table

SPEAKERS = {"id1": 3, "id2": 3, "id3": 2}


@pytest.fixture
def data(tmp_path):
    """wav/<speaker>/v/<n>.wav, 0.6 s of silence each."""
    for speaker, count in SPEAKERS.items():
        folder = tmp_path / "wav" / speaker / "v"
        folder.mkdir(parents=True)
        for n in range(count):
            soundfile.write(folder / f"{n}.wav", np.zeros(9600), 16000)
    return tmp_path


def entry(speaker, n):
    return f"{speaker}/v/{n}.wav"


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def three_lists(folder):
    """Overlapping lists: o over id1, e over all, h over id2 and id3."""
    o = write(
        folder / "veri_test2.txt",
        [
            f"1 {entry('id1', 0)} {entry('id1', 1)}",
            f"0 {entry('id1', 2)} {entry('id2', 0)}",
        ],
    )
    e = write(
        folder / "list_test_all2.txt",
        [
            f"1 {entry('id3', 0)} {entry('id3', 1)}",
            f"0 {entry('id1', 0)} {entry('id3', 1)}",
            f"1 {entry('id2', 1)} {entry('id2', 2)}",
            f"0 {entry('id2', 0)} {entry('id1', 1)}",
        ],
    )
    h = write(
        folder / "list_test_hard2.txt",
        [
            f"1 {entry('id2', 2)} {entry('id2', 0)}",
            f"0 {entry('id3', 0)} {entry('id2', 1)}",
        ],
    )
    return [o, e, h]


def test_each_file_is_looked_up_once_and_each_list_keeps_its_trials(
    data, monkeypatch
):
    read = Counter()
    audio_seconds = trials_module.audio_seconds

    def counting(path, *args):
        read[str(path)] += 1
        return audio_seconds(path, *args)

    monkeypatch.setattr(trials_module, "audio_seconds", counting)
    paths = three_lists(data)
    checked = load_trial_lists(paths, data)
    assert len(checked.files) == 8 == len(set(checked.files))
    assert set(read) == set(checked.files) and set(read.values()) == {1}
    assert checked.durations.tolist() == [0.6] * 8
    for checked_list, path in zip(checked.lists, paths):
        assert checked_list.name == path.name and checked_list.path == str(path)
        trials = load_trials(path)
        for i, trial in enumerate(trials.trials()):
            assert checked.files[checked_list.enrol[i]] == str(
                data / "wav" / trial.enrol
            )
            assert checked.files[checked_list.test[i]] == str(
                data / "wav" / trial.test
            )
        assert checked_list.enrol.dtype == np.int32  # compact, as TrialList


def test_every_problem_of_every_list_comes_in_one_error(data):
    o, e, h = three_lists(data)
    lines = e.read_text().splitlines()
    write(e, [lines[0], "x " + lines[1][2:], lines[2], lines[3] + " extra"])
    flipped = h.read_text().splitlines()[0].split()
    write(
        h,
        [
            *h.read_text().splitlines(),
            f"0 {flipped[2]} {flipped[1]}",
            "0 /etc/passwd " + flipped[1],
        ],
    )
    missing = data / "veri_test.txt"
    with pytest.raises(ValueError) as error:
        load_trial_lists([o, e, h, missing], data)
    message = str(error.value)
    assert message.startswith("3 problems in 4 trial lists")
    assert f"{e}:2: label must be 0 or 1, got 'x'" in message
    assert f"{e}:4: expected 'label enrol test' (3 fields), got 4" in message
    assert f"1 entry of {h} outside the data folder" in message
    assert f"trial list '{missing}' does not exist" in message
    assert str(o) not in message
    # once the outside entry is gone, the conflict of h shows, with e's lines
    write(h, h.read_text().splitlines()[:-1])
    with pytest.raises(ValueError) as error:
        load_trial_lists([o, e, h], data)
    assert f"problem in trial list {h}" in str(error.value)
    assert "is labelled both 1 and 0" in str(error.value)
    assert f"{e}:4:" in str(error.value)


def test_a_single_problem_is_its_own_error(data):
    o, e, _ = three_lists(data)
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        load_trial_lists([o, e, data / "nothere.txt"], data)
    assert str(error.value).startswith("trial list ")
    write(
        e,
        [*e.read_text().splitlines(), f"1 {entry('id9', 0)} {entry('id1', 0)}"],
    )
    with pytest.raises(FileNotFoundError) as error:
        load_trial_lists([o, e], data)
    assert str(error.value).startswith("1 trial entr")
    assert f"{entry('id9', 0)}: missing" in str(error.value)


def test_lists_must_have_different_file_names(data):
    o, _, _ = three_lists(data)
    other = data / "other"
    other.mkdir()
    copy = write(other / o.name, o.read_text().splitlines())
    with pytest.raises(
        ValueError, match="given more than once: veri_test2.txt"
    ):
        load_trial_lists([o, copy], data)
    with pytest.raises(ValueError, match="no trial list"):
        load_trial_lists([], data)


def test_the_known_voxceleb1_lists_are_found_cleaned_ones_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trial list in"):
        find_trial_lists(tmp_path)
    for name in (
        "list_test_hard.txt",
        "veri_test.txt",
        "list_test_all2.txt",
        "veri_test2.txt",
        "x.txt",
    ):
        (tmp_path / name).write_text("1 a b\n")
    assert [p.name for p in find_trial_lists(tmp_path)] == [
        "veri_test2.txt",
        "list_test_all2.txt",
        "veri_test.txt",
        "list_test_hard.txt",
    ]


def test_cohort_overlap_is_counted_per_list(data):
    checked = load_trial_lists(three_lists(data), data)
    cohort = {
        "id3": {str(data / "wav" / entry("id3", 0)): 0.6},
        "id7": {"/elsewhere/a.wav": 1.0},
    }
    assert cohort_overlap(checked, cohort) == {
        "veri_test2.txt": {"speakers": [], "files": 0},
        "list_test_all2.txt": {"speakers": ["id3"], "files": 1},
        "list_test_hard2.txt": {"speakers": ["id3"], "files": 1},
    }


def test_the_results_table_has_a_row_per_list_raw_and_normalised():
    def metrics(eer):
        return {
            "n_trials": 10,
            "EER": eer,
            "minDCF": 0.5,
            "actDCF": 0.6,
            "Cllr": 0.7,
            "calibration": "none: x",
        }

    results = {
        "score_norm": "as-norm",
        "lists": {
            "veri_test2.txt": {**metrics(1.0), "raw": metrics(2.0)},
            "my_list.txt": {**metrics(3.0), "raw": metrics(4.0)},
        },
    }
    lines = results_table(results).splitlines()
    assert lines[0] == (
        "| trial list | trials | EER (%) raw | EER (%) as-norm | minDCF raw | "
        "minDCF as-norm | actDCF raw | actDCF as-norm | Cllr raw | "
        "Cllr as-norm |"
    )
    assert (
        lines[2]
        == "| veri_test2.txt (Vox1-O) | 10 | 2.0 | 1.0 | 0.5 | 0.5 | 0.6 | 0.6 "
        "| 0.7 | 0.7 |"
    )
    assert lines[3].startswith("| my_list.txt | 10 | 4.0 | 3.0 |")
    assert lines[4] == "" and "calibration: none: x" in lines[5]
