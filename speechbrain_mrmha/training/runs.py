"""Runs that own their output folder: one run per folder at a time,
checkpoints that are complete or skipped, and a train log that holds the
epochs the recovered checkpoint holds.

* ``hold_run_lock``: an exclusive ``flock`` on ``<folder>/.run.lock``. A
  second training or verification into the same folder stops at once,
  naming the process that holds it. The kernel drops the lock when its
  process dies, however it dies, so a lock left by a dead process is taken
  over with no stale-lock clean-up.
* ``CompleteCheckpointer``: SpeechBrain's ``Checkpointer`` that marks a
  checkpoint complete (file sizes in a ``COMPLETE`` file, written last) and,
  when recovering, skips with a warning every checkpoint that is incomplete
  (a kill during the save) or unreadable, in favour of the newest complete
  one.
* ``keep_logged_epochs``: a resumed run trains again the epochs after its
  checkpoint; their log lines from the interrupted run are dropped first.
* ``start_run`` and ``fit_class_count``: what every training recipe does
  before and after reading its data, before the model is built (options
  checked, DDP group, lock, rerun check, experiment folder; the class
  count of the data).

Authors
 * speechbrain-mrmha developers
"""

import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path

import speechbrain as sb
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import if_main_process, run_on_main

from speechbrain_mrmha.dataio.files import write_text_atomic
from speechbrain_mrmha.dataio.problems import list_problems
from speechbrain_mrmha.training.checks import check_training_options
from speechbrain_mrmha.training.config import (
    class_count_overrides,
    plain_values,
    save_resolved,
)
from speechbrain_mrmha.training.crops import training_speeds
from speechbrain_mrmha.training.resume import check_rerun

__all__ = [
    "RunLockedError",
    "hold_run_lock",
    "CompleteCheckpointer",
    "keep_logged_epochs",
]

logger = logging.getLogger(__name__)
LOCK_FILE = ".run.lock"
MARKER = "COMPLETE"
_HELD = {}  # folder -> open lock file, kept for the life of the process


class RunLockedError(RuntimeError):
    """Another live process runs into the same output folder.

    Example
    -------
    >>> issubclass(RunLockedError, RuntimeError)
    True
    """


def hold_run_lock(folder, what="run"):
    """Hold the output folder for this process until it exits.

    Arguments
    ---------
    folder : str or Path
        The output folder (created if needed).
    what : str
        What this process is, recorded for the message a second run gets.

    Returns
    -------
    lock : Path
        The lock file.

    Raises
    ------
    RunLockedError
        Another live process holds the folder; the message names it.

    Example
    -------
    >>> import subprocess, sys, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = hold_run_lock(folder, "training")
    >>> other = subprocess.run([sys.executable, "-c",
    ...     "from speechbrain_mrmha.training.runs import hold_run_lock; "
    ...     f"hold_run_lock({folder!r})"], capture_output=True, text=True)
    >>> "is in use by process" in other.stderr
    True
    """
    import fcntl

    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        return folder / LOCK_FILE
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLockedError(
            f"output folder {folder} is in use by process {holder}; wait for "
            "it to finish or choose another --output_folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(
        f"{os.getpid()} on {socket.gethostname()} ({what}, since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)})\n"
    )
    handle.flush()
    _HELD[key] = handle
    return folder / LOCK_FILE


def _sizes(path):
    """Sizes of the files of a checkpoint folder, marker excluded."""
    return {
        p.name: p.stat().st_size
        for p in sorted(Path(path).iterdir())
        if p.is_file() and p.name != MARKER
    }


class CompleteCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer`` whose checkpoints are used only when
    complete.

    SpeechBrain writes a checkpoint's meta file first and its parameter
    files after it, so a kill during a save leaves a folder that looks
    valid, with a short or empty parameter file. Here a ``COMPLETE`` file
    holding every file's size is written last; a checkpoint without it, with
    other sizes, or whose files fail to load is skipped with a warning
    naming it, and the newest complete checkpoint is recovered instead.
    Skipped folders stay on disk for inspection and are never deleted.

    Arguments
    ---------
    checkpoints_dir, recoverables, custom_load_hooks, custom_save_hooks,
    allow_partial_load
        As SpeechBrain's ``Checkpointer``.

    Example
    -------
    >>> import tempfile, torch
    >>> model = torch.nn.Linear(2, 2)
    >>> folder = Path(tempfile.mkdtemp())
    >>> saver = CompleteCheckpointer(folder, {"model": model})
    >>> first = saver.save_checkpoint(meta={"n": 1})
    >>> second = saver.save_checkpoint(meta={"n": 2})
    >>> _ = (second.path / "model.ckpt").write_bytes(b"")  # killed mid-save
    >>> saver.recover_if_possible().meta["n"]
    1
    """

    def save_checkpoint(
        self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO
    ):
        """Save as SpeechBrain does, then mark the checkpoint complete."""
        if meta is None:
            meta = {}
        checkpoint = super().save_checkpoint(
            meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity
        )
        if checkpoint is not None and if_main_process():
            sizes = json.dumps(_sizes(checkpoint.path), sort_keys=True)
            write_text_atomic(Path(checkpoint.path) / MARKER, sizes + "\n")
        return checkpoint

    def is_complete(self, checkpoint):
        """True when the checkpoint's files are those its marker lists."""
        marker = Path(checkpoint.path) / MARKER
        try:
            listed = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return listed == _sizes(checkpoint.path)

    def list_checkpoints(self):
        """The complete checkpoints; incomplete ones are named in a warning."""
        complete = []
        for checkpoint in super().list_checkpoints():
            if self.is_complete(checkpoint):
                complete.append(checkpoint)
            else:
                logger.warning(
                    "skipping incomplete checkpoint %s (interrupted while "
                    "saving?)",
                    checkpoint.path,
                )
        return complete

    def _refuse_a_fresh_start(self, failed):
        """Raise when checkpoints exist but none could be recovered: the
        run would start again from scratch over its own log and
        checkpoints, silently."""
        unusable = _unusable(self, failed)
        if unusable:
            raise RuntimeError(
                f"{self.checkpoints_dir} holds checkpoints, but none can be "
                "resumed (incomplete or unreadable):\n"
                + list_problems(unusable)
                + "\nStarting again from scratch would overwrite this run; "
                "delete its output folder (or give another --output_folder) "
                "to start fresh."
            )

    def recover_if_possible(
        self,
        importance_key=None,
        max_key=None,
        min_key=None,
        ckpt_predicate=None,
    ):
        """Load the best complete checkpoint; one that fails to load is
        skipped with a warning naming it and the next best is tried."""
        failed = set()

        def usable(checkpoint):
            if checkpoint.path in failed:
                return False
            return ckpt_predicate is None or ckpt_predicate(checkpoint)

        while True:
            checkpoint = self.find_checkpoint(
                importance_key, max_key, min_key, usable
            )
            if checkpoint is None:
                self._refuse_a_fresh_start(failed)
                return None
            try:
                self.load_checkpoint(checkpoint)
                return checkpoint
            except Exception as error:  # torch.load raises many types
                logger.warning(
                    "skipping unreadable checkpoint %s: %s",
                    checkpoint.path,
                    error,
                )
                failed.add(checkpoint.path)


def _unusable(checkpointer, failed):
    """Checkpoint folders a recovery could not use: incomplete or failed."""
    every = Checkpointer.list_checkpoints(checkpointer)
    return sorted(
        str(c.path)
        for c in every
        if c.path in failed or not checkpointer.is_complete(c)
    )


def keep_logged_epochs(train_log, last_epoch):
    """Remove the ``epoch: N`` lines of ``train_log`` with N > last_epoch
    (atomically; nothing happens when there is no such line or no file).

    Arguments
    ---------
    train_log : str or Path
        A SpeechBrain ``FileTrainLogger`` file.
    last_epoch : int
        The last epoch the recovered checkpoint holds.

    Example
    -------
    >>> import tempfile
    >>> log = Path(tempfile.mkdtemp()) / "train_log.txt"
    >>> _ = log.write_text("epoch: 1, loss: 3\\nepoch: 2, loss: 2\\n")
    >>> keep_logged_epochs(log, 1)
    >>> log.read_text()
    'epoch: 1, loss: 3\\n'
    """
    path = Path(train_log)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [
        line
        for line in lines
        if not (m := re.match(r"epoch: (\d+)", line)) or int(m[1]) <= last_epoch
    ]
    if kept != lines:
        write_text_atomic(path, "".join(kept))


