"""Reading and writing speaker-verification trial lists.

The official VoxCeleb trial lists (``veri_test.txt``, ``veri_test2.txt`` and
the VoxCeleb1-E / VoxCeleb1-H lists ``list_test_all2.txt`` /
``list_test_hard2.txt``) hold one trial per line::

    label enrol test

with ``label`` 1 (target: same speaker) or 0 (non-target) and ``enrol`` /
``test`` paths relative to the ``wav`` folder, e.g.
``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav``.

Authors
 * speechbrain_mrmha contributors
"""

import os
from typing import List, NamedTuple

__all__ = ["Trial", "read_trials", "write_trials", "trial_files"]


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


def read_trials(path) -> List[Trial]:
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
    with open(path, "r", encoding="utf-8") as fh:
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
    path = os.fspath(path)
    lines = [f"{int(t.label)} {t.enrol} {t.test}\n" for t in trials]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
    os.replace(tmp, path)
    return len(lines)


def trial_files(trials) -> List[str]:
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
