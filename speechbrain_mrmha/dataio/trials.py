"""Reading and writing speaker-verification trial lists and score files.

The official VoxCeleb trial lists (``veri_test.txt``, ``veri_test2.txt`` and
the VoxCeleb1-E / VoxCeleb1-H lists ``list_test_all2.txt`` /
``list_test_hard2.txt``) hold one trial per line::

    label enrol test

with ``label`` 1 (target: same speaker) or 0 (non-target) and ``enrol`` /
``test`` paths relative to the ``wav`` folder, e.g.
``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav``.

A score file (``scores.txt`` of the verification recipe) holds one scored
trial per line::

    enrol test score label

Both parsers accept a UTF-8 byte-order mark at the start of the file (as
some Windows editors write) and report bad lines by file and line number;
both writers replace the file atomically (``audio.write_text_atomic``).

A trial entry names an audio file (``resolve_trials``): a path under the
data folder, with or without a ``wav/`` level and with or without
``.wav`` (VoxCeleb1's ``id10270/x6uYqmx31kE/00001.wav``, SpeechBrain's
sample ``spk1_snt1``), or an ID of an annotation CSV. Every entry that is
missing, ambiguous, unreadable or too short is listed in one error before
any audio is decoded. ``cohort_utterances`` picks the cohort of score
normalisation from an annotation CSV.

Authors
 * speechbrain_mrmha contributors
"""

import math
import os
from pathlib import Path
from typing import NamedTuple

import torch

from speechbrain_mrmha.dataio.annotation import read_annotation
from speechbrain_mrmha.dataio.audio import (
    MIN_SECONDS,
    audio_seconds,
    write_text_atomic,
)
from speechbrain_mrmha.dataio.problems import raise_problems

__all__ = [
    "Trial",
    "read_trials",
    "write_trials",
    "trial_files",
    "trial_labels",
    "TrialScores",
    "read_scores",
    "write_scores",
    "entry_candidates",
    "lookup_entries",
    "resolve_entries",
    "resolve_trials",
    "cohort_utterances",
]


class Trial(NamedTuple):
    """One verification trial: a label and two utterance paths.

    Arguments
    ---------
    label : int
        1 for a target trial (same speaker), 0 for a non-target trial.
    enrol : str
        Path of the enrolment utterance, relative to the ``wav`` folder.
    test : str
        Path of the test utterance, relative to the ``wav`` folder.

    Example
    -------
    >>> t = Trial(1, "id10270/a/00001.wav", "id10270/b/00002.wav")
    >>> t.label, t.enrol.split("/")[0]
    (1, 'id10270')
    """

    label: int
    enrol: str
    test: str


