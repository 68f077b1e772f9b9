"""Which model folders may be loaded without trusting their author.

Loading a SpeechBrain model folder runs its ``hyperparams.yaml``: every
``!new:`` and ``!apply:`` tag calls the named Python object, with the
arguments written there. A folder from elsewhere can therefore run any
command at load time (``!apply:os.system [...]``). By default this package
loads only folders whose yaml names objects in ``ALLOWED``: the layers,
features and encoders of SpeechBrain, this package and ``torch.nn``, with
no ``!apply:`` beyond the seed, and no ``!include:`` of other files.
Anything else is refused, naming the tag and its line, unless the caller
says it trusts the folder. Checkpoints are always loaded with
``weights_only=True``.

Authors
 * speechbrain-mrmha developers
"""

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


def _tag_problems(node, problems):
    """Walks a composed YAML node; appends 'line N: tag' problems."""
    tag = node.tag or ""
    if tag.startswith("!"):
        kind, _, target = tag.partition(":")
        line = node.start_mark.line + 1
        if kind in ("!new", "!name"):
            if not target.startswith(ALLOWED):
                problems.append(f"line {line}: {tag} is not on the allow-list")
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
