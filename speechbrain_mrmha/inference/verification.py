"""Speaker verification of several trial lists in one run: what a
verification recipe (VoxCeleb1, VoxCeleb2) does once its options are read.

``verify_trial_lists`` checks every list before any audio is embedded
(``dataio.trial_lists.load_trial_lists``: every problem of every list in
one error), embeds the union of their files and the cohort in one
``SpeakerModel.embed_files`` call (one content-keyed cache, each file
once), computes the cohort statistics of score normalisation once for all
files, scores each list (``score_lists``), and writes

* ``scores.txt`` and ``metrics.json`` for a single list (what the recipe
  always wrote), or ``scores_<list>.txt`` for each of several lists
  (``enrol test score label`` lines, streamed);
* ``results.json``: the metrics of every list (EER, minDCF, actDCF, Cllr
  and the rest of ``list_metrics``; under score normalisation also those
  of the raw cosine scores), the cohort and its overlap with each list;
* ``results.md``: one table, a row per list (``results_table``);

all atomically. The model's folder gets the EER threshold of the raw
cosine scores of the first list (``SpeakerModel.record_threshold``) and
the results of every list in its card.

A cohort (``ScoreNorm``) is the mean embedding of each speaker of an
annotation CSV (``ScoreNorm.from_annotation``), e.g. the VoxCeleb2
training speakers for the VoxCeleb1 lists; its files may lie in another
data folder. Cohort speakers or files that are also in a list are a
warning (and a count in the results), or refused with
``refuse_cohort_overlap``: a cohort drawn from VoxCeleb1 training speakers
necessarily overlaps Vox1-E and Vox1-H, whose trials span all of
VoxCeleb1.

Authors
 * speechbrain-mrmha developers
"""

import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from speechbrain_mrmha.dataio.files import content_digest, write_text_atomic
from speechbrain_mrmha.dataio.problems import raise_problems
from speechbrain_mrmha.dataio.trial_lists import (
    VOXCELEB1_LISTS,
    cohort_overlap,
    find_trial_lists,
    load_trial_lists,
)
from speechbrain_mrmha.dataio.trials import cohort_utterances, write_scores
from speechbrain_mrmha.inference.card import write_model_card
from speechbrain_mrmha.scoring.cosine import (
    cohort_statistics,
    cosine_score_trials,
    normalize_scores,
)
from speechbrain_mrmha.scoring.metrics import (
    calibration_report,
    cllr,
    detection_report,
)

__all__ = [
    "SCORE_NORMS",
    "ScoreNorm",
    "ListResult",
    "Verified",
    "check_score_norm",
    "voxceleb1_lists",
    "score_lists",
    "list_metrics",
    "results_table",
    "verify_trial_lists",
]

logger = logging.getLogger(__name__)
SCORE_NORMS = ("s-norm", "as-norm")
CACHE_FILE = "embeddings.pt"
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
# results.md columns: key in the metrics, header
COLUMNS = (
    ("EER", "EER (%)"),
    ("minDCF", "minDCF"),
    ("actDCF", "actDCF"),
    ("Cllr", "Cllr"),
)