def read_trials(path) -> list[Trial]:
    """Parse a trial list in the official VoxCeleb ``label enrol test`` form.

    Fields may be separated by any whitespace; blank lines are ignored.

    Arguments
    ---------
    path : str or os.PathLike
        The trial list file.

    Returns
    -------
    list of Trial
        The trials in file order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a line does not have three fields, a label is not 0 or 1, or the
        file holds no trial; the message names the file and the line number.

    Example
    -------
    >>> import tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> f = os.path.join(tmp, "veri_test2.txt")
    >>> with open(f, "w") as fh:
    ...     _ = fh.write("1 id1/a/00001.wav id1/b/00001.wav\\n"
    ...                  "0 id1/a/00001.wav id2/c/00003.wav\\n")
    >>> trials = read_trials(f)
    >>> [t.label for t in trials], trials[1].test
    ([1, 0], 'id2/c/00003.wav')
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"trial list {path!r} does not exist")
    trials = []
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise ValueError(
                    f"{path}:{number}: expected 'label enrol test' (3 fields), "
                    f"got {len(fields)}: {line.strip()!r}"
                )
            if fields[0] not in ("0", "1"):
                raise ValueError(
                    f"{path}:{number}: label must be 0 or 1, got {fields[0]!r}"
                )
            trials.append(Trial(int(fields[0]), fields[1], fields[2]))
    if not trials:
        raise ValueError(f"trial list {path!r} holds no trial (empty file)")
    return trials


def write_trials(path, trials):
    """Write trials in the official ``label enrol test`` form, atomically.

    Arguments
    ---------
    path : str or os.PathLike
        Destination file; written to a temporary file in the same folder
        first, then renamed into place.
    trials : iterable of Trial
        The trials to write.

    Returns
    -------
    int
        The number of trials written.

    Example
    -------
    >>> import tempfile
    >>> f = os.path.join(tempfile.mkdtemp(), "trials.txt")
    >>> write_trials(f, [Trial(0, "id1/a/00001.wav", "id2/b/00001.wav")])
    1
    >>> read_trials(f)[0].label
    0
    """
    lines = [f"{int(t.label)} {t.enrol} {t.test}\n" for t in trials]
    write_text_atomic(path, "".join(lines))
    return len(lines)


def trial_files(trials) -> list[str]:
    """The unique utterance paths of a trial list, in order of first use.

    Arguments
    ---------
    trials : iterable of Trial
        Trials as returned by :func:`read_trials`.

    Returns
    -------
    list of str
        Each enrolment or test path once.

    Example
    -------
    >>> trials = [Trial(1, "s1/a/1.wav", "s1/b/2.wav"),
    ...           Trial(0, "s1/a/1.wav", "s2/c/1.wav")]
    >>> trial_files(trials)
    ['s1/a/1.wav', 's1/b/2.wav', 's2/c/1.wav']
    """
    seen = {}
    for t in trials:
        seen.setdefault(t.enrol, None)
        seen.setdefault(t.test, None)
    return list(seen)


def trial_labels(trials):
    """The labels of trials as a boolean tensor (True: same speaker).

    Arguments
    ---------
    trials : iterable of Trial

    Returns
    -------
    labels : torch.Tensor
        (n_trials,) bool.

    Example
    -------
    >>> trial_labels([Trial(1, "a", "b"), Trial(0, "a", "c")])
    tensor([ True, False])
    """
    return torch.tensor([t.label for t in trials], dtype=torch.bool)


class TrialScores(NamedTuple):
    """Scores of target and non-target trials.

    Arguments
    ---------
    positive : torch.Tensor
        1-D float64 scores of target (same-speaker) trials.
    negative : torch.Tensor
        1-D float64 scores of non-target trials.

    Example
    -------
    >>> TrialScores(torch.tensor([0.9]), torch.tensor([0.1, 0.2])).negative.shape
    torch.Size([2])
    """

    positive: torch.Tensor
    negative: torch.Tensor


def read_scores(path):
    """Read a score file of ``enrol test score label`` lines.

    ``label`` is 1 for a target (same speaker) trial and 0 otherwise, as
    written by ``write_scores``. Blank lines are ignored.

    Arguments
    ---------
    path : str or Path
        The score file.

    Returns
    -------
    scores : TrialScores
        ``positive`` (target) and ``negative`` (non-target) float64 scores.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a line does not have four fields, a score is not a finite number,
        a label is not 0 or 1, or either kind of trial is missing; the
        message names the file (and the line).

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "scores.txt"
    >>> _ = path.write_text("a.wav b.wav 0.8 1\\na.wav c.wav 0.1 0\\nb.wav c.wav 0.3 0\\n")
    >>> read_scores(path).negative
    tensor([0.1000, 0.3000], dtype=torch.float64)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score file {path} does not exist")
    positive, negative = [], []
    with open(path, encoding="utf-8-sig") as fin:
        for number, line in enumerate(fin, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}, line {number}"
            if len(fields) != 4:
                raise ValueError(
                    f"{where}: expected 4 fields 'enrol test score label', got {len(fields)}"
                )
            try:
                score = float(fields[2])
            except ValueError:
                raise ValueError(
                    f"{where}: score {fields[2]!r} is not a number"
                ) from None
            if not math.isfinite(score):
                raise ValueError(f"{where}: score {fields[2]!r} is not finite")
            if fields[3] not in ("0", "1"):
                raise ValueError(
                    f"{where}: label {fields[3]!r} must be 1 (target) or 0"
                )
            (positive if fields[3] == "1" else negative).append(score)
    if not positive or not negative:
        raise ValueError(
            f"{path}: needs both target (label 1) and non-target (label 0) trials, "
            f"got {len(positive)} and {len(negative)}"
        )
    return TrialScores(
        torch.tensor(positive, dtype=torch.float64),
        torch.tensor(negative, dtype=torch.float64),
    )


