"""Resume that never trains on silently: a run records the options its
checkpoints are made with, and a rerun into the same output folder compares
its own options with them before any work.

Only the options in ``RESUMABLE`` may change on resume, each with a stated
meaning: how often checkpoints are saved, how many processes load data,
how long the run is, and what is done with the model after training (the
verification a recipe runs at the end, so adding ``--vox1_folder`` to a
finished run scores it). Any other difference is refused, listing every
option that differs with its old and new value, and how to start fresh.

Authors
 * speechbrain-mrmha developers
"""

import json
from pathlib import Path

import yaml

from speechbrain_mrmha.dataio.files import write_text_atomic
from speechbrain_mrmha.dataio.problems import list_problems
from speechbrain_mrmha.training.config import parse_overrides, resolve_config

__all__ = [
    "OPTIONS_FILE",
    "RESUMABLE",
    "run_options",
    "check_resume",
    "check_rerun",
]

OPTIONS_FILE = "run_options.json"
# option -> what changing it on resume does
RESUMABLE = {
    "number_of_epochs": (
        "the step schedules (learning rate, margin) are planned again for "
        "the new length: the remaining steps train at the rates of a run "
        "planned that long from the start"
    ),
    "ckpt_interval_minutes": "how often intra-epoch checkpoints are saved",
    "num_workers": (
        "data-loading processes; the crops do not depend on it (from shards,"
        " an epoch interrupted in its middle ends with the old value: the "
        "training loader refuses another one until the epoch boundary)"
    ),
    "prepare_workers": "processes that read audio headers in preparation",
    # what is done with the model after training: never the weights
    "vox1_folder": "the trial lists scored after training (null: none)",
    "score_norm": "the score normalisation of that verification",
    "cohort_utterances_per_speaker": "its cohort: utterances per speaker",
    "cohort_top_k": "its cohort: AS-norm's top k",
    "verification_folder": "where that verification is written",
}


class _TaggedLoader(yaml.SafeLoader):
    """Reads resolved hyperpyyaml text; a tagged node reads as
    ``{"!tag": value}``, so that a changed class is a changed option."""


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return {f"!{suffix}": value}


_TaggedLoader.add_multi_constructor("!", _tagged)


def run_options(resolved_yaml):
    """The options of a run: its resolved configuration, every top-level
    key with its value (objects as their tag and arguments).

    Arguments
    ---------
    resolved_yaml : str
        The configuration with references resolved and overrides applied
        (``training.config.resolve_config``).

    Returns
    -------
    options : dict
        JSON-serialisable, key -> value.

    Example
    -------
    >>> run_options("lr: 0.1\\nopt: !name:torch.optim.SGD\\n  lr: 0.1\\n")
    {'lr': 0.1, 'opt': {'!name:torch.optim.SGD': {'lr': 0.1}}}
    """
    options = yaml.load(resolved_yaml, Loader=_TaggedLoader) or {}
    return json.loads(json.dumps(options, default=str))


def check_resume(save_folder, options, has_checkpoints, comparable=None):
    """Compares a rerun's options with those its checkpoints were made
    with, before any work, and records the options for the next rerun.

    Without checkpoints the run starts fresh and its options are recorded.
    With checkpoints, every difference outside ``RESUMABLE`` is refused in
    one error; the allowed changes are returned, so the caller applies
    them (e.g. plans the schedules again).

    Arguments
    ---------
    save_folder : str or Path
        The folder of the run's checkpoints; the record is
        ``<save_folder>/run_options.json``.
    options : dict
        This run's options (``run_options``).
    has_checkpoints : bool
        Whether ``save_folder`` holds a checkpoint the run will resume.
    comparable : dict, optional
        This run's options with the ``RESUMABLE`` ones set to their recorded
        values (so what follows from them, e.g. an epoch counter's limit,
        is not a difference); default ``options``.

    Returns
    -------
    changes : dict
        option -> (old, new), only options in ``RESUMABLE``.

    Raises
    ------
    ValueError
        Listing every other option that differs, its old and new value.

    Example
    -------
    >>> import tempfile
    >>> save = Path(tempfile.mkdtemp())
    >>> check_resume(save, {"loss": "cosams", "number_of_epochs": 1}, False)
    {}
    >>> check_resume(save, {"loss": "cosams", "number_of_epochs": 3}, True)
    {'number_of_epochs': (1, 3)}
    >>> check_resume(save, {"loss": "aam", "number_of_epochs": 3}, True)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the checkpoints in ... were made with other options:
      loss: 'cosams' -> 'aam'
    Only number_of_epochs, ckpt_interval_minutes, num_workers, prepare_workers, vox1_folder, ... may change when a run resumes. To start fresh, give another --output_folder, or delete ...
    """
    record = Path(save_folder) / OPTIONS_FILE
    if not has_checkpoints or not record.is_file():
        # a fresh run (a run without a record predates this check: its
        # options are recorded now and compared from the next rerun on)
        write_text_atomic(record, json.dumps(options, indent=1, sort_keys=True))
        return {}
    try:
        old = json.loads(record.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(
            f"{record}: not valid JSON ({error}); delete {save_folder} to "
            "start fresh"
        ) from None
    if comparable is None:
        comparable = options
    refused = [
        f"{key}: {old.get(key, '<absent>')!r} -> "
        f"{comparable.get(key, '<absent>')!r}"
        for key in sorted(set(old) | set(comparable))
        if key not in RESUMABLE
        and old.get(key, "<absent>") != comparable.get(key, "<absent>")
    ]
    if refused:
        raise ValueError(
            f"the checkpoints in {save_folder} were made with other "
            f"options:\n{list_problems(refused)}\nOnly "
            f"{', '.join(RESUMABLE)} may change when a run resumes. To start "
            "fresh, give another --output_folder, or delete "
            f"{save_folder} (and its train_log.txt)."
        )
    allowed = {
        key: (old.get(key), options.get(key))
        for key in RESUMABLE
        if old.get(key) != options.get(key)
    }
    if allowed:
        write_text_atomic(record, json.dumps(options, indent=1, sort_keys=True))
    return allowed


def check_rerun(hparams_file, overrides, save_folder):
    """``check_resume`` for a run of ``hparams_file`` with ``overrides``
    whose checkpoints go to ``save_folder``: before any work, a rerun into
    a folder with checkpoints is refused unless only ``RESUMABLE`` options
    changed.

    Arguments
    ---------
    hparams_file : str or Path
    overrides : str, dict or None
    save_folder : str or Path

    Returns
    -------
    changes : dict
        As ``check_resume``.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.yaml").write_text(
    ...     "number_of_epochs: 2\\nloss: aam\\nlimit: !ref <number_of_epochs>\\n")
    >>> check_rerun(folder / "a.yaml", {}, folder / "save")
    {}
    >>> (folder / "save" / "CKPT+1").mkdir()
    >>> check_rerun(folder / "a.yaml", {"number_of_epochs": 4}, folder / "save")
    {'number_of_epochs': (2, 4)}
    """
    options = run_options(resolve_config(hparams_file, overrides))
    has_checkpoints = any(Path(save_folder).glob("CKPT+*"))
    record = Path(save_folder) / OPTIONS_FILE
    comparable = None
    if has_checkpoints and record.is_file():
        try:
            old = json.loads(record.read_text(encoding="utf-8"))
        except ValueError:
            old = {}  # check_resume names the broken record
        kept = {k: old[k] for k in RESUMABLE if k in old and k in options}
        pinned = {**parse_overrides(overrides), **kept}
        comparable = run_options(resolve_config(hparams_file, pinned))
    return check_resume(save_folder, options, has_checkpoints, comparable)