class ScoreNorm(NamedTuple):
    """Score normalisation against a cohort of speakers.

    Arguments
    ---------
    method : str
        "s-norm" (statistics of every cohort score) or "as-norm" (of the
        ``top_k`` highest).
    cohort : dict
        Speaker -> {audio path: seconds} (``trials.cohort_utterances``);
        each speaker is the mean embedding of its files.
    top_k : int
        AS-norm's cohort size per file (at most the number of speakers).
    source : str
        What the cohort was read from, for the results.

    Example
    -------
    >>> ScoreNorm("as-norm", {"s1": {"a.wav": 2.0}}, 300, "train.csv").top_k
    300
    """

    method: str
    cohort: dict
    top_k: int = 300
    source: str = ""

    @classmethod
    def from_annotation(
        cls, method, annotation, data_folder, per_speaker, top_k
    ):
        """The score normalisation of a recipe: its cohort the first
        ``per_speaker`` utterances of each speaker of an annotation CSV
        (``trials.cohort_utterances``), or None when ``method`` is None.

        Arguments
        ---------
        method : str or None
            "s-norm", "as-norm", or None (raw cosine scores).
        annotation : str or Path
            A CSV with ``ID``, ``duration``, ``wav`` and ``spk_id``, e.g.
            the training annotation; it is the ``source``.
        data_folder : str or Path
            Replaces ``$data_root`` in it.
        per_speaker : int
            Most utterances per cohort speaker, in file order.
        top_k : int
            AS-norm's cohort size per file.

        Returns
        -------
        score_norm : ScoreNorm or None

        Example
        -------
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in "abc":
        ...     _ = (folder / f"{name}.wav").write_bytes(b"")
        >>> _ = (folder / "train.csv").write_text(
        ...     "ID,duration,wav,spk_id\\n"
        ...     "u1,1.0,$data_root/a.wav,s1\\nu2,2.0,$data_root/b.wav,s1\\n"
        ...     "u3,3.0,$data_root/c.wav,s2\\n")
        >>> norm = ScoreNorm.from_annotation(
        ...     "as-norm", folder / "train.csv", folder, 1, top_k=2)
        >>> norm.method, norm.top_k, norm.source == str(folder / "train.csv")
        ('as-norm', 2, True)
        >>> {speaker: list(files.values()) for speaker, files in norm.cohort.items()}
        {'s1': [1.0], 's2': [3.0]}
        >>> print(ScoreNorm.from_annotation(None, folder / "x.csv", folder, 1, 2))
        None
        """
        if method is None:
            return None
        cohort = cohort_utterances(annotation, data_folder, per_speaker)
        return cls(method, cohort, top_k, str(annotation))


class ListResult(NamedTuple):
    """The result of one trial list (``verify_trial_lists``).

    Arguments
    ---------
    name : str
        The list's file name.
    metrics : dict
        ``list_metrics`` and the run's record (what ``metrics.json`` holds).
    raw, scores : torch.Tensor
        (n_trials,) raw cosine scores, and the scores reported (normalised
        under score normalisation, else the raw ones).
    score_file : Path
        Where the scores were written.

    Example
    -------
    >>> ListResult("o.txt", {}, torch.ones(1), torch.ones(1), Path("s")).name
    'o.txt'
    """

    name: str
    metrics: dict
    raw: torch.Tensor
    scores: torch.Tensor
    score_file: Path


class Verified(NamedTuple):
    """What ``verify_trial_lists`` did.

    Arguments
    ---------
    lists : list of ListResult
        In the order given.
    results : dict
        What ``results.json`` holds.
    n_files : int
        Audio files of the lists (each once).
    n_cohort_files : int
        Audio files of the cohort.
    n_embedded : int
        Contents embedded by this run (the others came from the cache).
    cache : Path
        The embedding cache.

    Example
    -------
    >>> Verified([], {}, 3, 0, 1, Path("embeddings.pt")).n_embedded
    1
    """

    lists: list
    results: dict
    n_files: int
    n_cohort_files: int
    n_embedded: int
    cache: Path


def check_score_norm(method):
    """Refuse a score normalisation other than None, "s-norm", "as-norm".

    Arguments
    ---------
    method : str or None

    Returns
    -------
    method : str or None

    Example
    -------
    >>> check_score_norm("as-norm")
    'as-norm'
    >>> check_score_norm("z-norm")
    Traceback (most recent call last):
    ...
    ValueError: score_norm must be one of (None, 's-norm', 'as-norm'), got 'z-norm'
    """
    if method is not None and method not in SCORE_NORMS:
        raise ValueError(
            f"score_norm must be one of {(None, *SCORE_NORMS)}, got {method!r}"
        )
    return method


