"""Hyperpyyaml configurations as data: command-line overrides, plain values
read before any object is built, the model entries of a training
configuration, SpeechBrain's saved ``hyperparams.yaml``, the class count
taken from the training data, and the training options in which one
configuration differs from another.

Every function resolves through hyperpyyaml's own ``resolve_references``,
so an override that names no key of the file fails with hyperpyyaml's
``Override '...' not found`` error, as ``load_hyperpyyaml`` would.

Authors
 * speechbrain-mrmha developers
"""

import datetime
import io
import logging
import os
from pathlib import Path

import yaml
from hyperpyyaml import resolve_references

from speechbrain_mrmha.dataio.files import write_text_atomic

__all__ = [
    "MODEL_KEYS",
    "parse_overrides",
    "resolve_config",
    "plain_values",
    "model_definition",
    "save_resolved",
    "class_count_overrides",
    "fractional_checkpoint_interval",
    "parse_arguments",
    "training_options",
]

logger = logging.getLogger(__name__)

MODEL_KEYS = (
    "compute_features",
    "mean_var_norm",
    "embedding_model",
    "classifier",
)
"""The entries of a training configuration that make up the model (and the
pretrained folder's ``hyperparams.yaml``)."""

RENAMED = {
    "lr_warmup_epochs": "lr_warmup_fraction",
    "margin_warmup_start_epoch": "margin_warmup_start_fraction",
    "margin_warmup_end_epoch": "margin_warmup_end_fraction",
}
"""Options of earlier releases, given in epochs, and the options (fractions
of the run's optimizer steps) that replaced them."""


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


def class_count_overrides(overrides, n_classes, speakers, copies, annotation):
    """The overrides with ``n_classes`` set to the number of training
    classes (speakers times speed copies), so the model is built once with
    the count of the data; unchanged when the configuration agrees. An
    explicit ``n_classes`` override that disagrees with the data is an error.

    Arguments
    ---------
    overrides : str, dict or None
        The command-line overrides.
    n_classes : int
        The configuration's ``n_classes`` (overrides applied).
    speakers : int
        Training speakers in the data.
    copies : int
        Speed copies of each speaker (1: no speed perturbation).
    annotation : str
        The training annotation, named in the error.

    Returns
    -------
    overrides : dict
        A new dict.
    changed : bool
        True when ``n_classes`` was set.

    Example
    -------
    >>> class_count_overrides({}, 1211, speakers=2, copies=3, annotation="t.csv")
    ({'n_classes': 6}, True)
    >>> class_count_overrides({"n_classes": 2}, 2, 2, 3, "t.csv")
    Traceback (most recent call last):
    ...
    ValueError: --n_classes=2 but train_annotation t.csv has 2 speakers x 3 speed copies
    """
    overrides = parse_overrides(overrides)
    classes = speakers * copies
    if classes == n_classes:
        return overrides, False
    if "n_classes" in overrides:
        raise ValueError(
            f"--n_classes={overrides['n_classes']} but train_annotation "
            f"{annotation} has {speakers} speakers"
            + (f" x {copies} speed copies" if copies > 1 else "")
        )
    logger.info(
        "n_classes: %d training classes (the yaml says %d)", classes, n_classes
    )
    overrides["n_classes"] = classes
    return overrides, True


def fractional_checkpoint_interval(argv):
    """SpeechBrain parses ``--ckpt_interval_minutes`` as a whole number;
    take it out of ``argv`` as a float (to reach the Brain as an override).

    Arguments
    ---------
    argv : list of str
        The command line.

    Returns
    -------
    argv : list of str
        Without the option.
    minutes : float or None
        Its value, None when absent.

    Example
    -------
    >>> fractional_checkpoint_interval(["a.yaml", "--ckpt_interval_minutes=0.5"])
    (['a.yaml'], 0.5)
    >>> fractional_checkpoint_interval(["--ckpt_interval_minutes", "x"])
    Traceback (most recent call last):
    ...
    ValueError: --ckpt_interval_minutes must be a number, got 'x'
    """
    rest, minutes = [], None
    args = iter(argv)
    for arg in args:
        if arg.startswith("--ckpt_interval_minutes"):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            try:
                minutes = float(value)
            except ValueError:
                raise ValueError(
                    f"--ckpt_interval_minutes must be a number, got {value!r}"
                ) from None
        else:
            rest.append(arg)
    return rest, minutes


