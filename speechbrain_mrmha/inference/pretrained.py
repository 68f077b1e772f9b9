"""Write and check a pretrained-model folder that SpeechBrain's
``EncoderClassifier.from_hparams`` and ``SpeakerRecognition.from_hparams``
load with no network:

<folder>/hyperparams.yaml       the training configuration's model entries
                                (``config.model_definition``), then the
                                interface template shipped in this package
<folder>/embedding_model.ckpt   ResNet-34 + pooling + Linear1/Linear2
<folder>/classifier.ckpt        CosAMS cosine classifier
<folder>/label_encoder.txt      training speakers (also as label_encoder.ckpt,
                                the name SpeechBrain's Pretrainer looks for)
<folder>/calibration.json       optional: cosine -> log-likelihood-ratio
                                calibration and thresholds, fitted at the end
                                of training on held-out speakers
                                (``calibrate_pretrained``, ``load_calibration``)
<folder>/verification.json      optional: the EER threshold of the raw cosine
                                scores of the last trial list the folder was
                                scored on, written by the verification recipe
                                (``write_threshold``, ``load_threshold``)

A model's decision threshold lives in its own folder, never in the output
folder of a recipe run (``inference.model.SpeakerModel``).

A calibration is bound to the weights it was fitted on
(``Calibration.fitted_on``, ``weights_fingerprint``): ``load_calibration``
refuses it next to other weights. Loading a folder runs its
``hyperparams.yaml``: ``load_encoder`` loads only folders that pass
``trust.check_trusted`` (unless ``trust_folder``), and first reads every
checkpoint with ``torch.load(weights_only=True)``.

Authors
 * speechbrain-mrmha developers
"""

import json
import logging
import shutil
from importlib import resources
from pathlib import Path

import torch

from speechbrain_mrmha.dataio.files import (
    content_digest,
    replace_folder,
    write_text_atomic,
)
from speechbrain_mrmha.dataio.preparation import MIN_CALIBRATION_SPEAKERS
from speechbrain_mrmha.inference.extraction import (
    check_device,
    use_channels_last,
)
from speechbrain_mrmha.inference.trust import check_trusted
from speechbrain_mrmha.scoring.calibration import (
    Calibration,
    fit_calibration,
    sample_trials,
)
from speechbrain_mrmha.scoring.cosine import cosine_score_trials
from speechbrain_mrmha.scoring.metrics import EER

logger = logging.getLogger(__name__)
INTERFACE_TEMPLATE = "templates/pretrained_interface.yaml"
FOLDER_FILES = (
    "hyperparams.yaml",
    "embedding_model.ckpt",
    "classifier.ckpt",
    "label_encoder.txt",
)
# the weights a calibration is bound to (``weights_fingerprint``)
WEIGHTS_FILE = "embedding_model.ckpt"
# what SpeechBrain's Pretrainer loads with torch.load (``load_encoder``
# reads each with weights_only=True first)
CHECKPOINT_FILES = ("embedding_model.ckpt", "classifier.ckpt")
# written after the folder by the training script; absent when no
# calibration speakers were held out
CALIBRATION_FILE = "calibration.json"
# written into the folder by the verification recipe
THRESHOLD_FILE = "verification.json"
THRESHOLD_FORMAT = "speechbrain_mrmha.verification/1"


def interface_template():
    """The interface part of a pretrained folder's ``hyperparams.yaml``
    (package data: it ships inside the wheel).

    Returns
    -------
    text : str

    Example
    -------
    >>> "pretrainer" in interface_template()
    True
    """
    package = resources.files("speechbrain_mrmha")
    return package.joinpath(INTERFACE_TEMPLATE).read_text(encoding="utf-8")


def _shapes(module):
    """Parameter and buffer names -> shapes of a module's state dict."""
    return {
        key: tuple(value.shape) for key, value in module.state_dict().items()
    }