def start_run(hparams_file, run_opts, overrides, check=None):
    """The start of a training recipe, before any data work, on the
    configuration's plain values (no object is built yet, so a mistyped
    override stops here): every bad option in one error
    (``check_training_options``), the DDP group, then on the main process
    the run's lock (``hold_run_lock``) and the comparison with the
    checkpoints' options (``resume.check_rerun``). The recipe then calls
    SpeechBrain's ``create_experiment_directory`` itself: it copies the
    file of its caller into the folder, which must be the recipe's script.

    Arguments
    ---------
    hparams_file : str or Path
        The recipe yaml.
    run_opts : dict
        SpeechBrain's run options (``sb.parse_arguments``).
    overrides : str, dict or None
        The command-line overrides.
    check : callable, optional
        The recipe's own checks of the plain values, run right after
        ``check_training_options`` (e.g. its verification options).

    Returns
    -------
    hparams : dict
        The plain values of the configuration (``config.plain_values``).

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.yaml").write_text(
    ...     f"output_folder: {folder / 'out'}\\n"
    ...     "save_folder: !ref <output_folder>/save\\n"
    ...     "number_of_epochs: 0\\nspeed_perturb: False\\n"
    ...     "spec_augment: False\\ninit_from: null\\n"
    ...     "lr_warmup_fraction: 0.05\\nmargin_warmup_start_fraction: 0.0\\n"
    ...     "margin_warmup_end_fraction: 0.0\\n")
    >>> start_run(folder / "a.yaml", {}, {})
    Traceback (most recent call last):
    ...
    ValueError: 1 problem with the training options:
      number_of_epochs: 0; at least 1 epoch must be trained
    >>> hparams = start_run(folder / "a.yaml", {}, {"number_of_epochs": 2})
    >>> hparams["save_folder"].endswith("save"), (folder / "out").is_dir()
    (True, True)
    >>> sorted(p.name for p in (folder / "out").iterdir())  # no script copy
    ['.run.lock', 'save']
    """
    hparams = plain_values(hparams_file, overrides)
    check_training_options(hparams)  # every bad option, before any work
    if check is not None:
        check(hparams)
    sb.utils.distributed.ddp_init_group(run_opts)
    if if_main_process():
        hold_run_lock(hparams["output_folder"], "training")
        check_rerun(hparams_file, overrides, hparams["save_folder"])
    return hparams


def fit_class_count(hparams_file, overrides, hparams, speakers):
    """The overrides that build the classifier with the data's class count
    (training speakers times speed copies, ``config.class_count_overrides``);
    when they change it, the experiment's ``hyperparams.yaml`` is written
    again (on the main process) to record the model actually built.

    Arguments
    ---------
    hparams_file : str or Path
        The recipe yaml.
    overrides : str, dict or None
        The command-line overrides.
    hparams : dict
        The plain values (``start_run``): ``n_classes``, ``speed_perturb``,
        ``speed_perturb_speeds``, ``train_annotation``, ``output_folder``.
    speakers : int
        The training speakers of the data.

    Returns
    -------
    overrides : dict

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.yaml").write_text("n_classes: 1211\\n")
    >>> hparams = {"n_classes": 1211, "speed_perturb": True,
    ...            "speed_perturb_speeds": [0.9, 1.1],
    ...            "train_annotation": "train.csv", "output_folder": folder}
    >>> fit_class_count(folder / "a.yaml", {}, hparams, speakers=4)
    {'n_classes': 12}
    >>> (folder / "hyperparams.yaml").read_text().splitlines()[-1]
    'n_classes: 12'
    """
    speeds = training_speeds(
        hparams["speed_perturb"], hparams["speed_perturb_speeds"]
    )
    overrides, changed = class_count_overrides(
        overrides,
        hparams["n_classes"],
        speakers,
        len(speeds),
        hparams["train_annotation"],
    )
    if changed:  # the saved hyperparams.yaml records the model actually built
        saved = Path(hparams["output_folder"]) / "hyperparams.yaml"
        run_on_main(save_resolved, args=[hparams_file, overrides, saved])
    return overrides
