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
both writers replace the file atomically (``files.atomic_write``).

A list of any size is held compactly (``load_trials`` -> ``TrialList``:
each entry once, the trials as int32 / int8 arrays) and ``write_scores``
streams its lines, so three million trials stay far below a gigabyte.
``check_trials`` refuses, before any embedding, a list of one class and
pairs labelled both 1 and 0, and reports duplicate trials.

A trial entry names an audio file (``resolve_trials``): a path under the
data folder, with or without a ``wav/`` level and with or without
``.wav`` (VoxCeleb1's ``id10270/x6uYqmx31kE/00001.wav``, SpeechBrain's
sample ``spk1_snt1``), or an ID of an annotation CSV. Entries outside the
data folder (absolute, or with ``..``) are refused unless allowed
explicitly (``outside_entries``). Every entry that is
missing, ambiguous, unreadable or too short is listed in one error before
any audio is decoded. ``cohort_utterances`` picks the cohort of score
normalisation from an annotation CSV.

Authors
 * speechbrain_mrmha contributors
"""

import logging
import math
import os
from array import array
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import NamedTuple

import numpy as np
import torch

from speechbrain_mrmha.dataio.annotation import read_annotation
from speechbrain_mrmha.dataio.audio import MIN_SECONDS, audio_seconds
from speechbrain_mrmha.dataio.files import atomic_write, write_text_atomic
from speechbrain_mrmha.dataio.problems import list_problems, raise_problems

logger = logging.getLogger(__name__)
_LABELS = {"0": 0, "1": 1}
_SHOWN_TRIALS = 5  # trial numbers shown per conflicting / duplicate pair
_MAX_BAD_LINES = 1000  # a file with more is not a trial list: stop there

__all__ = [
    "Trial",
    "TrialList",
    "TrialCheck",
    "as_trial_list",
    "load_trials",
    "read_trials",
    "check_trials",
    "outside_entries",
    "refuse_outside_entries",
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


@dataclass(frozen=True, eq=False)
class TrialList:
    """A trial list held compactly: each entry once, the trials as arrays.

    Three million trials over 145,000 files take about 27 MB here, against
    gigabytes as Python tuples of strings.

    Arguments
    ---------
    names : list of str
        Each entry once, in order of first use (enrolment side first within
        a trial); after ``resolve_trials`` the audio files instead.
    enrol : numpy.ndarray
        (n_trials,) int32 row of each trial's enrolment entry in ``names``.
    test : numpy.ndarray
        (n_trials,) int32 row of each trial's test entry in ``names``.
    labels : numpy.ndarray
        (n_trials,) int8, 1 for a target trial and 0 for a non-target one.
    source : str
        The file it was read from (what errors name); "" when built in
        memory.
    durations : numpy.ndarray or None
        (len(names),) float64 seconds of each audio file, after
        ``resolve_trials``; None before.

    Example
    -------
    >>> trials = TrialList.from_trials(
    ...     [Trial(1, "a", "b"), Trial(0, "a", "c")], source="t.txt")
    >>> len(trials), trials.names, trials.enrol.dtype, trials.labels.tolist()
    (2, ['a', 'b', 'c'], dtype('int32'), [1, 0])
    >>> trials.trial(1)
    Trial(label=0, enrol='a', test='c')
    """

    names: list
    enrol: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    source: str = ""
    durations: np.ndarray | None = None

    def __len__(self):
        """The number of trials."""
        return int(self.labels.shape[0])

    def trial(self, index):
        """The trial at ``index`` as a ``Trial`` of its names.

        Arguments
        ---------
        index : int

        Returns
        -------
        trial : Trial

        Example
        -------
        >>> TrialList.from_trials([Trial(1, "a", "b")]).trial(0).test
        'b'
        """
        return Trial(
            int(self.labels[index]),
            self.names[self.enrol[index]],
            self.names[self.test[index]],
        )

    def trials(self):
        """Every trial as a ``Trial`` (a list: only for small lists).

        Returns
        -------
        trials : list of Trial

        Example
        -------
        >>> TrialList.from_trials([Trial(0, "a", "b")]).trials()
        [Trial(label=0, enrol='a', test='b')]
        """
        names = self.names
        return [
            Trial(label, names[e], names[t])
            for label, e, t in zip(
                self.labels.tolist(), self.enrol.tolist(), self.test.tolist()
            )
        ]

    @classmethod
    def from_trials(cls, trials, source=""):
        """The compact form of trials given one by one.

        Arguments
        ---------
        trials : iterable of Trial
        source : str
            What errors name.

        Returns
        -------
        trials : TrialList

        Example
        -------
        >>> TrialList.from_trials([Trial(1, "x", "x")]).names
        ['x']
        """
        rows = {}
        enrol, test, labels = array("i"), array("i"), array("b")
        for label, e, t in trials:
            labels.append(int(label))
            enrol.append(rows.setdefault(e, len(rows)))
            test.append(rows.setdefault(t, len(rows)))
        return cls(
            list(rows),
            np.frombuffer(enrol, dtype=np.int32),
            np.frombuffer(test, dtype=np.int32),
            np.frombuffer(labels, dtype=np.int8),
            str(source),
        )


def as_trial_list(trials):
    """``trials`` as a ``TrialList`` (returned as it is when it is one).

    Arguments
    ---------
    trials : TrialList or iterable of Trial

    Returns
    -------
    trials : TrialList

    Example
    -------
    >>> as_trial_list([Trial(1, "a", "b")]).test.tolist()
    [1]
    """
    if isinstance(trials, TrialList):
        return trials
    return TrialList.from_trials(trials)


def load_trials(path):
    """Parse a trial list in the official VoxCeleb ``label enrol test`` form
    into a compact ``TrialList``, streaming the file: no per-trial Python
    object is kept.

    Fields may be separated by any whitespace; blank lines are ignored.

    Arguments
    ---------
    path : str or os.PathLike
        The trial list file.

    Returns
    -------
    trials : TrialList
        The trials in file order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If lines do not have three fields or labels are not 0 or 1 (every
        such line in one error, each named by file and line number; reading
        stops after 1,000 of them), or the file holds no trial.

    Example
    -------
    >>> import tempfile
    >>> f = os.path.join(tempfile.mkdtemp(), "veri_test2.txt")
    >>> with open(f, "w") as fh:
    ...     _ = fh.write("1 id1/a/1.wav id1/b/1.wav\\n"
    ...                  "0 id1/a/1.wav id2/c/3.wav\\n")
    >>> trials = load_trials(f)
    >>> trials.names, trials.test.tolist(), trials.labels.tolist()
    (['id1/a/1.wav', 'id1/b/1.wav', 'id2/c/3.wav'], [1, 2], [1, 0])
    >>> with open(f, "a") as fh:
    ...     _ = fh.write("2 id1/a/1.wav id2/c/3.wav\\n1 id1/a/1.wav\\n")
    >>> load_trials(f)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 2 problems in trial list ...veri_test2.txt:
      ...veri_test2.txt:3: label must be 0 or 1, got '2'
      ...veri_test2.txt:4: expected 'label enrol test' (3 fields), got 2: ...
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"trial list {path!r} does not exist")
    rows = {}
    enrol, test, labels = array("i"), array("i"), array("b")
    problems = []
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                problems.append(
                    f"{path}:{number}: expected 'label enrol test' (3 fields), "
                    f"got {len(fields)}: {line.strip()!r}"
                )
            elif fields[0] not in _LABELS:
                problems.append(
                    f"{path}:{number}: label must be 0 or 1, got {fields[0]!r}"
                )
            elif not problems:  # after a bad line only the lines are checked
                labels.append(_LABELS[fields[0]])
                enrol.append(rows.setdefault(fields[1], len(rows)))
                test.append(rows.setdefault(fields[2], len(rows)))
            if len(problems) == _MAX_BAD_LINES:
                problems.append(f"{path}: stopped reading at line {number}")
                break
    raise_problems(problems, f"problems in trial list {path}")
    if not labels:
        raise ValueError(f"trial list {path!r} holds no trial (empty file)")
    return TrialList(
        list(rows),
        np.frombuffer(enrol, dtype=np.int32),
        np.frombuffer(test, dtype=np.int32),
        np.frombuffer(labels, dtype=np.int8),
        path,
    )


