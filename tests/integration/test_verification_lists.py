"""Several trial lists in one verification run
(``inference.verification.verify_trial_lists`` and the VoxCeleb1 recipe's
``verification_lists``): every list is checked before any audio is
embedded, each file of their union is embedded once (one ``embed_files``
call, one cache), each list's scores equal those of scoring it alone, the
AS-norm statistics are computed once, on the union, from a cohort of other
speakers in another data folder (VoxCeleb2's role), and cohort speakers
that are test speakers are a warning, or refused on request.

The corpus: 9 synthetic speakers; the lists are over speakers 5-9 (Vox1-O
over 8 and 9, Vox1-H over 7 and 8, Vox1-E over all five: overlapping
files), the cohort is speakers 1-4 copied under other IDs into a
"VoxCeleb2" folder."""

import json
import shutil
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest
import soundfile
import torch
from conftest import small_corpus

from speechbrain_mrmha.dataio.files import content_digest
from speechbrain_mrmha.dataio.trials import (
    cohort_utterances,
    load_trials,
    resolve_trials,
)
from speechbrain_mrmha.inference import extraction, verification
from speechbrain_mrmha.inference.model import SpeakerModel
from speechbrain_mrmha.inference.verification import (
    ScoreNorm,
    verify_trial_lists,
)
from speechbrain_mrmha.scoring.cosine import (
    cohort_statistics,
    cosine_score_trials,
    normalize_scores,
)
from speechbrain_mrmha.scoring.metrics import detection_report

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "VoxCeleb1"
LISTS = {  # file name -> speakers whose files it pairs
    "veri_test2.txt": ("id10008", "id10009"),
    "list_test_all2.txt": (
        "id10005",
        "id10006",
        "id10007",
        "id10008",
        "id10009",
    ),
    "list_test_hard2.txt": ("id10007", "id10008"),
}


def pairs(files):
    """Every pair of the files, labelled 1 when of the same speaker."""
    return [
        f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}"
        for a, b in combinations(files, 2)
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(VoxCeleb1 root with the three lists in meta/, VoxCeleb2 root, its
    cohort CSV of 4 speakers)."""
    root = tmp_path_factory.mktemp("lists")
    vox1 = Path(
        small_corpus(
            root / "vox1", 9, 2, (1.0, 1.5), seed=5, test_speakers=3
        ).root
    )
    wav = vox1 / "wav"
    files = {
        speaker.name: sorted(
            str(p.relative_to(wav)) for p in speaker.rglob("*.wav")
        )
        for speaker in sorted(wav.iterdir())
    }
    for name, speakers in LISTS.items():
        chosen = [f for s in speakers for f in files[s]]
        (vox1 / "meta" / name).write_text("\n".join(pairs(chosen)) + "\n")
    vox2 = root / "vox2"
    rows = ["ID,duration,wav,spk_id"]
    for number in range(1, 5):
        speaker = f"id0000{number}"
        for index, entry in enumerate(files[f"id1000{number}"]):
            relative = Path("dev", "aac", speaker, *Path(entry).parts[1:])
            (vox2 / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(wav / entry, vox2 / relative)
            seconds = soundfile.info(vox2 / relative).duration
            rows.append(
                f"{speaker}_{index},{seconds},$data_root/{relative},{speaker}"
            )
    cohort_csv = vox2 / "train.csv"
    cohort_csv.write_text("\n".join(rows) + "\n")
    return vox1, vox2, cohort_csv


@pytest.fixture
def model_folder(tiny_pretrained, tmp_path):
    """A copy of the tiny model: a run writes its threshold and card."""
    folder = tmp_path / "pretrained"
    shutil.copytree(tiny_pretrained, folder)
    return folder


@pytest.fixture
def recipe(monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPE))
    from speaker_verification_cosine import main

    def run(data, model, out, *extra):
        return main(
            [
                str(RECIPE / "hparams" / "verification.yaml"),
                f"--data_folder={data}",
                f"--pretrained_path={model}",
                f"--output_folder={out}",
                *extra,
            ]
        )

    return run


@pytest.fixture
def calls(monkeypatch):
    """Counts embed_files calls and the audio files read for embedding."""
    counted = {"embed_files": 0, "read": Counter()}
    embed_files, load_audio = SpeakerModel.embed_files, extraction.load_audio

    def counting_embed_files(self, *args, **kwargs):
        counted["embed_files"] += 1
        return embed_files(self, *args, **kwargs)

    def counting_load_audio(path, *args, **kwargs):
        counted["read"][str(path)] += 1
        return load_audio(path, *args, **kwargs)

    monkeypatch.setattr(SpeakerModel, "embed_files", counting_embed_files)
    monkeypatch.setattr(extraction, "load_audio", counting_load_audio)
    return counted


def list_files(vox1, name):
    """The audio files of a list."""
    trials = load_trials(vox1 / "meta" / name)
    return {str(vox1 / "wav" / entry) for entry in trials.names}


def cached(out, paths):
    """Embeddings of audio files from a run's cache, by content."""
    stored = torch.load(out / "embeddings.pt")["embeddings"]
    return torch.stack([stored[content_digest(p)] for p in paths])