def voxceleb1_lists(vox1_folder, score_norm, top_k, cohort_speakers):
    """The VoxCeleb1 trial lists a training recipe scores at its end,
    checked with its AS-norm cohort size before any work: every problem in
    one error.

    Arguments
    ---------
    vox1_folder : str, Path or None
        VoxCeleb1, its lists in ``<vox1_folder>/meta`` (``find_trial_lists``);
        None: no verification.
    score_norm : str or None
        The normalisation (``check_score_norm``).
    top_k : int
        AS-norm's cohort size per file.
    cohort_speakers : int or None
        Speakers of the cohort (e.g. the training speakers); None: not
        known yet (the lists alone are checked, e.g. before preparation).

    Returns
    -------
    lists : list of Path or None
        None without ``vox1_folder``.

    Example
    -------
    >>> import tempfile
    >>> vox1 = Path(tempfile.mkdtemp())
    >>> print(voxceleb1_lists(None, "as-norm", 300, 10))
    None
    >>> voxceleb1_lists(vox1, "as-norm", 300, 10)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 2 problems with the verification options:
      vox1_folder: no trial list in .../meta: looked for veri_test2.txt, ...
      cohort_top_k: 300, but the cohort has 10 speakers
    >>> voxceleb1_lists(vox1, "as-norm", 300, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 1 problem with the verification options:
      vox1_folder: no trial list in .../meta: looked for veri_test2.txt, ...
    >>> (vox1 / "meta").mkdir()
    >>> _ = (vox1 / "meta" / "veri_test2.txt").write_text("1 a.wav b.wav\\n")
    >>> [p.name for p in voxceleb1_lists(vox1, "s-norm", 300, 10)]
    ['veri_test2.txt']
    """
    if vox1_folder is None:
        return None
    problems, lists = [], None
    try:
        lists = find_trial_lists(Path(vox1_folder, "meta"))
    except FileNotFoundError as error:
        problems.append(f"vox1_folder: {error}")
    too_few = cohort_speakers is not None and top_k > cohort_speakers
    if score_norm == "as-norm" and too_few:
        problems.append(
            f"cohort_top_k: {top_k}, but the cohort has {cohort_speakers} "
            "speakers"
        )
    raise_problems(problems, "problems with the verification options")
    return lists


def _check(score_norm):
    """Refuse a ScoreNorm that cannot work, before any embedding."""
    if score_norm is None:
        return
    check_score_norm(score_norm.method)
    source = score_norm.source or "the cohort"
    if len(score_norm.cohort) < 2:
        raise ValueError(
            f"{source}: a cohort needs at least 2 speakers, got "
            f"{len(score_norm.cohort)}"
        )
    top_k = score_norm.top_k
    if score_norm.method == "as-norm" and (
        isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 2
    ):
        raise ValueError(f"cohort_top_k must be an int >= 2, got {top_k!r}")
    missing = [
        f"{path}: missing"
        for files in score_norm.cohort.values()
        for path in files
        if not Path(path).is_file()
    ]
    raise_problems(
        missing, f"files of the cohort {source} cannot be read", ValueError
    )


def _check_overlap(overlap, refuse, source):
    """Warn of (or refuse) cohort speakers and files that are in a list."""
    problems = []
    for name, found in overlap.items():
        speakers, files = found["speakers"], found["files"]
        if speakers or files:
            shown = ", ".join(speakers[:5]) + (
                ", ..." if len(speakers) > 5 else ""
            )
            problems.append(
                f"{name}: {len(speakers)} cohort speakers are speakers of "
                f"the list{f' ({shown})' if shown else ''}, {files} cohort "
                "files are its files"
            )
    what = (
        f"trial lists share speakers or files with the cohort {source} "
        "(a cohort of other speakers, e.g. VoxCeleb2's, has none)"
    )
    if refuse:
        raise_problems(problems, what + "; refuse_cohort_overlap is True")
    if problems:
        logger.warning(
            "%d %s:\n  %s", len(problems), what, "\n  ".join(problems)
        )