def check_definition(text, embedding_model, classifier):
    """Build the modules that ``text`` defines and raise a ValueError unless
    their parameters have the names and shapes of the given modules (so the
    folder loads the checkpoints into the very same architecture).

    Arguments
    ---------
    text : str
        A pretrained folder's ``hyperparams.yaml``.
    embedding_model, classifier : torch.nn.Module
        The trained modules.

    Example
    -------
    >>> check_definition("embedding_model: !new:torch.nn.Linear [2, 3]\\n"
    ...                  "classifier: !new:torch.nn.Linear [3, 2]\\n",
    ...                  torch.nn.Linear(2, 4), torch.nn.Linear(3, 2))
    Traceback (most recent call last):
    ...
    ValueError: the model definition does not build the trained embedding_model: weight: (3, 2) defined, (4, 2) trained; bias: (3,) defined, (4,) trained
    """
    from hyperpyyaml import load_hyperpyyaml

    built = load_hyperpyyaml(text)
    for name, trained in (
        ("embedding_model", embedding_model),
        ("classifier", classifier),
    ):
        want, have = _shapes(trained), _shapes(built[name])
        problems = [
            f"{key}: {have.get(key, 'absent')} defined, "
            f"{want.get(key, 'absent')} trained"
            for key in dict.fromkeys([*want, *have])
            if want.get(key) != have.get(key)
        ]
        if problems:
            raise ValueError(
                f"the model definition does not build the trained {name}: "
                + "; ".join(problems)
            )


def write_pretrained(
    folder,
    model_yaml,
    embedding_model,
    classifier,
    label_encoder,
    training=None,
):
    """Write a pretrained-model folder atomically (a rerun replaces it whole),
    with its model card (``README.md``, ``inference.card``).

    Arguments
    ---------
    folder : str or Path
        Where the folder goes.
    model_yaml : str
        The model entries of the training configuration, from
        ``speechbrain_mrmha.training.config.model_definition``.
    embedding_model : speechbrain_mrmha.layers.resnet.ResNet34
        Trained embedding model.
    classifier : torch.nn.Module
        Trained cosine classifier.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        The training speakers.
    training : dict, optional
        What the card says of the training: ``hparams_file`` and
        ``overrides`` (``inference.card.write_model_card``).

    Returns
    -------
    folder : Path

    Example
    -------
    >>> out = example_folder()  # write_pretrained of a tiny untrained model
    >>> sorted(p.name for p in out.iterdir())[:3]
    ['README.md', 'classifier.ckpt', 'embedding_model.ckpt']
    """
    header = (
        "# Generated by speechbrain_mrmha.inference.pretrained.write_pretrained: the model\n"
        "# entries of the training configuration, then the interface template.\n\n"
    )
    text = header + model_yaml.rstrip() + "\n\n" + interface_template()
    check_definition(text, embedding_model, classifier)

    def fill(staging):
        (staging / "hyperparams.yaml").write_text(text, encoding="utf-8")
        torch.save(
            embedding_model.state_dict(), staging / "embedding_model.ckpt"
        )
        torch.save(classifier.state_dict(), staging / "classifier.ckpt")
        label_encoder.save(staging / "label_encoder.txt")
        shutil.copyfile(
            staging / "label_encoder.txt", staging / "label_encoder.ckpt"
        )

    folder = replace_folder(folder, fill)
    from speechbrain_mrmha.inference.card import write_model_card

    write_model_card(folder, training=training or {})
    return folder


# the untrained tiny model of ``example_folder``: Fbank and sentence mean
# normalisation as in the recipes, a ResNet34 of 2 channels a stage
EXAMPLE_MODEL_YAML = """\
compute_features: !new:speechbrain.lobes.features.Fbank
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain_mrmha.layers.resnet.ResNet34
    channels: [2, 2, 2, 2]
    block_counts: [1, 1, 1, 1]
    lin_neurons: 4
{pooling}classifier: !new:speechbrain_mrmha.layers.margins.CosineClassifier [4, 2]
"""
EXAMPLE_POOLING = """\
    pooling: !name:speechbrain_mrmha.layers.pooling.MultiResolutionMultiHeadAttentionPooling
        num_heads: {num_heads}
"""


