"""Several trial lists checked together, before any audio is embedded, over
one table of their audio files (each file once).

VoxCeleb1 is scored on three cleaned lists (``meta/``): Vox1-O
``veri_test2.txt`` (37,611 trials over 4,874 files), Vox1-E
``list_test_all2.txt`` (579,818 trials) and Vox1-H ``list_test_hard2.txt``
(550,894 trials), the last two over nearly all 153,516 files.
``load_trial_lists`` reads them all and reports every problem of every list
in one error (each list's own errors, from ``trials.load_trials``,
``trials.refuse_outside_entries``, ``trials.resolve_trials`` and
``trials.check_trials``, naming the list and the line), then looks up each
distinct file once; each list keeps its trials as index arrays into the
shared file table (``TrialList`` stays compact: no object per trial).

``find_trial_lists`` finds the known VoxCeleb1 lists present in a folder;
``cohort_overlap`` tells which speakers and files of a score-normalisation
cohort are also in a list.

Authors
 * speechbrain-mrmha developers
"""

import os
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from speechbrain_mrmha.dataio.problems import raise_problems
from speechbrain_mrmha.dataio.trials import (
    TrialList,
    check_trials,
    load_trials,
    refuse_outside_entries,
    resolve_trials,
)

__all__ = [
    "VOXCELEB1_LISTS",
    "CheckedList",
    "TrialLists",
    "find_trial_lists",
    "merge_trials",
    "load_trial_lists",
    "entry_speakers",
    "cohort_overlap",
]

# file name -> the name papers give it; the cleaned lists first, in the
# order O, E, H (the first list scored gives a model its threshold)
VOXCELEB1_LISTS = {
    "veri_test2.txt": "Vox1-O",
    "list_test_all2.txt": "Vox1-E",
    "list_test_hard2.txt": "Vox1-H",
    "veri_test.txt": "Vox1-O original",
    "list_test_all.txt": "Vox1-E original",
    "list_test_hard.txt": "Vox1-H original",
}
_ERRORS = (ValueError, FileNotFoundError)


class CheckedList(NamedTuple):
    """One checked trial list over the shared file table of ``TrialLists``.

    Arguments
    ---------
    name : str
        Its file name (``veri_test2.txt``): what its outputs are named by.
    path : str
        The file, as given.
    trials : TrialList
        Its trials as read (names are its entries, as the file writes them).
    enrol, test : numpy.ndarray
        (n_trials,) int32 row of each trial's enrolment / test audio file in
        ``TrialLists.files``.
    duplicates : int
        Its duplicate trials (``trials.check_trials``).

    Example
    -------
    >>> from speechbrain_mrmha.dataio.trials import Trial
    >>> trials = TrialList.from_trials([Trial(1, "a", "b")], "l.txt")
    >>> rows = np.array([0], dtype=np.int32)
    >>> CheckedList("l.txt", "l.txt", trials, rows, rows + 1, 0).test
    array([1], dtype=int32)
    """

    name: str
    path: str
    trials: TrialList
    enrol: np.ndarray
    test: np.ndarray
    duplicates: int

    def files(self):
        """The rows of the audio files the list uses, each once, sorted.

        Returns
        -------
        rows : numpy.ndarray
            int64 rows of ``TrialLists.files``.

        Example
        -------
        >>> rows = np.array([2, 0], dtype=np.int32)
        >>> CheckedList("l", "l", None, rows, rows, 0).files().tolist()
        [0, 2]
        """
        return np.unique(np.concatenate([self.enrol, self.test]))


class TrialLists(NamedTuple):
    """Checked trial lists and the one table of their audio files.

    Arguments
    ---------
    lists : list of CheckedList
        In the order given.
    files : list of str
        Every audio file of the lists once, in order of first use.
    durations : numpy.ndarray
        (len(files),) float64 seconds of each.

    Example
    -------
    >>> TrialLists([], ["a.wav"], np.ones(1)).files
    ['a.wav']
    """

    lists: list
    files: list
    durations: np.ndarray


def find_trial_lists(folder, names=tuple(VOXCELEB1_LISTS)):
    """The trial lists of ``names`` present in ``folder``, in that order.

    Arguments
    ---------
    folder : str or Path
        E.g. ``<VoxCeleb1>/meta``.
    names : sequence of str
        The file names looked for; default every VoxCeleb1 list
        (``VOXCELEB1_LISTS``: the cleaned O, E, H lists, then the
        original ones).

    Returns
    -------
    paths : list of Path

    Raises
    ------
    FileNotFoundError
        When none is there, naming the folder and the names.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("list_test_hard2.txt", "veri_test2.txt", "notes.txt"):
    ...     _ = (folder / name).write_text("1 a b\\n")
    >>> [p.name for p in find_trial_lists(folder)]
    ['veri_test2.txt', 'list_test_hard2.txt']
    """
    folder = Path(folder)
    found = [folder / name for name in names if (folder / name).is_file()]
    if not found:
        raise FileNotFoundError(
            f"no trial list in {folder}: looked for {', '.join(names)}"
        )
    return found


