"""Hyperpyyaml configurations as data: command-line overrides, plain values
read before any object is built, the model entries of a training
configuration, and SpeechBrain's saved ``hyperparams.yaml``.

Every function resolves through hyperpyyaml's own ``resolve_references``,
so an override that names no key of the file fails with hyperpyyaml's
``Override '...' not found`` error, as ``load_hyperpyyaml`` would.

Authors
 * speechbrain-mrmha developers
"""

import datetime
import io
import os
from pathlib import Path

import yaml
from hyperpyyaml import resolve_references

from speechbrain_mrmha.dataio.audio import write_text_atomic

__all__ = [
    "MODEL_KEYS",
    "parse_overrides",
    "resolve_config",
    "plain_values",
    "model_definition",
    "save_resolved",
]

MODEL_KEYS = (
    "compute_features",
    "mean_var_norm",
    "embedding_model",
    "classifier",
)
"""The entries of a training configuration that make up the model (and the
pretrained folder's ``hyperparams.yaml``)."""


def parse_overrides(overrides):
    """Overrides as a dict, from SpeechBrain's yaml string or a dict.

    Arguments
    ---------
    overrides : str, dict or None
        What ``speechbrain.parse_arguments`` returns, or a dict.

    Returns
    -------
    overrides : dict
        A new dict (the caller's is never changed).

    Example
    -------
    >>> parse_overrides("num_heads: 6\\nchannels: [4, 8]")
    {'num_heads': 6, 'channels': [4, 8]}
    >>> parse_overrides(None)
    {}
    """
    if isinstance(overrides, str):
        overrides = yaml.safe_load(overrides)
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ValueError(f"overrides must be a mapping, got {overrides!r}")
    return dict(overrides)


def resolve_config(hparams_file, overrides=None):
    """The configuration's text with overrides applied and ``!ref``
    references resolved; no object is built.

    Arguments
    ---------
    hparams_file : str or Path
        A hyperpyyaml file.
    overrides : str, dict or None
        Overrides; a key the file does not have raises hyperpyyaml's
        ``KeyError: "Override '...' not found ..."``.

    Returns
    -------
    text : str

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "a.yaml"
    >>> _ = f.write_text("k: 2\\nout: !ref run<k>\\n")
    >>> print(resolve_config(f, {"k": 3}).strip())
    k: 3
    out: run3
    >>> resolve_config(f, {"kk": 3})
    Traceback (most recent call last):
    ...
    KeyError: "Override 'kk' not found in: ['k', 'out']"
    """
    hparams_file = Path(hparams_file)
    if not hparams_file.is_file():
        raise FileNotFoundError(
            f"hyperparameter file {hparams_file} does not exist"
        )
    with open(hparams_file, encoding="utf-8") as fin:
        return resolve_references(
            fin, parse_overrides(overrides), overrides_must_match=True
        ).getvalue()


class _PlainLoader(yaml.SafeLoader):
    """Reads resolved hyperpyyaml text; every tagged node (``!new:``,
    ``!name:``, ``!apply:``, ``!PLACEHOLDER``, ...) reads as None."""


_PlainLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def plain_values(hparams_file, overrides=None):
    """The plain values of a configuration (numbers, strings, lists, ...)
    without building any object: tagged entries read as None.

    Used to read what preparation needs before the model is built. A key
    still marked ``!PLACEHOLDER`` is hyperpyyaml's error naming it.

    Arguments
    ---------
    hparams_file : str or Path
    overrides : str, dict or None

    Returns
    -------
    values : dict

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "a.yaml"
    >>> _ = f.write_text("n: 4\\nlayer: !new:torch.nn.Linear [!ref <n>, 2]\\n")
    >>> plain_values(f, "n: 8")
    {'n': 8, 'layer': None}
    >>> _ = f.write_text("data_folder: !PLACEHOLDER\\n")
    >>> plain_values(f)
    Traceback (most recent call last):
    ...
    ValueError: 'data_folder' is a !PLACEHOLDER and must be replaced.
    """
    values = yaml.load(
        resolve_config(hparams_file, overrides), Loader=_PlainLoader
    )
    return values or {}


def model_definition(hparams_file, overrides=None, keys=MODEL_KEYS):
    """The model entries of a training configuration as self-contained
    hyperpyyaml text: references resolved, tags kept.

    This is what a pretrained folder's ``hyperparams.yaml`` is generated
    from, so the folder builds the very model the configuration trained.

    Arguments
    ---------
    hparams_file : str or Path
    overrides : str, dict or None
    keys : tuple of str
        The entries to keep (all must exist).

    Returns
    -------
    text : str

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "a.yaml"
    >>> _ = f.write_text("n: 4\\nlr: 0.1\\nmodel: !new:torch.nn.Linear [!ref <n>, 2]\\n")
    >>> print(model_definition(f, {"n": 8}, keys=("model",)).strip())
    model: !new:torch.nn.Linear [8, 2]
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    parser = YAML(typ="rt")
    parser.width = 4096
    tree = parser.load(resolve_config(hparams_file, overrides))
    missing = [key for key in keys if key not in tree]
    if missing:
        raise KeyError(f"{hparams_file}: no model entries {missing}")
    entries = CommentedMap((key, tree[key]) for key in keys)
    stream = io.StringIO()
    parser.dump(entries, stream)
    return stream.getvalue()


def save_resolved(hparams_file, overrides, path):
    """Write the resolved configuration as SpeechBrain's experiment
    ``hyperparams.yaml`` (a header naming the source, then the text),
    atomically.

    Arguments
    ---------
    hparams_file : str or Path
    overrides : str, dict or None
    path : str or Path
        The output file.

    Returns
    -------
    path : Path

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.yaml").write_text("k: 2\\n")
    >>> out = save_resolved(folder / "a.yaml", {"k": 5}, folder / "saved.yaml")
    >>> out.read_text().splitlines()[-1]
    'k: 5'
    """
    text = resolve_config(hparams_file, overrides)
    header = (
        f"# Generated {datetime.date.today()} from:\n"
        f"# {os.path.abspath(hparams_file)}\n"
        "# yamllint disable\n"
    )
    return write_text_atomic(path, header + text)
