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
both writers replace the file atomically (``io.write_text_atomic``).

Authors
 * speechbrain_mrmha contributors
"""

import math
import os
from pathlib import Path
from typing import NamedTuple

import torch

from speechbrain_mrmha.dataio.audio import write_text_atomic

__all__ = [
    "Trial",
    "read_trials",
    "write_trials",
    "trial_files",
    "TrialScores",
    "read_scores",
    "write_scores",
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