def read_trials(path) -> list[Trial]:
    """Parse a trial list into ``Trial`` tuples (``load_trials`` holds a
    large list compactly instead).

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
        As ``load_trials``.

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
    return load_trials(path).trials()


class TrialCheck(NamedTuple):
    """What ``check_trials`` found that is reported, not refused.

    Arguments
    ---------
    duplicates : int
        Trials that repeat an earlier trial (the same pair, in either
        order, with the same label).
    examples : list of str
        A few of them, as ``enrol test (trials i, j)``.

    Example
    -------
    >>> TrialCheck(0, []).duplicates
    0
    """

    duplicates: int
    examples: list


def _pair_groups(enrol, test):
    """Trial order sorted by unordered pair, and where each group starts."""
    low = np.minimum(enrol, test).astype(np.int64)
    high = np.maximum(enrol, test).astype(np.int64)
    keys = low * (int(max(enrol.max(), test.max())) + 1) + high
    del low, high
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return order, starts


def _show_group(trials, members):
    """``enrol test`` of a group's first trial and its 1-based numbers."""
    first = trials.trial(members[0])
    numbers = ", ".join(str(i + 1) for i in members[:_SHOWN_TRIALS])
    more = len(members) - _SHOWN_TRIALS
    return f"{first.enrol} {first.test} (trials {numbers}" + (
        f" and {more} more)" if more > 0 else ")"
    )