def score_lists(checked, embeddings, cohort=None, top_k=None):
    """Score each list against one table of embeddings of all its files;
    the cohort statistics are computed once, for every file.

    Arguments
    ---------
    checked : dataio.trial_lists.TrialLists
    embeddings : torch.Tensor
        (len(checked.files), dim) one row per file.
    cohort : torch.Tensor or None
        (speakers, dim) cohort embeddings; None: no normalisation.
    top_k : int or None
        AS-norm's top scores per file; None: s-norm.

    Returns
    -------
    scored : list of (torch.Tensor, torch.Tensor)
        The raw cosine scores of each list, and its normalised scores (the
        raw ones again without a cohort).

    Example
    -------
    >>> from speechbrain_mrmha.dataio.trial_lists import CheckedList, TrialLists
    >>> rows = lambda *r: np.array(r, dtype=np.int32)
    >>> lists = TrialLists([CheckedList("a", "a", None, rows(0), rows(1), 0),
    ...     CheckedList("b", "b", None, rows(1, 0), rows(2, 2), 0)], [], None)
    >>> table = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    >>> [raw.tolist() for raw, _ in score_lists(lists, table)]
    [[0.7071067690849304], [0.7071067690849304, 0.0]]
    """
    statistics = None
    if cohort is not None:
        statistics = cohort_statistics(embeddings, cohort, top_k=top_k)
    scored = []
    for checked_list in checked.lists:
        enrol = torch.from_numpy(checked_list.enrol)
        test = torch.from_numpy(checked_list.test)
        raw = cosine_score_trials(embeddings, enrol, test)
        scores = raw
        if statistics is not None:
            scores = normalize_scores(raw, enrol, test, *statistics)
        scored.append((raw, scores))
    return scored


def _llrs(model, checked_list, durations, raw, scores, method):
    """The LLRs of a list's trials, which calibration gave them, and
    whether it was the model's: its calibration of the raw cosine scores,
    else the scores as they are."""
    if model.calibration is None:
        return scores, "none: the pretrained folder has no calibration.json"
    if method is not None:
        return (
            scores,
            f"none: calibration.json is of raw cosine scores, not {method} "
            "scores",
        )
    seconds = torch.from_numpy(
        np.stack(
            [durations[checked_list.enrol], durations[checked_list.test]],
            axis=1,
        )
    )
    return model.llr(raw, seconds), model.calibration_source


def list_metrics(
    model, checked_list, durations, raw, scores, method, c_miss, c_fa
):
    """The metrics of one list: ``detection_report`` of its scores, which
    calibration gave the LLRs and their ``calibration_report``, and
    ``Cllr_raw_cosine`` (raw cosines taken as LLRs: what calibration
    improves on).

    Arguments
    ---------
    model : SpeakerModel
        Its calibration maps raw cosine scores to LLRs.
    checked_list : dataio.trial_lists.CheckedList
    durations : numpy.ndarray
        Seconds of each file of the table (a calibration may use them).
    raw, scores : torch.Tensor
        (n_trials,) raw cosine and reported scores.
    method : str or None
        The score normalisation of ``scores``.
    c_miss, c_fa : float

    Returns
    -------
    metrics : dict

    Example
    -------
    >>> from types import SimpleNamespace
    >>> from speechbrain_mrmha.dataio.trials import Trial, TrialList
    >>> from speechbrain_mrmha.dataio.trial_lists import CheckedList
    >>> trials = TrialList.from_trials([Trial(1, "a", "b"), Trial(0, "a", "c")])
    >>> one = CheckedList("l", "l", trials, trials.enrol, trials.test, 0)
    >>> raw = torch.tensor([0.8, 0.1])
    >>> m = list_metrics(SimpleNamespace(calibration=None), one, None, raw,
    ...                  raw, None, 1.0, 1.0)
    >>> m["EER"], m["n_trials"], m["calibration"].split(":")[0]
    (0.0, 2, 'none')
    """
    labels = torch.from_numpy(checked_list.trials.labels != 0)
    metrics = detection_report(scores[labels], scores[~labels], c_miss, c_fa)
    llrs, metrics["calibration"] = _llrs(
        model, checked_list, durations, raw, scores, method
    )
    metrics.update(
        calibration_report(llrs[labels], llrs[~labels], c_miss, c_fa)
    )
    metrics["Cllr_raw_cosine"] = round(cllr(raw[labels], raw[~labels]), 4)
    return metrics