def test_every_list_in_one_run_each_file_embedded_once(
    corpus, model_folder, tmp_path, recipe, calls
):
    vox1, _, _ = corpus
    out = tmp_path / "out"
    results = recipe(vox1, model_folder, out, "--verification_lists=auto")
    union = set().union(*(list_files(vox1, name) for name in LISTS))
    assert (
        len(union) == 20 and sum(len(list_files(vox1, n)) for n in LISTS) > 30
    )
    # one embed_files call, every file of the union read once, nothing else
    assert calls["embed_files"] == 1
    assert set(calls["read"]) == union
    assert set(calls["read"].values()) == {1}
    assert len(torch.load(out / "embeddings.pt")["embeddings"]) == 20
    assert results["n_files"] == 20 and list(results["lists"]) == list(LISTS)
    for name in LISTS:
        metrics = results["lists"][name]
        assert metrics["n_trials"] == len(load_trials(vox1 / "meta" / name))
        assert metrics["n_files"] == len(list_files(vox1, name))
        assert (out / f"scores_{Path(name).stem}.txt").is_file()
    assert json.loads((out / "results.json").read_text()) == results
    table = (out / "results.md").read_text().splitlines()
    rows = [
        line for line in table if line.startswith("| ") and "---" not in line
    ]
    assert len(rows) == 1 + len(LISTS)  # the header, then a row per list
    assert rows[1].startswith("| veri_test2.txt (Vox1-O) | 28 |")
    assert not (out / "scores.txt").exists()
    assert not (out / "metrics.json").exists()
    # the model keeps the threshold of the first list, its card every list
    recorded = json.loads((model_folder / "verification.json").read_text())
    assert recorded["verification_file"].endswith("veri_test2.txt")
    card = (model_folder / "README.md").read_text()
    assert all(f"| {name} |" in card for name in LISTS)

    # a rerun embeds nothing: the one cache serves every list
    calls["read"].clear()
    recipe(vox1, model_folder, out, "--verification_lists=auto")
    assert not calls["read"]


def test_each_list_scores_as_when_scored_alone(
    corpus, model_folder, tmp_path, recipe
):
    """Scores and metrics of each list of a run equal those of the list
    alone: through the recipe with verification_file (the same cache, so
    the same embeddings), and through the single-list path computed here
    from the library pieces (resolve the list, a table of its own files,
    cosine_score_trials, detection_report)."""
    vox1, _, _ = corpus
    out = tmp_path / "all"
    paths = [vox1 / "meta" / name for name in LISTS]
    verified = verify_trial_lists(
        SpeakerModel(model_folder), paths, vox1, out, record_in_model=False
    )
    results = json.loads((out / "results.json").read_text())
    for result, path in zip(verified.lists, paths):
        trials = load_trials(path)
        resolved = resolve_trials(trials, vox1)
        table = cached(out, resolved.names)
        alone = cosine_score_trials(
            table,
            torch.from_numpy(resolved.enrol),
            torch.from_numpy(resolved.test),
        )
        assert torch.equal(result.raw, alone) and torch.equal(
            result.scores, alone
        )
        labels = torch.from_numpy(trials.labels != 0)
        report = detection_report(alone[labels], alone[~labels])
        assert {k: result.metrics[k] for k in report} == report

        single = tmp_path / path.stem
        single.mkdir()
        shutil.copy(out / "embeddings.pt", single / "embeddings.pt")
        metrics = recipe(
            vox1, model_folder, single, f"--verification_file={path}"
        )
        assert (
            single / "scores.txt"
        ).read_text() == result.score_file.read_text()
        assert metrics == results["lists"][path.name]
        assert torch.load(single / "embeddings.pt")["embeddings"].keys() <= (
            torch.load(out / "embeddings.pt")["embeddings"].keys()
        )  # nothing embedded afresh