def merge_trials(trial_lists, source=""):
    """The trials of several lists as one ``TrialList`` over the union of
    their entries (each entry once, in order of first use), the lists'
    trials one after the other.

    Arguments
    ---------
    trial_lists : sequence of TrialList
    source : str
        What errors about the merged list name.

    Returns
    -------
    merged : TrialList

    Example
    -------
    >>> from speechbrain_mrmha.dataio.trials import Trial
    >>> a = TrialList.from_trials([Trial(1, "x", "y")])
    >>> b = TrialList.from_trials([Trial(0, "z", "x")])
    >>> merged = merge_trials([a, b])
    >>> merged.names, merged.enrol.tolist(), merged.test.tolist()
    (['x', 'y', 'z'], [0, 2], [1, 0])
    """
    rows = {}
    enrol, test, labels = [], [], []
    for trials in trial_lists:
        remap = np.fromiter(
            (rows.setdefault(name, len(rows)) for name in trials.names),
            dtype=np.int32,
            count=len(trials.names),
        )
        enrol.append(remap[trials.enrol])
        test.append(remap[trials.test])
        labels.append(trials.labels)
    return TrialList(
        list(rows),
        np.concatenate(enrol).astype(np.int32, copy=False),
        np.concatenate(test).astype(np.int32, copy=False),
        np.concatenate(labels).astype(np.int8, copy=False),
        str(source),
    )


def _problem(path, error):
    """An error of one list as a problem line, naming the list."""
    text = str(error).replace("\n", "\n  ")
    return text if path in text else f"{path}: {text}"


def _raise(errors):
    """One error for the errors of every list: the error itself when there
    is one, else one listing them all (FileNotFoundError when all are)."""
    found = [(path, error) for path, each in errors.items() for error in each]
    if not found:
        return
    if len(found) == 1:
        raise found[0][1]
    kind = (
        FileNotFoundError
        if all(isinstance(e, FileNotFoundError) for _, e in found)
        else ValueError
    )
    raise_problems(
        [_problem(path, error) for path, error in found],
        f"problems in {len(errors)} trial lists (nothing was embedded)",
        kind,
    )