def _display(name):
    """A list's name in the table: with the paper's name when known."""
    known = VOXCELEB1_LISTS.get(name)
    return f"{name} ({known})" if known else name


def results_table(results):
    """The Markdown table of ``results.json``: a row per list; trials, EER
    (%), minDCF, actDCF, Cllr, each raw and normalised under score
    normalisation.

    Arguments
    ---------
    results : dict
        ``lists`` (name -> metrics, with ``raw`` metrics under score
        normalisation) and ``score_norm``.

    Returns
    -------
    table : str

    Example
    -------
    >>> m = {"n_trials": 4, "EER": 2.5, "minDCF": 0.2, "actDCF": 0.3,
    ...      "Cllr": 0.4, "calibration": "none"}
    >>> results = {"score_norm": None, "lists": {"veri_test2.txt": m}}
    >>> print(results_table(results))  # doctest: +ELLIPSIS
    | trial list | trials | EER (%) | minDCF | actDCF | Cllr |
    |---|---|---|---|---|---|
    | veri_test2.txt (Vox1-O) | 4 | 2.5 | 0.2 | 0.3 | 0.4 |
    <BLANKLINE>
    minDCF and actDCF at p_target 0.01, normalised; ...
    """
    method = results.get("score_norm")
    header = ["trial list", "trials"]
    for _, label in COLUMNS:
        header += (
            [label] if method is None else [f"{label} raw", f"{label} {method}"]
        )
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    calibration = None
    for name, metrics in results["lists"].items():
        cells = [_display(name), metrics["n_trials"]]
        for key, _ in COLUMNS:
            if method is not None:
                cells.append(metrics["raw"][key])
            cells.append(metrics[key])
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        calibration = metrics["calibration"]
    lines += [
        "",
        "minDCF and actDCF at p_target 0.01, normalised; actDCF and Cllr of "
        f"log-likelihood ratios (calibration: {calibration}).",
    ]
    return "\n".join(lines) + "\n"


def _embed(
    model, checked, cohort_files, cache, batch_seconds, max_batch_size, progress
):
    """Every file of the lists and the cohort embedded in one call."""
    durations = dict(cohort_files)
    durations.update(zip(checked.files, checked.durations.tolist()))
    before = len(cache.embeddings)
    embedded = model.embed_files(
        list(durations),
        durations,
        cache,
        batch_seconds,
        max_batch_size,
        progress=progress,
    )
    return embedded, len(cache.embeddings) - before


def _cohort(score_norm, embeddings):
    """The cohort (each speaker's mean embedding) and AS-norm's top_k."""
    if score_norm is None:
        return None, None
    cohort = torch.stack(
        [
            torch.stack([embeddings[path] for path in files]).mean(dim=0)
            for files in score_norm.cohort.values()
        ]
    )
    if score_norm.method == "s-norm":
        return cohort, None
    return cohort, min(score_norm.top_k, cohort.shape[0])