def parse_arguments(argv):
    """SpeechBrain's ``parse_arguments``, with the overrides as a dict and
    ``--ckpt_interval_minutes`` taken as a float (fractions of a minute
    allowed; SpeechBrain parses a whole number), which reaches the Brain
    as an override of the yaml key.

    Arguments
    ---------
    argv : list of str
        The command line: the hyperparameter file, run options, overrides.

    Returns
    -------
    hparams_file : str
    run_opts : dict
    overrides : dict

    Example
    -------
    >>> _, run_opts, overrides = parse_arguments(
    ...     ["a.yaml", "--device=cpu", "--lr=0.1", "--ckpt_interval_minutes=0.5"])
    >>> run_opts["device"], overrides
    ('cpu', {'lr': 0.1, 'ckpt_interval_minutes': 0.5})
    >>> parse_arguments(["a.yaml", "--lr_warmup_epochs=2"])
    Traceback (most recent call last):
    ...
    ValueError: --lr_warmup_epochs is now --lr_warmup_fraction, a fraction of the run's optimizer steps (e.g. 2 of 40 epochs is 0.05)
    """
    from speechbrain import parse_arguments as speechbrain_arguments

    argv, minutes = fractional_checkpoint_interval(argv)
    hparams_file, run_opts, overrides = speechbrain_arguments(argv)
    overrides = parse_overrides(overrides)
    for old, new in RENAMED.items():
        if old in overrides:
            raise ValueError(
                f"--{old} is now --{new}, a fraction of the run's optimizer "
                "steps (e.g. 2 of 40 epochs is 0.05)"
            )
    if minutes is not None:
        overrides["ckpt_interval_minutes"] = minutes
    return hparams_file, run_opts, overrides


def _written_values(hparams_file):
    """The plain values as written in a file: nothing resolved, every
    tagged entry (``!ref``, ``!new:``, ...) None."""
    text = Path(hparams_file).read_text(encoding="utf-8")
    return yaml.load(text, Loader=_PlainLoader) or {}


def training_options(base_file, other_file, overrides=None, keys=MODEL_KEYS):
    """The plain entries (numbers, strings, booleans, lists) that
    ``other_file`` sets to other values than ``base_file``, except those
    that change the model (its sizes, heads, class count): the options
    that turn the base configuration's training into the other's, for any
    configuration with the same keys.

    Arguments
    ---------
    base_file, other_file : str or Path
        Training configurations.
    overrides : dict, optional
        Applied to both before the model entries are compared (values for
        ``!PLACEHOLDER`` keys such as ``data_folder``).
    keys : tuple of str
        The model entries.

    Returns
    -------
    options : dict
        Key -> value of ``other_file``, in its order.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.yaml").write_text(
    ...     "n: 4\\nlr: 0.1\\nmodel: !new:torch.nn.Linear [!ref <n>, 2]\\n")
    >>> _ = (folder / "b.yaml").write_text(
    ...     "n: 8\\nlr: 0.5\\nmodel: !new:torch.nn.Linear [!ref <n>, 2]\\n")
    >>> training_options(folder / "a.yaml", folder / "b.yaml", keys=("model",))
    {'lr': 0.5}
    """
    base, other = _written_values(base_file), _written_values(other_file)
    overrides = parse_overrides(overrides)
    model = model_definition(base_file, overrides, keys)
    options = {}
    for key, value in other.items():
        if key not in base or value is None or base[key] == value:
            continue
        changed = {**overrides, key: value}
        if model_definition(base_file, changed, keys) == model:
            options[key] = value
    return options
