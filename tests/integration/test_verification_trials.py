"""The verification recipe checks its trial list before any audio is
embedded: a list of one class, a pair labelled both 1 and 0, and entries
outside the data folder are refused with an error naming the list (entries
outside only unless ``allow_outside_data_folder``); duplicate trials are a
warning and a count in metrics.json. Before, a one-class list failed with a
traceback after every file was embedded, and ``../`` or absolute entries
were read wherever they pointed."""

import shutil
from pathlib import Path

import pytest

from speechbrain_mrmha.dataio.trials import read_trials
from speechbrain_mrmha.inference.model import SpeakerModel

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "VoxCeleb1"


@pytest.fixture
def recipe(monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPE))
    from speaker_verification_cosine import main

    def run(data, model, out, trials_file, extra=()):
        return main(
            [
                str(RECIPE / "hparams" / "verification.yaml"),
                f"--data_folder={data}",
                f"--pretrained_path={model}",
                f"--output_folder={out}",
                f"--verification_file={trials_file}",
                *extra,
            ]
        )

    return run


@pytest.fixture
def no_embedding(monkeypatch):
    """Any embedding fails the test: the checks must come first."""

    def refuse(*_, **__):  # whatever the call, it must not happen
        raise AssertionError("embedded before the trial list was checked")

    monkeypatch.setattr(SpeakerModel, "embed_files", refuse)


def official_lines(corpus):
    trials = read_trials(corpus.verification_file)
    return [f"{t.label} {t.enrol} {t.test}" for t in trials]


def write_list(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("label", ["0", "1"])
def test_a_one_class_list_is_refused_before_any_embedding(
    tiny_corpus, tiny_pretrained, tmp_path, recipe, no_embedding, label
):
    lines = [label + line[1:] for line in official_lines(tiny_corpus)]
    trials_file = write_list(tmp_path / "one_class.txt", lines)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as error:
        recipe(tiny_corpus.root, tiny_pretrained, out, trials_file)
    assert f"trial list {trials_file}" in str(error.value)
    assert f"all {len(lines)} trials are" in str(error.value)
    assert not (out / "scores.txt").exists()


def test_conflicting_labels_are_refused_before_any_embedding(
    tiny_corpus, tiny_pretrained, tmp_path, recipe, no_embedding
):
    lines = official_lines(tiny_corpus)
    label, enrol, test = lines[0].split()
    flipped = f"{1 - int(label)} {test} {enrol}"  # the same pair, swapped
    trials_file = write_list(tmp_path / "conflict.txt", [*lines, flipped])
    with pytest.raises(ValueError) as error:
        recipe(tiny_corpus.root, tiny_pretrained, tmp_path / "o", trials_file)
    assert f"1 problem in trial list {trials_file}:" in str(error.value)
    assert (
        f"{enrol} {test} (trials 1, {len(lines) + 1}) is labelled both 1 and 0"
    ) in str(error.value)


def test_entries_outside_the_data_folder_need_the_explicit_option(
    tiny_corpus, tiny_pretrained, tmp_path, recipe, no_embedding
):
    lines = official_lines(tiny_corpus)
    enrol = lines[1].split()[1]
    trials_file = write_list(
        tmp_path / "outside.txt",
        [*lines, f"0 {enrol} ../../x.wav", "0 /etc/passwd " + enrol],
    )
    with pytest.raises(ValueError) as error:
        recipe(tiny_corpus.root, tiny_pretrained, tmp_path / "o", trials_file)
    message = str(error.value).splitlines()
    assert message[0].startswith(f"2 entries of {trials_file} outside the")
    assert sorted(message[1:]) == ["  ../../x.wav", "  /etc/passwd"]


def test_duplicates_are_counted_and_outside_entries_read_when_allowed(
    tiny_corpus, tiny_pretrained, tmp_path, recipe
):
    lines = official_lines(tiny_corpus)
    label, enrol, test = lines[0].split()
    outside = tmp_path / "elsewhere" / "copy.wav"
    outside.parent.mkdir()
    shutil.copy(Path(tiny_corpus.wav_folder) / enrol, outside)
    extra = [f"{label} {test} {enrol}", f"{label} {enrol} {test}"]
    trials_file = write_list(
        tmp_path / "dups.txt", [*lines, *extra, f"0 {outside} {test}"]
    )
    out, model = tmp_path / "out", tmp_path / "pretrained"
    shutil.copytree(tiny_pretrained, model)  # the run writes into it
    metrics = recipe(
        tiny_corpus.root,
        model,
        out,
        trials_file,
        ["--allow_outside_data_folder=True"],
    )
    assert metrics["n_duplicate_trials"] == 2
    assert metrics["n_trials"] == len(lines) + 3
    assert len((out / "scores.txt").read_text().splitlines()) == len(lines) + 3
    log = (out / "log.txt").read_text()
    assert f"{trials_file}: 2 duplicate trials" in log
    assert (
        f"{enrol} {test} (trials 1, {len(lines) + 1}, {len(lines) + 2})" in log
    )