def _report(model, checked, checked_list, raw, scores, method, c_miss, c_fa):
    """A list's metrics, its counts and file; those of its raw cosine
    scores too under score normalisation."""
    metrics = list_metrics(
        model,
        checked_list,
        checked.durations,
        raw,
        scores,
        method,
        c_miss,
        c_fa,
    )
    metrics.update(
        n_duplicate_trials=checked_list.duplicates,
        n_files=len(checked_list.files()),
        verification_file=checked_list.path,
        verification_file_sha256=content_digest(checked_list.path),
    )
    if method is not None:
        metrics["raw"] = list_metrics(
            model,
            checked_list,
            checked.durations,
            raw,
            raw,
            None,
            c_miss,
            c_fa,
        )
    return metrics


def _entropy(entropies, checked, checked_list):
    """Mean attention entropy per head over a list's files (in file name
    order, in float64: the same whatever other lists the run scores)."""
    rows = checked_list.files().tolist()
    names = sorted(checked.files[row] for row in rows)
    entropy = torch.stack([entropies[name] for name in names]).double()
    return [round(float(e), 4) for e in entropy.mean(dim=0)]


def _record(model, results, checked, scored, calibrated, method):
    """The model's threshold (raw cosine scores of the first list) and its
    card (every list); a folder that cannot be written is a warning."""
    first, (raw, _) = checked.lists[0], scored[0]
    labels = torch.from_numpy(first.trials.labels != 0)
    model.record_threshold(raw[labels], raw[~labels], first.path)
    keys = ["EER", "minDCF"] + (["actDCF", "Cllr"] if calibrated else [])
    card = {}
    for name, metrics in results["lists"].items():
        shown = name if method is None else f"{name} ({method})"
        card[shown] = {key: metrics[key] for key in keys}
        card[shown]["trials"] = metrics["n_trials"]
    try:
        write_model_card(model.source, results=card)
    except OSError as error:
        logger.warning(
            "the model card was not updated in %s (%s)", model.source, error
        )


