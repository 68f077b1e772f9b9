"""Training options checked before any work: every option that would make
training meaningless is named, with its bad value, in one error.

Authors
 * speechbrain-mrmha developers
"""

from pathlib import Path

import torch

from speechbrain_mrmha.dataio.problems import raise_problems
from speechbrain_mrmha.layers.lengths import HOP_SAMPLES

__all__ = ["SPEED_RANGE", "check_training_options", "init_from_problems"]

SPEED_RANGE = (0.5, 2.0)  # perturbation speeds outside it are not speech
INIT_FILES = ("embedding_model.ckpt", "classifier.ckpt")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _speed_problems(speeds):
    """Problems of the speed_perturb_speeds list."""
    if not isinstance(speeds, (list, tuple)) or not speeds:
        return [f"speed_perturb_speeds: {speeds!r} is not a non-empty list"]
    problems, seen = [], set()
    low, high = SPEED_RANGE
    for speed in speeds:
        if not isinstance(speed, (int, float)) or isinstance(speed, bool):
            problems.append(f"speed_perturb_speeds: {speed!r} is not a number")
            continue
        if not low <= speed <= high:
            problems.append(
                f"speed_perturb_speeds: {speed!r} is outside [{low}, {high}]"
            )
        elif f"{float(speed):g}" == "1":
            problems.append(
                "speed_perturb_speeds: 1.0 is the original audio (it is "
                "always used); list only the other speeds"
            )
        elif f"{float(speed):g}" in seen:
            problems.append(f"speed_perturb_speeds: {speed!r} is repeated")
        seen.add(f"{float(speed):g}")
    return problems


def _mask_problems(settings):
    """Problems of the SpecAugment-style mask options against the crop."""
    problems = []
    keys = ("time_masks", "time_mask_width", "freq_masks", "freq_mask_width")
    for key in keys:
        if not _is_int(settings[key]) or settings[key] < 0:
            problems.append(
                f"{key}: {settings[key]!r} is not a whole number >= 0"
            )
    if problems:
        return problems
    samples = int(round(settings["sentence_len"] * settings["sample_rate"]))
    frames = 1 + samples // HOP_SAMPLES
    time = settings["time_masks"] * settings["time_mask_width"]
    if time >= frames:
        problems.append(
            f"time_masks x time_mask_width: {settings['time_masks']} x "
            f"{settings['time_mask_width']} = {time} frames can mask every "
            f"one of the {frames} frames of a {settings['sentence_len']} s "
            "crop"
        )
    freq = settings["freq_masks"] * settings["freq_mask_width"]
    if freq >= settings["n_mels"]:
        problems.append(
            f"freq_masks x freq_mask_width: {settings['freq_masks']} x "
            f"{settings['freq_mask_width']} = {freq} bands can mask every "
            f"one of the n_mels: {settings['n_mels']} bands"
        )
    return problems