def example_folder(folder=None, num_heads=None):
    """Write the pretrained folder of an untrained tiny model (ResNet34 of
    2 channels and 1 block a stage, 4-dimensional embeddings, a cosine
    classifier of the two speakers "a" and "b"), for examples: it loads
    and embeds like a trained folder, in a fraction of a second.

    Arguments
    ---------
    folder : str or Path or None
        Where it goes (``write_pretrained``: an existing folder is replaced
        whole); None: ``model`` in a new temporary folder.
    num_heads : int or None
        None: masked statistics pooling (no attention); an int: MRMHA
        pooling of that many heads.

    Returns
    -------
    folder : Path

    Example
    -------
    >>> folder = example_folder(num_heads=2)
    >>> check_pretrained(folder).name
    'model'
    >>> "num_heads: 2" in (folder / "hyperparams.yaml").read_text()
    True
    """
    import tempfile
    import uuid

    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.dataio.encoder import CategoricalEncoder

    if folder is None:  # mkdir: the umask's modes, as every writer here
        scratch = (
            Path(tempfile.gettempdir()) / f"sbm-example-{uuid.uuid4().hex}"
        )
        scratch.mkdir()
        folder = scratch / "model"
    pooling = ""
    if num_heads is not None:
        pooling = EXAMPLE_POOLING.format(num_heads=int(num_heads))
    model_yaml = EXAMPLE_MODEL_YAML.format(pooling=pooling)
    model = load_hyperpyyaml(model_yaml)
    labels = CategoricalEncoder()
    labels.update_from_iterable(["a", "b"])
    return write_pretrained(
        folder,
        model_yaml,
        model["embedding_model"],
        model["classifier"],
        labels,
    )