def verify_trial_lists(
    model,
    trial_lists,
    data_folder,
    output_folder,
    score_norm=None,
    enrol_data=None,
    test_data=None,
    allow_outside_data_folder=False,
    refuse_cohort_overlap=False,
    c_miss=1.0,
    c_fa=1.0,
    batch_seconds=None,
    max_batch_size=64,
    record_in_model=True,
    progress=False,
):
    """Score several trial lists in one run, each file embedded once (see
    the module's description for what is written where).

    Arguments
    ---------
    model : SpeakerModel
    trial_lists : sequence of str or Path
        Trial lists (``label enrol test`` lines); their file names differ.
    data_folder : str or Path
        Where the trial entries are (``trials.resolve_trials``).
    output_folder : str or Path
        Where the embedding cache (``embeddings.pt``), the scores and the
        results go.
    score_norm : ScoreNorm or None
        Score normalisation and its cohort; None: raw cosine scores.
    enrol_data, test_data : str or Path, optional
        Annotation CSVs whose IDs the enrolment / test entries are.
    allow_outside_data_folder : bool
        Read trial entries outside the data folder.
    refuse_cohort_overlap : bool
        Refuse, before any embedding, a cohort whose speakers or files are
        in a list (default: a warning, and a count in the results).
    c_miss, c_fa : float
        DCF costs.
    batch_seconds, max_batch_size, progress
        See ``SpeakerModel.embed_files``.
    record_in_model : bool
        Record the threshold and the results in the model's folder.

    Returns
    -------
    verified : Verified

    Example
    -------
    >>> import tempfile, soundfile, torch
    >>> from speechbrain_mrmha.inference.model import SpeakerModel
    >>> from speechbrain_mrmha.inference.pretrained import example_folder
    >>> data = Path(tempfile.mkdtemp())
    >>> gen = torch.Generator().manual_seed(0)
    >>> for name in ("a/v/1", "a/v/2", "b/v/1", "b/v/2"):
    ...     (data / name).parent.mkdir(parents=True, exist_ok=True)
    ...     wav = 0.1 * torch.randn(16000, generator=gen)
    ...     soundfile.write(data / f"{name}.wav", wav.numpy(), 16000)
    >>> _ = (data / "o.txt").write_text(
    ...     "1 a/v/1.wav a/v/2.wav\\n0 a/v/1.wav b/v/1.wav\\n")
    >>> _ = (data / "e.txt").write_text(
    ...     "1 b/v/1.wav b/v/2.wav\\n0 a/v/2.wav b/v/2.wav\\n")
    >>> model = SpeakerModel(example_folder())
    >>> verified = verify_trial_lists(
    ...     model, [data / "o.txt", data / "e.txt"], data, data / "out",
    ...     record_in_model=False)
    >>> verified.n_files, verified.n_embedded  # 4 files, each once
    (4, 4)
    >>> [item.name for item in verified.lists]
    ['o.txt', 'e.txt']
    """
    output = Path(output_folder)
    _check(score_norm)
    method = None if score_norm is None else score_norm.method
    checked = load_trial_lists(
        trial_lists,
        data_folder,
        enrol_data,
        test_data,
        allow_outside_data_folder,
    )
    cohort_files, overlap = {}, None
    if score_norm is not None:
        cohort_files = {
            path: seconds
            for files in score_norm.cohort.values()
            for path, seconds in files.items()
        }
        overlap = cohort_overlap(checked, score_norm.cohort)
        _check_overlap(overlap, refuse_cohort_overlap, score_norm.source)

    # embeddings are cached by audio content, for this model content, data
    # folder and precision: any other starts afresh
    cache = model.cache(output / CACHE_FILE, data_folder)
    embedded, n_embedded = _embed(
        model,
        checked,
        cohort_files,
        cache,
        batch_seconds,
        max_batch_size,
        progress,
    )
    table = torch.stack([embedded.embeddings[p] for p in checked.files])
    cohort, top_k = _cohort(score_norm, embedded.embeddings)
    scored = score_lists(checked, table, cohort, top_k)
    del table

    record = {
        "score_norm": method,
        "precision": model.precision,
        "data_folder": str(Path(data_folder).resolve()),
        "pretrained_path": str(model.source),
    }
    lists, results = [], {"lists": {}, **record}
    for checked_list, (raw, scores) in zip(checked.lists, scored):
        metrics = _report(
            model, checked, checked_list, raw, scores, method, c_miss, c_fa
        )
        metrics.update(record)
        if embedded.entropies:
            metrics["entropy_per_head"] = _entropy(
                embedded.entropies, checked, checked_list
            )
        if overlap is not None:
            metrics["cohort_overlap"] = overlap[checked_list.name]
        stem = Path(checked_list.name).stem
        name = "scores.txt" if len(scored) == 1 else f"scores_{stem}.txt"
        write_scores(output / name, checked_list.trials, scores)
        results["lists"][checked_list.name] = metrics
        lists.append(
            ListResult(checked_list.name, metrics, raw, scores, output / name)
        )
    if score_norm is not None:
        results["cohort"] = {
            "source": score_norm.source,
            "speakers": len(score_norm.cohort),
            "files": len(cohort_files),
            "top_k": top_k,
        }
    results.update(n_files=len(checked.files), n_cohort_files=len(cohort_files))
    if len(lists) == 1:  # what the single-list recipe always wrote
        write_text_atomic(
            output / "metrics.json",
            json.dumps(lists[0].metrics, indent=2) + "\n",
        )
    write_text_atomic(
        output / RESULTS_JSON, json.dumps(results, indent=2) + "\n"
    )
    write_text_atomic(output / RESULTS_MD, results_table(results))
    if record_in_model:
        calibrated = model.calibration is not None and method is None
        _record(model, results, checked, scored, calibrated, method)
    return Verified(
        lists,
        results,
        len(checked.files),
        len(cohort_files),
        n_embedded,
        cache.path,
    )
