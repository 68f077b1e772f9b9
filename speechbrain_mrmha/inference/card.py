"""The model card of a pretrained folder: ``README.md`` in the Hugging Face
model-card convention (YAML front matter, then text).

The front matter holds, besides Hugging Face's fields (``library_name``,
``tags``, ``model-index`` with one result per trial list), a
``speechbrain_mrmha`` section with what the card is made from: the
architecture read from the folder's ``hyperparams.yaml``, the training
configuration and its overrides, and the verification results of every
trial list scored so far. Updating the card (the verification recipe adds
its results) keeps what it already holds. The card is written atomically.

Authors
 * speechbrain-mrmha developers
"""

import json
from pathlib import Path

import yaml

from speechbrain_mrmha.dataio.files import write_text_atomic
from speechbrain_mrmha.inference.pretrained import load_calibration

__all__ = ["CARD_FILE", "describe_model", "read_card", "write_model_card"]

CARD_FILE = "README.md"
CITATION = """@inproceedings{wang2020mrmha,
  title     = {Multi-Resolution Multi-Head Attention in Deep Speaker Embedding},
  author    = {Wang, Zhiming and Yao, Kaisheng and Li, Xiaolong and Fang, Shuo},
  booktitle = {Proc. ICASSP},
  pages     = {6464--6468},
  year      = {2020}
}"""
METRICS = (  # key in results, model-index type, shown name
    ("EER", "eer", "EER (%)"),
    ("minDCF", "min_dcf", "minDCF (p_target 0.01)"),
    ("actDCF", "act_dcf", "actDCF (p_target 0.01)"),
    ("Cllr", "cllr", "Cllr (bits)"),
)


class _Tagged(yaml.SafeLoader):
    """hyperpyyaml text as data: a tagged node reads as {"tag": value}."""


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        return {suffix: loader.construct_mapping(node, deep=True)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_scalar(node)}


_Tagged.add_multi_constructor("!", _tagged)


def _tag_and_args(entry):
    """('new:pkg.Class', {args}) of a tagged entry, or (None, {})."""
    if isinstance(entry, dict) and len(entry) == 1:
        ((tag, args),) = entry.items()
        if isinstance(tag, str) and ":" in tag:
            return tag, args if isinstance(args, dict) else {}
    return None, {}


def describe_model(folder):
    """The architecture of a pretrained folder, read from its
    ``hyperparams.yaml`` as data (nothing in it is run).

    Arguments
    ---------
    folder : str or Path
        A pretrained folder.

    Returns
    -------
    description : dict
        encoder, pooling (class names), heads, temperatures, embedding
        size, Mel bands, stage widths and block counts (None where the
        yaml does not say).

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "hyperparams.yaml").write_text(
    ...     "embedding_model: !new:speechbrain_mrmha.layers.resnet.ResNet34\\n"
    ...     "  lin_neurons: 512\\n"
    ...     "  pooling: !name:speechbrain_mrmha.layers.pooling.X\\n"
    ...     "    num_heads: 6\\n")
    >>> d = describe_model(folder)
    >>> d["encoder"], d["pooling"], d["heads"], d["embedding_size"]
    ('ResNet34', 'X', 6, 512)
    """
    text = (Path(folder) / "hyperparams.yaml").read_text(encoding="utf-8")
    data = yaml.load(text, Loader=_Tagged) or {}
    encoder_tag, encoder = _tag_and_args(data.get("embedding_model"))
    pooling_tag, pooling = _tag_and_args(encoder.get("pooling"))
    return {
        "encoder": encoder_tag.rsplit(".", 1)[-1] if encoder_tag else None,
        "pooling": pooling_tag.rsplit(".", 1)[-1] if pooling_tag else None,
        "heads": pooling.get("num_heads", 1 if pooling_tag else None),
        "temperatures": pooling.get("temperatures"),
        "embedding_size": encoder.get("lin_neurons"),
        "n_mels": encoder.get("n_mels"),
        "channels": encoder.get("channels"),
        "block_counts": encoder.get("block_counts"),
    }


def read_card(folder):
    """The ``speechbrain_mrmha`` section of a folder's card, or {}.

    Arguments
    ---------
    folder : str or Path

    Returns
    -------
    section : dict

    Example
    -------
    >>> read_card("/nonexistent")
    {}
    """
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    front, _, _ = text[4:].partition("\n---\n")
    try:
        data = yaml.safe_load(front) or {}
    except yaml.YAMLError:
        return {}
    section = data.get("speechbrain_mrmha")
    return section if isinstance(section, dict) else {}


def _front_matter(name, section):
    """Hugging Face's fields plus our section."""
    results = []
    for trial_list, metrics in sorted(section.get("results", {}).items()):
        results.append(
            {
                "task": {
                    "type": "speaker-verification",
                    "name": "Speaker Verification",
                },
                "dataset": {"name": trial_list, "type": "voxceleb"},
                "metrics": [
                    {"type": kind, "name": shown, "value": metrics[key]}
                    for key, kind, shown in METRICS
                    if metrics.get(key) is not None
                ],
            }
        )
    front = {
        "library_name": "speechbrain",
        "license": "apache-2.0",
        "tags": [
            "speechbrain",
            "speaker-verification",
            "speaker-embeddings",
            "attention-pooling",
        ],
        "metrics": [kind for _, kind, _ in METRICS],
    }
    if results:
        front["model-index"] = [{"name": name, "results": results}]
    front["speechbrain_mrmha"] = section
    return yaml.safe_dump(front, sort_keys=False, allow_unicode=True)