def test_as_norm_uses_cohort_statistics_of_the_union_once(
    corpus, model_folder, tmp_path, monkeypatch
):
    """AS-norm with a cohort of other speakers in another data folder (the
    VoxCeleb2 training speakers' role): the statistics are computed once,
    for every file of the union, and each list is normalised with them."""
    vox1, vox2, cohort_csv = corpus
    counted = []

    def counting(embeddings, cohort, top_k=None, chunk_size=4096):
        counted.append((embeddings.shape[0], cohort.shape[0], top_k))
        return cohort_statistics(embeddings, cohort, top_k, chunk_size)

    monkeypatch.setattr(verification, "cohort_statistics", counting)
    cohort = cohort_utterances(cohort_csv, vox2, 3)
    assert all(Path(p).is_relative_to(vox2) for f in cohort.values() for p in f)
    out = tmp_path / "out"
    paths = [vox1 / "meta" / name for name in LISTS]
    verified = verify_trial_lists(
        SpeakerModel(model_folder),
        paths,
        vox1,
        out,
        ScoreNorm("as-norm", cohort, 3, str(cohort_csv)),
        record_in_model=False,
    )
    assert counted == [(20, 4, 3)]  # once, on the union; adaptive: 3 of 4
    results = verified.results
    assert results["cohort"] == {
        "source": str(cohort_csv),
        "speakers": 4,
        "files": 12,
        "top_k": 3,
    }
    union = sorted(set().union(*(list_files(vox1, n) for n in LISTS)))
    means = torch.stack(
        [cached(out, list(files)).mean(dim=0) for files in cohort.values()]
    )
    mean, std = cohort_statistics(cached(out, union), means, top_k=3)
    row = {path: i for i, path in enumerate(union)}
    for result, path in zip(verified.lists, paths):
        resolved = resolve_trials(load_trials(path), vox1)
        rows = torch.tensor([row[n] for n in resolved.names])
        enrol = rows[torch.from_numpy(resolved.enrol).long()]
        test = rows[torch.from_numpy(resolved.test).long()]
        expected = normalize_scores(result.raw, enrol, test, mean, std)
        assert torch.allclose(result.scores, expected, atol=1e-6, rtol=0)
        assert not torch.allclose(result.scores, result.raw, atol=1e-2)
        metrics = results["lists"][path.name]
        assert metrics["cohort_overlap"] == {"speakers": [], "files": 0}
        assert set(metrics["raw"]) >= {"EER", "minDCF", "actDCF", "Cllr"}
        assert (
            metrics["raw"]["EER"]
            == detection_report(*(result.raw[m] for m in _by_label(path)))[
                "EER"
            ]
        )
    table = (out / "results.md").read_text()
    assert "| EER (%) raw | EER (%) as-norm |" in table


def _by_label(path):
    labels = torch.from_numpy(load_trials(path).labels != 0)
    return labels, ~labels


def test_a_cohort_of_test_speakers_is_a_warning_or_refused(
    corpus, model_folder, tmp_path, recipe, monkeypatch
):
    vox1, vox2, cohort_csv = corpus
    test_file = sorted((vox1 / "wav" / "id10009").rglob("*.wav"))[0]
    mixed = tmp_path / "cohort.csv"
    mixed.write_text(
        cohort_csv.read_text()
        + f"x,{soundfile.info(test_file).duration},{test_file},id10009\n"
    )
    options = [
        "--verification_lists=auto",
        "--score_norm=as-norm",
        f"--cohort_data={mixed}",
        f"--cohort_data_folder={vox2}",
    ]
    warned = tmp_path / "warned"
    results = recipe(vox1, model_folder, warned, *options)
    for name in LISTS:
        found = results["lists"][name]["cohort_overlap"]
        shared = "id10009" in LISTS[name]
        assert found == {"speakers": ["id10009"] * shared, "files": int(shared)}
    log = (warned / "log.txt").read_text()
    assert "2 trial lists share speakers or files with the cohort" in log
    assert "list_test_hard2.txt:" not in log

    def refuse(*_, **__):
        raise AssertionError("embedded before the cohort was checked")

    monkeypatch.setattr(SpeakerModel, "embed_files", refuse)
    out = tmp_path / "refused"
    with pytest.raises(ValueError) as error:
        recipe(
            vox1, model_folder, out, *options, "--refuse_cohort_overlap=True"
        )
    message = str(error.value)
    assert message.startswith("2 trial lists share speakers or files")
    assert (
        "veri_test2.txt: 1 cohort speakers are speakers of the list (id10009)"
        in message
    )
    assert not (out / "embeddings.pt").exists()


def test_every_problem_of_every_list_comes_before_any_embedding(
    corpus, model_folder, tmp_path, recipe, monkeypatch
):
    vox1, _, _ = corpus
    good = vox1 / "meta" / "veri_test2.txt"
    lines = good.read_text().splitlines()
    bad_line = tmp_path / "list_test_all2.txt"
    bad_line.write_text("\n".join([lines[0], "2 " + lines[1][2:], *lines[2:]]))
    missing = tmp_path / "list_test_hard2.txt"
    missing.write_text(
        "\n".join(
            [*lines, "0 id10009/nothere/00001.wav " + lines[0].split()[1]]
        )
    )

    def refuse(*_, **__):
        raise AssertionError("embedded before every list was checked")

    monkeypatch.setattr(SpeakerModel, "embed_files", refuse)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as error:
        recipe(
            vox1,
            model_folder,
            out,
            f"--verification_lists=[{good},{bad_line},{missing}]",
        )
    message = str(error.value)
    assert message.startswith(
        "2 problems in 3 trial lists (nothing was embedded):"
    )
    assert f"{bad_line}:2: label must be 0 or 1, got '2'" in message
    assert f"{missing}: 1 trial entr" in message  # "entries": raise_problems
    assert "id10009/nothere/00001.wav: missing" in message
    assert str(good) not in message
    assert not (out / "embeddings.pt").exists()
    assert not list(out.glob("scores*")) and not (out / "results.json").exists()


@pytest.mark.parametrize("value", ["atuo", "[]"])
def test_verification_lists_must_be_files_or_auto(
    corpus, model_folder, tmp_path, recipe, value
):
    vox1, _, _ = corpus
    with pytest.raises(ValueError, match="a list of files or 'auto'"):
        recipe(
            vox1, model_folder, tmp_path / "o", f"--verification_lists={value}"
        )
