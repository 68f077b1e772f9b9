"""The start of a fine-tuning run: the weights of a trained model (a
pretrained folder or a ``CKPT+`` checkpoint folder) copied into the new
model, which must have the same classes.

Authors
 * speechbrain-mrmha developers
"""

import logging
from pathlib import Path

import torch
from speechbrain.dataio.encoder import CategoricalEncoder

__all__ = ["initialise_from"]

logger = logging.getLogger(__name__)


def initialise_from(
    folder, modules, label_encoder, names=("embedding_model", "classifier")
):
    """Copy ``<name>.ckpt`` of ``folder`` into ``modules[name]`` for each
    of ``names`` (``weights_only`` loading). When the folder has a
    ``label_encoder.txt``, its classes must be this run's.

    Arguments
    ---------
    folder : str or Path
        A pretrained folder or a checkpoint folder of a training run.
    modules : dict
        The new run's modules by name (the yaml's ``modules``), changed in
        place.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        The new run's classes.
    names : tuple of str
        The modules to copy.

    Raises
    ------
    FileNotFoundError
        A checkpoint file is missing.
    ValueError
        The weights do not fit the modules, or the classes differ (the
        message names the file).

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> trained = {"embedding_model": torch.nn.Linear(2, 3),
    ...            "classifier": torch.nn.Linear(3, 4)}
    >>> for name, module in trained.items():
    ...     torch.save(module.state_dict(), folder / f"{name}.ckpt")
    >>> fresh = {"embedding_model": torch.nn.Linear(2, 3),
    ...          "classifier": torch.nn.Linear(3, 4)}
    >>> initialise_from(folder, fresh, CategoricalEncoder())
    >>> torch.equal(fresh["classifier"].weight, trained["classifier"].weight)
    True
    >>> fresh["embedding_model"] = torch.nn.Linear(2, 5)
    >>> initialise_from(folder, fresh, CategoricalEncoder())
    Traceback (most recent call last):
    ...
    ValueError: init_from ...embedding_model.ckpt: does not fit this configuration's embedding_model (...)
    """
    folder = Path(folder)
    for name in names:
        path = folder / f"{name}.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"init_from {folder}: no {name}.ckpt")
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            modules[name].load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(
                f"init_from {path}: does not fit this configuration's "
                f"{name} ({str(error).splitlines()[0]} ...)"
            ) from None
    labels = folder / "label_encoder.txt"
    if labels.is_file():
        theirs = CategoricalEncoder()
        theirs.load(labels)
        if theirs.lab2ind != label_encoder.lab2ind:
            raise ValueError(
                f"init_from {folder}: its classes ({labels}) are not this "
                "run's training speakers (and speed copies)"
            )
    logger.info("initialised %s from %s", " and ".join(names), folder)