def _body(name, section, calibration):
    """The card's text."""
    model = section["model"]
    training = section.get("training") or {}
    heads = model.get("heads")
    lines = [
        f"# {name}: speaker embeddings with {model.get('pooling')} pooling",
        "",
        f"A {model.get('encoder')} speaker encoder whose frames are pooled by "
        f"`{model.get('pooling')}` ({heads} head{'s' * (heads != 1)}"
        + (
            f", temperatures {model['temperatures']}"
            if model.get("temperatures")
            else ""
        )
        + f") into a {model.get('embedding_size')}-dimensional embedding, "
        f"on {model.get('n_mels')} log Mel filter banks (stage widths "
        f"{model.get('channels')}, blocks {model.get('block_counts')}). "
        "Trained with speechbrain-mrmha, the implementation of Wang et al., "
        '"Multi-Resolution Multi-Head Attention in Deep Speaker Embedding", '
        "ICASSP 2020.",
        "",
        "## Training",
        "",
    ]
    if training.get("hparams_file"):
        overrides = training.get("overrides") or {}
        shown = " ".join(f"--{k}={v}" for k, v in overrides.items())
        lines += [
            f"Configuration `{training.get('hparams_file')}`"
            + (f" with `{shown}`" if shown else " as it is")
            + f"; {training.get('classes')} training classes"
            + (
                f" from `{training['train_annotation']}`"
                if training.get("train_annotation")
                else ""
            )
            + ".",
        ]
    else:
        lines.append("Not recorded.")
    lines += ["", "## Verification results", ""]
    results = section.get("results") or {}
    if results:
        lines += [
            "| trial list | trials | EER (%) | minDCF | actDCF | Cllr |",
            "|---|---|---|---|---|---|",
        ]
        for trial_list, m in sorted(results.items()):
            cells = [m.get(key, "-") for key, _, _ in METRICS]
            lines.append(
                f"| {trial_list} | {m.get('trials', '-')} | "
                + " | ".join(str(c) for c in cells)
                + " |"
            )
        lines += ["", "minDCF and actDCF at p_target 0.01, normalised."]
    else:
        lines.append(
            "Not scored yet: the verification recipe "
            "(`speaker_verification_cosine.py`) adds its results here."
        )
    lines += ["", "## Calibration", ""]
    if calibration is not None:
        stats = calibration.statistics
        lines.append(
            f"`calibration.json` maps a cosine s to a log-likelihood ratio "
            f"llr = {calibration.slope:.4f} s "
            f"{calibration.offset:+.4f}, fitted on "
            f"{stats.get('n_speakers', '?')} held-out speakers "
            f"({stats.get('n_target', '?')} target and "
            f"{stats.get('n_nontarget', '?')} non-target trials)."
        )
    else:
        lines.append("None: scores are raw cosines, not log-likelihood ratios.")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from speechbrain.inference.speaker import SpeakerRecognition",
        "",
        f'model = SpeakerRecognition.from_hparams(source="{name}", '
        'savedir="tmp")',
        'score, decision = model.verify_files("a.wav", "b.wav")',
        "```",
        "",
        "```bash",
        "pip install speechbrain-mrmha",
        f"python -m speechbrain_mrmha verify --model {name} a.wav b.wav",
        "```",
        "",
        "Loading a model folder runs its `hyperparams.yaml`; "
        "speechbrain-mrmha loads only folders whose yaml names allow-listed "
        "classes unless told to trust the folder.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def _training_record(folder, training):
    """What the card records of the training: the yaml's file name, the
    overrides (a path of the training machine as its last component), the
    number of training classes (the folder's label_encoder.txt)."""
    record = json.loads(json.dumps(training, default=str))
    if record.get("hparams_file"):
        record["hparams_file"] = Path(record["hparams_file"]).name
    overrides = record.get("overrides") or {}
    record["overrides"] = {
        key: Path(value).name
        if isinstance(value, str) and Path(value).is_absolute()
        else value
        for key, value in overrides.items()
    }
    labels = Path(folder) / "label_encoder.txt"
    if "classes" not in record and labels.is_file():
        text = labels.read_text(encoding="utf-8")
        entries = text.split("\n=", 1)[0].splitlines()  # before the footer
        record["classes"] = sum(" => " in line for line in entries)
    return record


def write_model_card(folder, training=None, results=None):
    """Writes (or updates) the folder's ``README.md`` atomically.

    Arguments
    ---------
    folder : str or Path
        A pretrained folder.
    training : dict, optional
        ``hparams_file`` (the yaml's name), ``overrides`` (dict),
        ``classes``, ``train_annotation``; None keeps what the card holds.
    results : dict, optional
        Trial-list name -> metrics (``EER`` in %, ``minDCF``, ``actDCF``,
        ``Cllr``, ``trials``), added to those the card holds.

    Returns
    -------
    path : Path
        The card.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "hyperparams.yaml").write_text(
    ...     "embedding_model: !new:speechbrain_mrmha.layers.resnet.ResNet34\\n"
    ...     "  pooling: !name:speechbrain_mrmha.layers.pooling.X\\n")
    >>> _ = write_model_card(folder, training={"hparams_file": "mrmha.yaml"})
    >>> _ = write_model_card(folder, results={"veri_test2.txt": {"EER": 4.1}})
    >>> card = read_card(folder)
    >>> card["training"]["hparams_file"], card["results"]
    ('mrmha.yaml', {'veri_test2.txt': {'EER': 4.1}})
    """
    folder = Path(folder)
    section = read_card(folder)
    section["model"] = describe_model(folder)
    if training is not None:
        section["training"] = _training_record(folder, training)
    if results:
        section.setdefault("results", {}).update(
            json.loads(json.dumps(results, default=str))
        )
    name = folder.resolve().name
    text = (
        "---\n"
        + _front_matter(name, section)
        + "---\n\n"
        + _body(name, section, load_calibration(folder))
    )
    path = folder / CARD_FILE
    write_text_atomic(path, text)
    return path