def check_pretrained(folder):
    """Raise a clear error if ``folder`` is not a complete pretrained folder
    (or holds a malformed ``calibration.json``).

    Arguments
    ---------
    folder : str or Path

    Returns
    -------
    folder : Path

    Example
    -------
    >>> check_pretrained("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: pretrained model folder /nonexistent does not exist
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"pretrained model folder {folder} does not exist"
        )
    missing = [name for name in FOLDER_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"pretrained model folder {folder} lacks {', '.join(missing)} "
            "(it is written at the end of train_speaker_embeddings.py)"
        )
    load_calibration(folder)  # a malformed calibration.json is an error
    load_threshold(folder)  # and so is a malformed verification.json
    return folder


def write_calibration(folder, calibration):
    """Save a calibration as ``calibration.json`` in a pretrained folder,
    atomically.

    Arguments
    ---------
    folder : str or Path
        An existing pretrained folder.
    calibration : speechbrain_mrmha.scoring.calibration.Calibration

    Returns
    -------
    path : Path
        The file written.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> write_calibration(folder, Calibration(slope=12.0, offset=-6.0)).name
    'calibration.json'
    >>> load_calibration(folder).slope
    12.0
    """
    path = Path(folder) / CALIBRATION_FILE
    problems = calibration.problems()
    if problems:
        raise ValueError(
            f"{path}: not written, not a usable calibration: "
            + "; ".join(problems)
        )
    text = json.dumps(calibration.to_dict(), indent=1) + "\n"
    return write_text_atomic(Path(folder) / CALIBRATION_FILE, text)


def weights_fingerprint(folder):
    """What a calibration of a pretrained folder is bound to: the sha256
    of its ``embedding_model.ckpt`` (``dataio.files.content_digest``, as
    ``extraction.model_fingerprint``).

    Arguments
    ---------
    folder : str or Path
        A pretrained folder.

    Returns
    -------
    fingerprint : dict
        ``{"embedding_model.ckpt": sha256 hex digest}``; empty when the
        folder has no such file.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> weights_fingerprint(folder)
    {}
    >>> _ = (folder / "embedding_model.ckpt").write_bytes(b"abc")
    >>> weights_fingerprint(folder)["embedding_model.ckpt"][:8]
    'ba7816bf'
    """
    path = Path(folder) / WEIGHTS_FILE
    return {WEIGHTS_FILE: content_digest(path)} if path.is_file() else {}


def load_calibration(folder):
    """The calibration of a pretrained folder, or None when it has none.
    One fitted on other weights than the folder's ``embedding_model.ckpt``
    is refused (``Calibration.check_model``); one that records no weights
    (written before they were recorded) loads with a warning.

    Arguments
    ---------
    folder : str or Path
        A pretrained folder.

    Returns
    -------
    calibration : speechbrain_mrmha.scoring.calibration.Calibration or None
        None when ``calibration.json`` does not exist; a ValueError naming
        the file when it is not a valid calibration, or was fitted on other
        weights.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> load_calibration(folder) is None
    True
    >>> _ = (folder / "calibration.json").write_text("{")
    >>> load_calibration(folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../calibration.json: not valid JSON (Expecting property name ...)
    """
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    calibration = Calibration.from_dict(_read_json(path), source=str(path))
    fingerprint = weights_fingerprint(folder)
    if fingerprint:  # a folder without weights has nothing to check against
        calibration.check_model(fingerprint, str(path), str(folder))
    return calibration


def _read_json(path):
    """The JSON object of a file, with an error naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def write_threshold(folder, target_scores, nontarget_scores, trials_file):
    """Record in a pretrained folder the EER threshold of its raw cosine
    scores on a trial list: ``verification.json``, written atomically. The
    decision threshold of a folder without calibration (``load_threshold``).

    Arguments
    ---------
    folder : str or Path
        The pretrained folder the trials were scored with.
    target_scores, nontarget_scores : torch.Tensor
        Raw cosine scores (no score normalisation) of its target and
        non-target trials.
    trials_file : str or Path
        The trial list, recorded with its sha256.

    Returns
    -------
    path : Path
        The file written.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "trials.txt").write_text("1 a b\\n0 a c\\n")
    >>> scores = torch.tensor([0.8, 0.6]), torch.tensor([0.1, 0.3])
    >>> write_threshold(folder, *scores, folder / "trials.txt").name
    'verification.json'
    >>> round(load_threshold(folder)[0], 4)
    0.3
    """
    eer, threshold = EER(target_scores, nontarget_scores)
    data = {
        "format": THRESHOLD_FORMAT,
        "threshold": float(threshold),
        "scores": "cosine",
        "operating_point": "eer",
        "EER": round(100 * float(eer), 4),
        "n_target": len(target_scores),
        "n_nontarget": len(nontarget_scores),
        "verification_file": str(trials_file),
        "verification_file_sha256": content_digest(trials_file),
    }
    text = json.dumps(data, indent=1) + "\n"
    return write_text_atomic(Path(folder) / THRESHOLD_FILE, text)


def load_threshold(folder):
    """The cosine decision threshold a pretrained folder records in
    ``verification.json`` (``write_threshold``), or None when it has none.

    Arguments
    ---------
    folder : str or Path
        A pretrained folder.

    Returns
    -------
    threshold : float
        Accept a trial when its cosine score is above it.
    source : str
        Where it came from, for the user.

    Example
    -------
    >>> import tempfile
    >>> load_threshold(tempfile.mkdtemp()) is None  # see also write_threshold
    True
    """
    path = Path(folder) / THRESHOLD_FILE
    if not path.is_file():
        return None
    data = _read_json(path)
    if data.get("format") != THRESHOLD_FORMAT:
        raise ValueError(
            f"{path}: format {data.get('format')!r} is not {THRESHOLD_FORMAT!r}"
        )
    threshold = data.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"{path}: threshold {threshold!r} is not a number")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(
            f"{path}: threshold {threshold!r} is not a cosine in [-1, 1]"
        )
    trials = data.get("verification_file", "an unnamed trial list")
    return float(threshold), f"EER threshold of {trials}, from {path}"