def write_scores(path, trials, scores):
    """Write scored trials as ``enrol test score label`` lines (score with
    six decimals), atomically.

    Arguments
    ---------
    path : str or os.PathLike
        Destination file.
    trials : sequence of Trial
        The trials, in the order of ``scores``.
    scores : sequence of float or torch.Tensor
        One finite score per trial.

    Returns
    -------
    int
        The number of lines written.

    Example
    -------
    >>> import tempfile
    >>> f = os.path.join(tempfile.mkdtemp(), "scores.txt")
    >>> trials = [Trial(1, "s1/a/1.wav", "s1/b/2.wav"), Trial(0, "s1/a/1.wav", "s2/c/1.wav")]
    >>> write_scores(f, trials, torch.tensor([0.75, -0.125]))
    2
    >>> open(f).readline()
    's1/a/1.wav s1/b/2.wav 0.750000 1\\n'
    >>> read_scores(f).negative
    tensor([-0.1250], dtype=torch.float64)
    """
    trials = list(trials)
    scores = [float(s) for s in scores]
    if len(scores) != len(trials):
        raise ValueError(
            f"{os.fspath(path)}: {len(scores)} scores for {len(trials)} trials"
        )
    lines = []
    for t, score in zip(trials, scores):
        if not math.isfinite(score):
            raise ValueError(
                f"{os.fspath(path)}: score {score} of trial "
                f"{t.enrol} {t.test} is not finite"
            )
        lines.append(f"{t.enrol} {t.test} {score:.6f} {int(t.label)}\n")
    write_text_atomic(path, "".join(lines))
    return len(lines)


def entry_candidates(entry, data_folder):
    """Where a trial entry may be: under ``data_folder`` or
    ``data_folder/wav``, as written or with ".wav" added.

    Arguments
    ---------
    entry : str
        A trial entry, e.g. ``id10270/x6uYqmx31kE/00001.wav`` or ``spk1_snt1``.
    data_folder : str or Path

    Returns
    -------
    paths : list of Path
        In the order they are tried.

    Example
    -------
    >>> [str(p) for p in entry_candidates("spk1_snt1", "/data")]
    ['/data/spk1_snt1', '/data/spk1_snt1.wav', '/data/wav/spk1_snt1', '/data/wav/spk1_snt1.wav']
    """
    data_folder = Path(data_folder)
    names = [entry] if entry.endswith(".wav") else [entry, entry + ".wav"]
    return [
        folder / name
        for folder in (data_folder, data_folder / "wav")
        for name in names
    ]


def lookup_entries(entries, data_folder, annotation=None):
    """The audio path and duration of each trial entry found, and the
    problems of the others.

    Arguments
    ---------
    entries : iterable of str
        Trial entries (repeats are looked up once).
    data_folder : str or Path
        Where the entries are (``entry_candidates``); replaces
        ``$data_root`` in the annotation.
    annotation : str or Path, optional
        An annotation CSV with ``ID``, ``duration`` and ``wav``: the entries
        are then its IDs (with or without ".wav"), and durations come from
        it instead of the audio headers.

    Returns
    -------
    found : dict
        entry -> (audio path, duration in seconds).
    problems : list of str
        One line per entry that is missing, ambiguous (found both with and
        without the ``wav/`` level), unreadable, or shorter than
        ``audio.MIN_SECONDS``.

    Example
    -------
    >>> import tempfile, soundfile
    >>> data = Path(tempfile.mkdtemp())
    >>> soundfile.write(data / "a.wav", torch.zeros(16000).numpy(), 16000)
    >>> found, problems = lookup_entries(["a", "b"], data)
    >>> found["a"][1], problems[0].split(" (")[0]
    (1.0, 'b: missing')
    """
    rows = None
    if annotation is not None:
        rows = read_annotation(
            annotation, data_folder, columns=("ID", "duration", "wav")
        )
    found, problems = {}, []
    for entry in dict.fromkeys(entries):
        if rows is not None:
            key = entry if entry in rows else entry.removesuffix(".wav")
            if key not in rows:
                problems.append(f"{entry}: no ID {key!r} in {annotation}")
            elif rows[key]["duration"] < MIN_SECONDS:
                problems.append(
                    f"{entry}: {rows[key]['wav']}: audio too short "
                    f"({rows[key]['duration']:.2f} s in {annotation}, need "
                    f"at least {MIN_SECONDS} s)"
                )
            else:
                found[entry] = (rows[key]["wav"], rows[key]["duration"])
            continue
        candidates = entry_candidates(entry, data_folder)
        paths = [p for p in candidates if p.is_file()]
        if not paths:
            problems.append(
                f"{entry}: missing (looked for "
                f"{', '.join(map(str, candidates))})"
            )
        elif len({p.resolve() for p in paths}) > 1:
            problems.append(
                f"{entry}: ambiguous ({', '.join(map(str, paths))})"
            )
        else:
            try:
                found[entry] = (str(paths[0]), audio_seconds(paths[0]))
            except ValueError as error:  # names the file
                problems.append(str(error))
    return found, problems