def check_trials(trials, enrol=None, test=None):
    """Refuse a trial list that cannot be scored, before any embedding, and
    report its duplicate trials.

    Refused, all in one ValueError naming the file: a list of one class
    only (all target or all non-target trials: no EER, no minDCF), and
    pairs labelled both 1 and 0 (a pair is the same in either order).
    Reported, with a logged warning: duplicate trials, the same pair with
    the same label again (they are kept and counted).

    Arguments
    ---------
    trials : TrialList or iterable of Trial
        The trials (their names are what the messages show).
    enrol, test : numpy.ndarray, optional
        (n_trials,) what identifies each side of a trial, e.g. the rows of
        the audio files after ``resolve_trials`` (so that ``a`` and
        ``a.wav`` are one file); default the rows of the entries.

    Returns
    -------
    check : TrialCheck
        The duplicate count and a few examples.

    Raises
    ------
    ValueError
        Naming the trial list, the missing class and every conflicting pair.

    Example
    -------
    >>> check_trials([Trial(1, "a", "b"), Trial(0, "a", "c"),
    ...               Trial(0, "c", "a")]).duplicates
    1
    >>> check_trials([Trial(1, "a", "b"), Trial(0, "b", "a")])
    Traceback (most recent call last):
    ...
    ValueError: 1 problem in trial list <in memory>:
      a b (trials 1, 2) is labelled both 1 and 0
    """
    trials = as_trial_list(trials)
    enrol = trials.enrol if enrol is None else np.asarray(enrol)
    test = trials.test if test is None else np.asarray(test)
    source = trials.source or "<in memory>"
    if len(trials) == 0:
        raise ValueError(f"trial list {source} holds no trial")
    n_target = int(np.count_nonzero(trials.labels))
    problems = []
    if n_target in (0, len(trials)):
        kind = (
            "non-target trials (label 0)"
            if n_target == 0
            else ("target trials (label 1)")
        )
        problems.append(
            f"all {len(trials)} trials are {kind}: EER and minDCF need both "
            "classes"
        )
    order, starts = _pair_groups(enrol, test)
    labels = trials.labels[order]
    lowest = np.minimum.reduceat(labels, starts)
    highest = np.maximum.reduceat(labels, starts)
    sizes = np.diff(np.r_[starts, len(order)])
    bounds = np.r_[starts, len(order)]
    conflicts = np.flatnonzero(lowest != highest)
    # a one-class list's pairs cannot conflict: the checks are independent
    for group in conflicts:
        members = np.sort(order[bounds[group] : bounds[group + 1]])
        problems.append(
            f"{_show_group(trials, members.tolist())} is labelled both 1 and 0"
        )
    raise_problems(problems, f"problems in trial list {source}")
    repeated = np.flatnonzero(sizes > 1)
    duplicates = int((sizes[repeated] - 1).sum())
    examples = [
        _show_group(
            trials,
            np.sort(order[bounds[group] : bounds[group + 1]]).tolist(),
        )
        for group in repeated[:_SHOWN_TRIALS]
    ]
    if duplicates:
        logger.warning(
            "%s: %d duplicate trials (the same pair, in either order, with "
            "the same label, scored again and counted in the metrics), e.g. "
            "%s",
            source,
            duplicates,
            "; ".join(examples),
        )
    return TrialCheck(duplicates, examples)