def check_checkpoints(folder):
    """Read every checkpoint SpeechBrain's Pretrainer loads from a folder
    with ``torch.load(weights_only=True)``: one that holds anything but
    tensors and plain containers (a pickle that would run code) is refused
    before SpeechBrain loads it (its own ``torch.load`` is unrestricted
    under torch < 2.6).

    Arguments
    ---------
    folder : str or Path
        A pretrained folder.

    Example
    -------
    >>> import pickle, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> torch.save({"w": torch.ones(2)}, folder / "embedding_model.ckpt")
    >>> _ = (folder / "classifier.ckpt").write_bytes(pickle.dumps(print))
    >>> check_checkpoints(folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../classifier.ckpt: not loadable with torch.load(weights_only=True) ...
    """
    for name in CHECKPOINT_FILES:
        path = Path(folder) / name
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types
            first = (str(error).strip().splitlines() or [""])[0]
            raise ValueError(
                f"{path}: not loadable with torch.load(weights_only=True) "
                f"({type(error).__name__}: {first}); a checkpoint holds "
                "tensors only"
            ) from None


def load_encoder(
    folder, savedir=None, device="cpu", channels_last=True, trust_folder=False
):
    """Load a pretrained folder with SpeechBrain's ``EncoderClassifier``,
    after refusing a ``hyperparams.yaml`` that would call anything outside
    the allow-list (``trust.check_trusted``) and checkpoints that are not
    plain tensors (``check_checkpoints``).

    Arguments
    ---------
    folder : str or Path
        A folder written by ``write_pretrained``.
    savedir : str or Path, optional
        A folder where SpeechBrain links the files. By default (None)
        SpeechBrain reads them from ``folder`` itself and writes nothing, so
        a read-only folder loads. A savedir that already holds links is
        reused as it is (SpeechBrain's ``fetch``), whatever ``folder`` is:
        give each model its own savedir, or none.
    device : str
        ``"cpu"`` or ``"cuda:N"``.
    channels_last : bool
        Store the convolution weights channels-last (``use_channels_last``):
        1.3-1.4x faster extraction on CPU (docs/BENCHMARKS.md), same
        embeddings up to float rounding.
    trust_folder : bool
        Load a ``hyperparams.yaml`` outside the allow-list too (it can run
        any code): only for folders whose author you trust.

    Returns
    -------
    encoder : speechbrain.inference.EncoderClassifier
    """
    from speechbrain.inference.classifiers import EncoderClassifier

    folder = check_pretrained(folder).resolve()
    check_trusted(folder / "hyperparams.yaml", trust_folder)
    check_device(device)
    check_checkpoints(folder)
    encoder = EncoderClassifier.from_hparams(
        source=str(folder),
        savedir=None if savedir is None else str(savedir),
        run_opts={"device": device},
    )
    if channels_last:
        use_channels_last(encoder)
    return encoder