def _fraction(value, below_one=False):
    """Whether ``value`` is a number in [0, 1] (or [0, 1))."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return 0.0 <= value < 1.0 if below_one else 0.0 <= value <= 1.0


def _warmup_problems(settings):
    """Problems of the warm-ups, given as fractions of the run."""
    problems = []
    lr_warmup = settings["lr_warmup_fraction"]
    if not _fraction(lr_warmup, below_one=True):
        problems.append(
            f"lr_warmup_fraction: {lr_warmup!r} is not a fraction of the "
            "run in [0, 1)"
        )
    decay = settings.get("lr_decay_fraction", 0.0)
    if not _fraction(decay):
        problems.append(
            f"lr_decay_fraction: {decay!r} is not a fraction of the run in "
            "[0, 1]"
        )
    start = settings["margin_warmup_start_fraction"]
    end = settings["margin_warmup_end_fraction"]
    for key, value in (
        ("margin_warmup_start_fraction", start),
        ("margin_warmup_end_fraction", end),
    ):
        if not _fraction(value):
            problems.append(
                f"{key}: {value!r} is not a fraction of the run in [0, 1]"
            )
    if _fraction(start) and _fraction(end) and end < start:
        problems.append(
            f"margin_warmup_end_fraction: {end!r} comes before "
            f"margin_warmup_start_fraction: {start!r}"
        )
    return problems


def init_from_problems(folder):
    """Problems of an ``init_from`` folder: its checkpoints must load (with
    ``weights_only=True``) and it must have a ``label_encoder.txt``, by
    which the classes are checked.

    Arguments
    ---------
    folder : str or Path
        A pretrained folder or a CKPT+ checkpoint folder.

    Returns
    -------
    problems : list of str
        Each naming the file and what is wrong with it.

    Example
    -------
    >>> init_from_problems("/nonexistent")
    ['init_from: /nonexistent is not a folder']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"init_from: {folder} is not a folder"]
    problems = []
    for name in INIT_FILES:
        path = folder / name
        if not path.is_file():
            problems.append(f"init_from: {path} does not exist")
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types here
            first = (str(error).strip().splitlines() or [""])[0]
            problems.append(
                f"init_from: {path} is not a readable checkpoint "
                f"({type(error).__name__}: {first[:200]})"
            )
            continue
        if not isinstance(state, dict):
            problems.append(f"init_from: {path} holds no state dict")
    labels = folder / "label_encoder.txt"
    if not labels.is_file():
        problems.append(
            f"init_from: {labels} does not exist; without it the classes "
            "of the checkpoint cannot be checked against this run's"
        )
    return problems


def check_training_options(settings):
    """Raises one ValueError naming every training option that would make
    training meaningless, with its bad value; returns when there is none.

    Checked: ``number_of_epochs`` at least 1; the warm-ups and the decay
    fractions of the run (the learning-rate warm-up in [0, 1), the decay
    and the margin's in [0, 1], its end not before its start); with ``speed_perturb``, the
    speeds are numbers in ``SPEED_RANGE``, none is 1.0 (the original audio,
    always used) and none repeats; with ``spec_augment``, the masks cannot
    cover every frame of a crop or every Mel band; ``init_from`` (when set)
    has readable checkpoints and a ``label_encoder.txt``.

    Arguments
    ---------
    settings : dict
        The plain values of the configuration (``training.config
        .plain_values``).

    Raises
    ------
    ValueError
        Listing every problem.

    Example
    -------
    >>> good = dict(number_of_epochs=2, speed_perturb=True,
    ...     speed_perturb_speeds=[0.9, 1.1], spec_augment=True, time_masks=2,
    ...     time_mask_width=10, freq_masks=2, freq_mask_width=5, n_mels=40,
    ...     sentence_len=3.0, sample_rate=16000, init_from=None,
    ...     lr_warmup_fraction=0.05, margin_warmup_start_fraction=0.1,
    ...     margin_warmup_end_fraction=0.25)
    >>> check_training_options(good)
    >>> check_training_options({**good, "number_of_epochs": 0,
    ...     "speed_perturb_speeds": [0.9, 0.9]})
    Traceback (most recent call last):
    ...
    ValueError: 2 problems with the training options:
      number_of_epochs: 0; at least 1 epoch must be trained
      speed_perturb_speeds: 0.9 is repeated
    """
    problems = []
    epochs = settings["number_of_epochs"]
    if not _is_int(epochs) or epochs < 1:
        problems.append(
            f"number_of_epochs: {epochs!r}; at least 1 epoch must be trained"
        )
    problems += _warmup_problems(settings)
    if settings["speed_perturb"]:
        problems += _speed_problems(settings["speed_perturb_speeds"])
    if settings["spec_augment"]:
        problems += _mask_problems(settings)
    if settings["init_from"]:
        problems += init_from_problems(settings["init_from"])
    raise_problems(problems, "problems with the training options")