def load_trial_lists(
    paths,
    data_folder,
    enrol_annotation=None,
    test_annotation=None,
    allow_outside_data_folder=False,
):
    """Read, resolve and check several trial lists before any embedding.

    Each list is read (``load_trials``), its entries outside the data
    folder are refused (unless ``allow_outside_data_folder``), the entries
    of all lists are looked up together (``resolve_trials``: each distinct
    entry once), and each list is checked (``check_trials``: one class,
    conflicting labels, duplicates). Every problem of every list comes in
    one error; a single problem is raised as its own error.

    Arguments
    ---------
    paths : sequence of str or Path
        The trial lists; their file names must differ (outputs are named
        by them).
    data_folder : str or Path
    enrol_annotation, test_annotation : str or Path, optional
    allow_outside_data_folder : bool
        As ``trials.resolve_trials``.

    Returns
    -------
    checked : TrialLists

    Raises
    ------
    ValueError
        Listing the problems of every list (FileNotFoundError when all are
        missing lists or entries).

    Example
    -------
    >>> import tempfile, soundfile
    >>> data = Path(tempfile.mkdtemp())
    >>> for name in "abc":
    ...     soundfile.write(data / f"{name}.wav", np.zeros(8000), 16000)
    >>> _ = (data / "one.txt").write_text("1 a b\\n0 a c\\n")
    >>> _ = (data / "two.txt").write_text("1 c c.wav\\n0 b a\\n")
    >>> checked = load_trial_lists([data / "one.txt", data / "two.txt"], data)
    >>> [Path(f).name for f in checked.files], checked.lists[1].enrol.tolist()
    (['a.wav', 'b.wav', 'c.wav'], [2, 1])
    >>> _ = (data / "bad.txt").write_text("1 a b\\nx a c\\n")
    >>> load_trial_lists([data / "one.txt", data / "bad.txt", data / "no.txt"],
    ...                  data)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 2 problems in 3 trial lists (nothing was embedded):
      1 problem in trial list .../bad.txt:
        .../bad.txt:2: label must be 0 or 1, got 'x'
      trial list '.../no.txt' does not exist
    """
    paths = [os.fspath(path) for path in paths]
    if not paths:
        raise ValueError("no trial list to score")
    shared = sorted(
        name
        for name, count in Counter(Path(p).name for p in paths).items()
        if count > 1
    )
    if shared:
        raise ValueError(
            f"trial lists must have different file names (their outputs are "
            f"named by them); given more than once: {', '.join(shared)}"
        )
    errors = {path: [] for path in paths}
    loaded = {}
    for path in paths:
        try:
            trials = load_trials(path)
            if not allow_outside_data_folder:
                refuse_outside_entries(
                    trials, data_folder, enrol_annotation, test_annotation
                )
            loaded[path] = trials
        except _ERRORS as error:
            errors[path].append(error)
    resolved = None
    if loaded:
        merged = merge_trials(loaded.values(), ", ".join(loaded))
        try:  # outside entries were refused list by list
            resolved = resolve_trials(
                merged, data_folder, enrol_annotation, test_annotation, True
            )
        except _ERRORS as error:
            merged_error = error
        if resolved is None:  # resolve each list alone, to name the lists
            named = 0
            for path, trials in loaded.items():
                try:
                    resolve_trials(
                        trials,
                        data_folder,
                        enrol_annotation,
                        test_annotation,
                        True,
                    )
                except _ERRORS as error:
                    errors[path].append(error)
                    named += 1
            if not named:  # every entry is some list's: not expected
                errors[next(iter(loaded))].append(merged_error)
    lists, start = [], 0
    for path, trials in loaded.items():
        stop = start + len(trials)
        if resolved is None:  # checked by entry: all problems at once
            enrol, test = trials.enrol, trials.test
        else:
            enrol, test = resolved.enrol[start:stop], resolved.test[start:stop]
        start = stop
        try:
            check = check_trials(trials, enrol, test)
        except ValueError as error:
            errors[path].append(error)
            continue
        lists.append(
            CheckedList(
                Path(path).name, path, trials, enrol, test, check.duplicates
            )
        )
    _raise(errors)
    return TrialLists(lists, resolved.names, resolved.durations)


def entry_speakers(entries):
    """The speakers of trial entries: the first folder of each entry that
    has one (VoxCeleb's ``idNNNNN/<video>/<utterance>.wav``, whose
    ``idNNNNN`` is the ``spk_id`` preparation writes).

    Arguments
    ---------
    entries : iterable of str

    Returns
    -------
    speakers : set of str

    Example
    -------
    >>> sorted(entry_speakers(["id10270/x/1.wav", "id10271/y/2.wav", "spk1"]))
    ['id10270', 'id10271']
    """
    speakers = set()
    for entry in entries:
        head, sep, _ = entry.replace("\\", "/").partition("/")
        if sep and head:
            speakers.add(head)
    return speakers


def _normal(path):
    return os.path.normpath(os.path.abspath(path))


def cohort_overlap(checked, cohort):
    """The cohort speakers and files that are also in each trial list: a
    score-normalisation cohort should hold none of the test speakers
    (VoxCeleb2 training speakers for VoxCeleb1 lists).

    Arguments
    ---------
    checked : TrialLists
    cohort : dict
        Speaker -> {audio path: seconds} (``trials.cohort_utterances``).

    Returns
    -------
    overlap : dict
        List name -> {"speakers": sorted cohort speakers that are speakers
        of the list (``entry_speakers``), "files": how many cohort files
        are audio files of the list (same path)}.

    Example
    -------
    >>> from speechbrain_mrmha.dataio.trials import Trial
    >>> trials = TrialList.from_trials([Trial(1, "id1/a/1.wav", "id2/b/1.wav")])
    >>> rows = np.array([0], dtype=np.int32)
    >>> lists = TrialLists([CheckedList("o.txt", "o.txt", trials, rows,
    ...     rows + 1, 0)], ["/d/id1/a/1.wav", "/d/id2/b/1.wav"], np.ones(2))
    >>> cohort_overlap(lists, {"id2": {"/d/id2/b/1.wav": 1.0}, "x": {}})
    {'o.txt': {'speakers': ['id2'], 'files': 1}}
    """
    paths = {_normal(p) for files in cohort.values() for p in files}
    overlap = {}
    for checked_list in checked.lists:
        speakers = entry_speakers(checked_list.trials.names)
        files = [checked.files[row] for row in checked_list.files().tolist()]
        overlap[checked_list.name] = {
            "speakers": sorted(speakers & set(cohort)),
            "files": sum(_normal(f) in paths for f in files),
        }
    return overlap