def calibrate_pretrained(
    folder,
    utterances,
    max_trials=100000,
    quality=False,
    prior=0.5,
    seed=0,
    device="cpu",
    sample_rate=16000,
):
    """Embed whole calibration utterances with a pretrained folder
    (``model.SpeakerModel``), score their trials
    (``calibration.sample_trials``), fit a calibration
    (``calibration.fit_calibration``), save it in the folder
    (``write_calibration``) and log its summary: what a training recipe
    does at its end.

    Arguments
    ---------
    folder : str or Path
        A pretrained folder (``write_pretrained``).
    utterances : dict or None
        ID -> (audio path, duration in seconds, speaker) of utterances of
        speakers never used in training
        (``dataio.preparation.calibration_utterances``); None (no
        calibration set, which that function warned of): a warning that
        the folder has no calibration, nothing else.
    max_trials : int
        Most calibration trials (all same-speaker pairs up to half of it,
        the rest different-speaker pairs).
    quality : bool
        Also use the duration quality measures.
    prior : float
        Training prior of the fit.
    seed : int
        Seed of the trial sample.
    device : str
        Where to embed.
    sample_rate : int
        The rate the model takes (an error if the folder's differs).

    Returns
    -------
    calibration : speechbrain_mrmha.scoring.calibration.Calibration or None
        As written, bound to the folder's weights (``fitted_on``);
        ``statistics`` also holds the speaker and utterance counts. Fewer
        speakers than ``MIN_CALIBRATION_SPEAKERS`` (5) is a warning: such
        a calibration can be worse than none. A fit whose slope is not
        positive (the scores do not separate the speakers) is a warning
        and is not written.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> _ = torch.manual_seed(2)  # an untrained model that separates tones
    >>> folder = example_folder(tmp / "model")
    >>> rng, utterances = numpy.random.default_rng(0), {}
    >>> time = numpy.arange(8000) / 16000
    >>> for i in range(10):  # 5 "speakers": tones of 150, 300, ... 750 Hz
    ...     path = str(tmp / f"u{i}.wav")
    ...     tone = numpy.sin(2 * numpy.pi * 150 * (1 + i % 5) * time)
    ...     noise = 0.01 * rng.standard_normal(8000)
    ...     soundfile.write(path, 0.1 * tone + noise, 16000)
    ...     utterances[f"u{i}"] = (path, 0.5, f"speaker{i % 5}")
    >>> cal = calibrate_pretrained(folder, utterances)
    >>> cal.statistics["n_target"], cal.statistics["n_nontarget"]
    (5, 40)
    >>> load_calibration(folder) == cal, list(cal.fitted_on)
    (True, ['embedding_model.ckpt'])
    >>> print(calibrate_pretrained(folder, None))  # warns: no calibration
    None
    """
    from speechbrain_mrmha.inference.model import SpeakerModel

    if utterances is None:
        logger.warning(
            "%s has no calibration.json (see the warning at the start)",
            folder,
        )
        return None
    ids = list(utterances)
    speakers = [utterances[i][2] for i in ids]
    n_speakers = len(set(speakers))
    if n_speakers < MIN_CALIBRATION_SPEAKERS:
        logger.warning(
            "%s: calibration fitted on %d speakers, fewer than the %d it "
            "needs; it can be worse than none (hold out more calibration "
            "speakers)",
            folder,
            n_speakers,
            MIN_CALIBRATION_SPEAKERS,
        )
    enrol, test, labels = sample_trials(speakers, max_trials, seed)
    model = SpeakerModel(folder, device=device, backend="pytorch")
    if model.encoder.sample_rate != sample_rate:
        raise ValueError(
            f"{folder}: the model takes audio at {model.encoder.sample_rate} "
            f"Hz, not {sample_rate}"
        )
    embedded = model.embed_files(
        [utterances[i][0] for i in ids],
        {path: seconds for path, seconds, _ in utterances.values()},
    ).embeddings
    embeddings = torch.stack([embedded[str(utterances[i][0])] for i in ids])
    scores = cosine_score_trials(embeddings, enrol, test)
    durations = torch.tensor(
        [utterances[i][1] for i in ids], dtype=torch.float64
    )
    pairs = torch.stack([durations[enrol], durations[test]], dim=1)
    calibration = fit_calibration(
        scores[labels],
        scores[~labels],
        pairs[labels],
        pairs[~labels],
        quality=quality,
        prior=prior,
    )
    calibration.statistics.update(
        n_speakers=n_speakers, n_utterances=len(ids), seed=seed
    )
    calibration.fitted_on = weights_fingerprint(folder)
    if calibration.slope <= 0:
        logger.warning(
            "%s: no calibration.json written: the fit on %d speakers has "
            "slope %.4f <= 0 (its cosine scores do not separate them)",
            folder,
            n_speakers,
            calibration.slope,
        )
    else:
        from speechbrain_mrmha.inference.card import write_model_card

        write_calibration(folder, calibration)
        write_model_card(folder)  # the card now states the calibration
    logger.info("calibration: %s", calibration.summary())
    return calibration
