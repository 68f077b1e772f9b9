"""Which model folders may be loaded without trusting their author.

Loading a SpeechBrain model folder runs its ``hyperparams.yaml``: every
``!new:`` and ``!apply:`` tag calls the named Python object, with the
arguments written there. A folder from elsewhere can therefore run any
command at load time (``!apply:os.system [...]``). By default this package
loads only folders whose yaml names objects in ``ALLOWED``: the layers,
features and encoders of SpeechBrain, this package and ``torch.nn``, with
no ``!apply:`` beyond the seed, and no ``!include:`` of other files.
A dotted path is judged by the object it names, not by its spelling:
``!new:speechbrain.lobes.features.torch.hub.load`` starts with an allowed
prefix but names ``torch.hub.load``, so it is refused; no part of a path may
start with ``_``. The Pretrainer may only be given its ``loadables`` (not
``paths`` that would fetch checkpoints from elsewhere). Anything else is
refused, naming the tag and its line, unless the caller says it trusts the
folder. Checkpoints are always loaded with ``weights_only=True``.

Authors
 * speechbrain-mrmha developers
"""

import inspect
import pydoc
from pathlib import Path

import yaml

from speechbrain_mrmha.dataio.problems import list_problems

__all__ = ["ALLOWED", "ALLOWED_APPLY", "UntrustedFolderError", "check_trusted"]

# prefixes of what !new: and !name: may name
ALLOWED = (
    "speechbrain_mrmha.layers.",
    "speechbrain_mrmha.pooling.",  # import paths of older folders
    "speechbrain_mrmha.resnet.",
    "speechbrain_mrmha.cosams.",
    "speechbrain_mrmha.lengths.",
    "speechbrain.lobes.",
    "speechbrain.nnet.",
    "speechbrain.processing.",
    "speechbrain.dataio.encoder.",
    "speechbrain.utils.parameter_transfer.Pretrainer",
    "torch.nn.",
)
# what !apply: may call
ALLOWED_APPLY = ("speechbrain.utils.seed.seed_everything", "torch.manual_seed")
HARMLESS_TAGS = ("!ref", "!copy", "!tuple", "!PLACEHOLDER")
PRETRAINER = "speechbrain.utils.parameter_transfer.Pretrainer"
# the Pretrainer arguments a folder may give (from_hparams sets the rest)
PRETRAINER_KEYS = ("loadables", "collect_in")
TRUST_HINT = (
    "load it only if you trust its author: pass trust_folder=True "
    "(command line: --trust-folder)"
)


class UntrustedFolderError(ValueError):
    """A model folder whose yaml would call objects outside the
    allow-list (a ``ValueError``, so callers that report bad input report
    it too).

    Example
    -------
    >>> issubclass(UntrustedFolderError, ValueError)
    True
    """


def _allowed_object(target, kind):
    """True when ``target`` names (by any path) a class, or for ``!name``
    a class or function, that is defined under an ``ALLOWED`` prefix."""
    if not target.startswith(ALLOWED):
        return False
    if any(not part or part.startswith("_") for part in target.split(".")):
        return False
    try:  # imports modules of the allowed packages only
        found = pydoc.locate(target)
    except Exception:  # pydoc.ErrorDuringImport and what imports raise
        return False
    if not (
        inspect.isclass(found) or (kind == "!name" and inspect.isroutine(found))
    ):
        return False
    module = getattr(found, "__module__", None) or ""
    qualname = getattr(found, "__qualname__", None) or ""
    return f"{module}.{qualname}".startswith(ALLOWED)


def _pretrainer_problems(node, line, problems):
    """The Pretrainer may be given its loadables only."""
    if not isinstance(node, yaml.MappingNode):
        problems.append(f"line {line}: !new:{PRETRAINER} takes a mapping")
        return
    for key, _ in node.value:
        if getattr(key, "value", None) not in PRETRAINER_KEYS:
            problems.append(
                f"line {key.start_mark.line + 1}: !new:{PRETRAINER} "
                f"argument {getattr(key, 'value', key)!r} is not allowed "
                f"(only {', '.join(PRETRAINER_KEYS)})"
            )


def _tag_problems(node, problems):
    """Walks a composed YAML node; appends 'line N: tag' problems."""
    tag = node.tag or ""
    if tag.startswith("!"):
        kind, _, target = tag.partition(":")
        line = node.start_mark.line + 1
        if kind in ("!new", "!name"):
            if not _allowed_object(target, kind):
                problems.append(f"line {line}: {tag} is not on the allow-list")
            elif target == PRETRAINER:
                _pretrainer_problems(node, line, problems)
        elif kind == "!apply":
            if target not in ALLOWED_APPLY:
                problems.append(f"line {line}: {tag} runs code at load time")
        elif kind == "!include":
            problems.append(f"line {line}: {tag} reads another file")
        elif tag not in HARMLESS_TAGS and kind not in HARMLESS_TAGS:
            problems.append(f"line {line}: {tag} is not a known safe tag")
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _tag_problems(key, problems)
            _tag_problems(value, problems)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _tag_problems(item, problems)


def check_trusted(hyperparams, trust_folder=False):
    """Refuses a ``hyperparams.yaml`` that would call anything outside the
    allow-list when loaded, unless ``trust_folder``.

    Arguments
    ---------
    hyperparams : str or Path
        The ``hyperparams.yaml`` of a model folder.
    trust_folder : bool
        True: skip the check (the caller trusts the folder's author).

    Raises
    ------
    UntrustedFolderError
        Naming every offending tag and its line.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "hyperparams.yaml"
    >>> _ = path.write_text("x: !apply:os.system ['touch /tmp/owned']\\n")
    >>> try:
    ...     check_trusted(path)
    ... except UntrustedFolderError as error:
    ...     print(str(error).splitlines()[1])
      line 1: !apply:os.system runs code at load time
    >>> check_trusted(path, trust_folder=True)
    """
    if trust_folder:
        return
    path = Path(hyperparams)
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise UntrustedFolderError(
            f"{path}: not valid YAML ({error})"
        ) from None
    problems = []
    if root is not None:
        _tag_problems(root, problems)
    if problems:
        raise UntrustedFolderError(
            f"{path} would run code when loaded:\n{list_problems(problems)}"
            f"\n{TRUST_HINT}"
        )