def resolve_entries(entries, data_folder, annotation=None):
    """The audio path and duration of every trial entry, or one
    FileNotFoundError listing every entry that cannot be read
    (``lookup_entries``).

    Arguments
    ---------
    entries : iterable of str
    data_folder : str or Path
    annotation : str or Path, optional
        See ``lookup_entries``.

    Returns
    -------
    found : dict
        entry -> (audio path, duration in seconds).

    Example
    -------
    >>> resolve_entries(["x", "y"], "/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: 2 trial entries cannot be read:
      x: missing (looked for /nonexistent/x, ...)
      y: missing (looked for /nonexistent/y, ...)
    """
    found, problems = lookup_entries(entries, data_folder, annotation)
    raise_problems(problems, "trial entries cannot be read", FileNotFoundError)
    return found


def resolve_trials(
    trials, data_folder, enrol_annotation=None, test_annotation=None
):
    """The audio path and duration of the enrolment and test entries of
    trials; one FileNotFoundError lists every entry of either side that
    cannot be read.

    Arguments
    ---------
    trials : iterable of Trial
    data_folder : str or Path
    enrol_annotation, test_annotation : str or Path, optional
        Annotation CSVs whose IDs the enrolment / test entries are (see
        ``lookup_entries``); None: the entries are files.

    Returns
    -------
    enrol, test : dict
        entry -> (audio path, duration in seconds), for each side.

    Example
    -------
    >>> import tempfile, soundfile
    >>> data = Path(tempfile.mkdtemp())
    >>> for name in ("a", "b"):
    ...     soundfile.write(data / f"{name}.wav", torch.zeros(8000).numpy(), 16000)
    >>> enrol, test = resolve_trials([Trial(0, "a", "b")], data)
    >>> enrol["a"][1], test["b"][1]
    (0.5, 0.5)
    """
    trials = list(trials)
    enrol, bad_enrol = lookup_entries(
        [t.enrol for t in trials], data_folder, enrol_annotation
    )
    test, bad_test = lookup_entries(
        [t.test for t in trials], data_folder, test_annotation
    )
    raise_problems(
        list(dict.fromkeys(bad_enrol + bad_test)),
        "trial entries cannot be read",
        FileNotFoundError,
    )
    return enrol, test


def cohort_utterances(annotation, data_folder, per_speaker):
    """The cohort of score normalisation: the first ``per_speaker``
    utterances of each speaker of an annotation CSV.

    Arguments
    ---------
    annotation : str or Path
        A CSV with ``ID``, ``duration``, ``wav`` and ``spk_id``.
    data_folder : str or Path
        Replaces ``$data_root``.
    per_speaker : int
        Most utterances per speaker, in file order.

    Returns
    -------
    cohort : dict
        speaker -> {audio path: duration in seconds}, speakers in file
        order.

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
    >>> cohort = cohort_utterances(folder / "train.csv", folder, 1)
    >>> {speaker: list(files.values()) for speaker, files in cohort.items()}
    {'s1': [1.0], 's2': [3.0]}
    """
    if per_speaker < 1:
        raise ValueError(
            f"{annotation}: utterances per cohort speaker must be >= 1, got "
            f"{per_speaker}"
        )
    cohort = {}
    for row in read_annotation(annotation, data_folder).values():
        files = cohort.setdefault(row["spk_id"], {})
        if len(files) < per_speaker:
            files[row["wav"]] = row["duration"]
    return cohort