def outside_entries(entries):
    """The entries that name a path outside the folder they are read
    from: absolute paths (``/etc/passwd``, ``C:\\x``) and paths with a
    ``..`` component. Decided from the text alone; a symbolic link inside
    the data folder that points elsewhere (a common way to hold a corpus
    on another disk) is followed.

    Arguments
    ---------
    entries : iterable of str

    Returns
    -------
    outside : list of str
        In the order given.

    Example
    -------
    >>> outside_entries(["id1/a/1.wav", "../x.wav", "/etc/passwd", "a/../b"])
    ['../x.wav', '/etc/passwd', 'a/../b']
    """
    outside = []
    for entry in entries:
        parts = entry.replace("\\", "/").split("/")
        if (
            os.path.isabs(entry)
            or PureWindowsPath(entry).is_absolute()
            or entry[:1] in ("/", "\\")
            or ".." in parts
        ):
            outside.append(entry)
    return outside


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
    positive, negative = array("d"), array("d")  # not 3M Python floats
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
        torch.from_numpy(np.frombuffer(positive, dtype=np.float64).copy()),
        torch.from_numpy(np.frombuffer(negative, dtype=np.float64).copy()),
    )


def write_scores(path, trials, scores, chunk_size=65536):
    """Write scored trials as ``enrol test score label`` lines (score with
    six decimals), atomically and streamed: ``chunk_size`` lines at a time
    are formatted, never the whole file.

    Arguments
    ---------
    path : str or os.PathLike
        Destination file.
    trials : TrialList or sequence of Trial
        The trials, in the order of ``scores``.
    scores : torch.Tensor or sequence of float
        One finite score per trial.
    chunk_size : int
        Lines formatted at once.

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
    trials = as_trial_list(trials)
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores, dtype=torch.float64)
    scores = scores.detach().cpu().reshape(-1)
    if scores.shape[0] != len(trials):
        raise ValueError(
            f"{os.fspath(path)}: {scores.shape[0]} scores for {len(trials)} "
            "trials"
        )
    if chunk_size < 1:
        raise ValueError(
            f"write_scores: chunk_size must be >= 1, got {chunk_size}"
        )
    bad = torch.nonzero(~torch.isfinite(scores))
    if bad.numel():
        index = int(bad[0, 0])
        t = trials.trial(index)
        raise ValueError(
            f"{os.fspath(path)}: score {float(scores[index])} of trial "
            f"{t.enrol} {t.test} is not finite"
        )
    names = trials.names
    with atomic_write(path) as fout:
        for start in range(0, len(trials), chunk_size):
            stop = start + chunk_size
            rows = zip(
                trials.enrol[start:stop].tolist(),
                trials.test[start:stop].tolist(),
                scores[start:stop].tolist(),
                trials.labels[start:stop].tolist(),
            )
            fout.write(
                "".join(
                    f"{names[e]} {names[t]} {s:.6f} {label}\n"
                    for e, t, s, label in rows
                )
            )
    return len(trials)


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


def _sides(trials, enrol_annotation, test_annotation):
    """(rows, entries, annotation) of the enrolment and test sides: the
    rows of ``trials.names`` each side uses, their entries, and the
    annotation they are IDs of (None: files)."""
    sides = []
    for index, annotation in (
        (trials.enrol, enrol_annotation),
        (trials.test, test_annotation),
    ):
        used = np.zeros(len(trials.names), dtype=bool)
        used[index] = True
        rows = np.flatnonzero(used)
        sides.append((rows, [trials.names[i] for i in rows], annotation))
    return sides


def refuse_outside_entries(
    trials, data_folder, enrol_annotation=None, test_annotation=None
):
    """Refuse, in one ValueError naming the trial list, the entries read as
    files (a side without annotation) that lie outside the data folder
    (``outside_entries``); the check ``resolve_trials`` makes first.

    Arguments
    ---------
    trials : TrialList or iterable of Trial
    data_folder : str or Path
        What the message names.
    enrol_annotation, test_annotation : str or Path, optional
        The annotation CSV whose IDs a side's entries are: those entries
        are not files and are not checked.

    Raises
    ------
    ValueError
        Listing every such entry once.

    Example
    -------
    >>> refuse_outside_entries([Trial(0, "a", "/etc/passwd")], "/data")
    Traceback (most recent call last):
    ...
    ValueError: 1 entry of <in memory> outside the data folder /data (allow_outside_data_folder: True reads them):
      /etc/passwd
    >>> refuse_outside_entries([Trial(0, "a", "/etc/passwd")], "/data",
    ...                        test_annotation="test.csv")
    """
    trials = as_trial_list(trials)
    sides = _sides(trials, enrol_annotation, test_annotation)
    files = [e for _, entries, a in sides if a is None for e in entries]
    raise_problems(
        outside_entries(dict.fromkeys(files)),
        f"entries of {trials.source or '<in memory>'} outside the data "
        f"folder {data_folder} (allow_outside_data_folder: True reads them)",
    )


def resolve_trials(
    trials,
    data_folder,
    enrol_annotation=None,
    test_annotation=None,
    allow_outside_data_folder=False,
):
    """The audio files of the enrolment and test entries of trials.

    First, unless ``allow_outside_data_folder``, entries read as files
    that lie outside the data folder (``outside_entries``: absolute paths,
    ``..`` components) are refused in one ValueError, before any file is
    looked at. Then one FileNotFoundError lists every entry of either side
    that cannot be read (``lookup_entries``; an entry of both sides is
    looked up once).

    Arguments
    ---------
    trials : TrialList or iterable of Trial
    data_folder : str or Path
    enrol_annotation, test_annotation : str or Path, optional
        Annotation CSVs whose IDs the enrolment / test entries are (see
        ``lookup_entries``); None: the entries are files.
    allow_outside_data_folder : bool
        Read entries outside the data folder too.

    Returns
    -------
    resolved : TrialList
        The same trials over the audio files: ``names`` are the unique
        audio paths (in order of first use), ``enrol`` / ``test`` their
        rows, ``durations`` their seconds; the labels are shared.

    Example
    -------
    >>> import tempfile, soundfile
    >>> data = Path(tempfile.mkdtemp())
    >>> for name in ("a", "b"):
    ...     soundfile.write(data / f"{name}.wav", torch.zeros(8000).numpy(), 16000)
    >>> resolved = resolve_trials([Trial(0, "a", "b.wav"), Trial(1, "b", "b")], data)
    >>> [Path(n).name for n in resolved.names], resolved.test.tolist()
    (['a.wav', 'b.wav'], [1, 1])
    >>> resolved.durations.tolist()
    [0.5, 0.5]
    >>> resolve_trials([Trial(0, "a", "../../etc/passwd")], data)
    Traceback (most recent call last):
    ...
    ValueError: 1 entry of <in memory> outside the data folder ... (allow_outside_data_folder: True reads them):
      ../../etc/passwd
    """
    trials = as_trial_list(trials)
    sides = _sides(trials, enrol_annotation, test_annotation)
    if not allow_outside_data_folder:
        refuse_outside_entries(
            trials, data_folder, enrol_annotation, test_annotation
        )
    problems, looked_up, known = [], [], {}
    for rows, entries, annotation in sides:
        # an entry of both sides (of one annotation) is looked up once
        key = None if annotation is None else os.fspath(annotation)
        found = known.setdefault(key, {})
        new, bad = lookup_entries(
            [e for e in entries if e not in found], data_folder, annotation
        )
        found.update(new)
        problems += bad
        looked_up.append((rows, entries, found))
    raise_problems(
        list(dict.fromkeys(problems)),
        "trial entries cannot be read",
        FileNotFoundError,
    )
    files, durations, maps = {}, [], []
    for rows, entries, found in looked_up:
        to_file = np.full(len(trials.names), -1, dtype=np.int32)
        for row, entry in zip(rows.tolist(), entries):
            path, seconds = found[entry]
            if path not in files:
                files[path] = len(files)
                durations.append(seconds)
            to_file[row] = files[path]
        maps.append(to_file)
    return TrialList(
        list(files),
        maps[0][trials.enrol],
        maps[1][trials.test],
        trials.labels,
        trials.source,
        np.asarray(durations, dtype=np.float64),
    )


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
    >>> (folder / "c.wav").unlink()  # only chosen files are looked for
    >>> len(cohort_utterances(folder / "train.csv", folder, 2)["s1"])
    Traceback (most recent call last):
    ...
    FileNotFoundError: cohort annotation ...: 1 cohort audio files do not exist:
      .../c.wav
    >>> (folder / "b.wav").unlink()  # not a cohort file with 1 per speaker
    >>> _ = (folder / "c.wav").write_bytes(b"")
    >>> len(cohort_utterances(folder / "train.csv", folder, 1))
    2
    """
    if per_speaker < 1:
        raise ValueError(
            f"{annotation}: utterances per cohort speaker must be >= 1, got "
            f"{per_speaker}"
        )
    cohort = {}
    rows = read_annotation(annotation, data_folder, check_files=False)
    for row in rows.values():
        files = cohort.setdefault(row["spk_id"], {})
        if len(files) < per_speaker:
            files[row["wav"]] = row["duration"]
    # only the chosen files must exist: a stat each, not one per row (a
    # VoxCeleb2 training CSV has 1.09 million rows, its cohort 3 per speaker)
    missing = [
        path
        for files in cohort.values()
        for path in files
        if not Path(path).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"cohort annotation {annotation}: {len(missing)} cohort audio "
            f"files do not exist:\n{list_problems(missing)}"
        )
    return cohort
