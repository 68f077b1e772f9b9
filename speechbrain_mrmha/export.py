"""Write and check a pretrained-model folder that SpeechBrain's
``EncoderClassifier.from_hparams`` and ``SpeakerRecognition.from_hparams``
load with no network:

<folder>/hyperparams.yaml       sizes + pooling settings, hparams/model.yaml, hparams/pretrained_interface.yaml
<folder>/embedding_model.ckpt   ResNet-34 + pooling + Linear1/Linear2
<folder>/classifier.ckpt        CosAMS cosine classifier
<folder>/label_encoder.txt      training speakers (also as label_encoder.ckpt,
                                the name SpeechBrain's Pretrainer looks for)

Authors
 * speechbrain-mrmha developers
"""

import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from speechbrain_mrmha.extraction import use_channels_last

INTERFACE_DIR = Path(__file__).resolve().parents[1] / "hparams"
MODEL_FILE = INTERFACE_DIR / "model.yaml"
INTERFACE_FILE = INTERFACE_DIR / "pretrained_interface.yaml"
SIZE_KEYS = ("n_mels", "channels", "block_counts", "emb_dim", "n_classes")
FOLDER_FILES = ("hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt", "label_encoder.txt")


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return value


def pooling_settings(pooling):
    """The plain settings that ``speechbrain_mrmha.pooling.build_pooling``
    (and so hparams/model.yaml) needs to rebuild a pooling module.

    Arguments
    ---------
    pooling : torch.nn.Module
        A class of ``POOLINGS`` or SpeechBrain's ``StatisticsPooling``.

    Returns
    -------
    settings : dict
        ``pooling`` (registry name), ``num_heads``, ``temperatures``,
        ``learnable_temperatures``, ``attention_std``, ``attention_hidden``,
        ``attention_activation``.

    Example
    -------
    >>> from speechbrain_mrmha.pooling import MultiResolutionMultiHeadAttentionPooling
    >>> settings = pooling_settings(MultiResolutionMultiHeadAttentionPooling(input_size=4, num_heads=2))
    >>> settings["pooling"], settings["num_heads"], settings["temperatures"]
    ('mrmha', 2, [1.0, 1.0])
    """
    from speechbrain.nnet.pooling import StatisticsPooling

    from speechbrain_mrmha.pooling import POOLINGS

    names = {cls: name for name, cls in POOLINGS.items()}
    settings = {"pooling": None, "num_heads": None, "temperatures": None,
                "learnable_temperatures": False, "attention_std": False,
                "attention_hidden": None, "attention_activation": "tanh"}
    if type(pooling) is StatisticsPooling:
        if not (pooling.return_mean and pooling.return_std):
            raise ValueError("cannot export a StatisticsPooling without both mean and std")
        settings["pooling"] = "statistics"
        return settings
    if type(pooling) not in names:
        raise ValueError(
            f"cannot export pooling {type(pooling).__name__}: not in "
            "speechbrain_mrmha.pooling.POOLINGS"
        )
    settings["pooling"] = names[type(pooling)]
    accepted = inspect.signature(type(pooling).__init__).parameters
    attributes = {"num_heads": "num_heads", "temperatures": "temperatures",
                  "learnable_temperatures": "learnable_temperatures", "std": "attention_std",
                  "hidden_size": "attention_hidden", "activation": "attention_activation"}
    for argument, key in attributes.items():
        if argument in accepted:
            settings[key] = _plain(getattr(pooling, argument))
    return settings


def write_pretrained(
    folder,
    embedding_model,
    classifier,
    label_encoder,
    sizes,
    model_file=MODEL_FILE,
    interface_file=INTERFACE_FILE,
):
    """Write a pretrained-model folder atomically (a rerun replaces it whole).

    Arguments
    ---------
    folder : str or Path
        Where the folder goes.
    embedding_model : speechbrain_mrmha.resnet.ResNet34
        Trained embedding model (its ``pooling`` is exported too).
    classifier : torch.nn.Module
        Trained cosine classifier.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        The training speakers.
    sizes : dict
        ``n_mels``, ``channels``, ``block_counts``, ``emb_dim``, ``n_classes``.
    model_file, interface_file : str or Path
        The model definition and the interface tail (top-level ``hparams/``).

    Returns
    -------
    folder : Path

    Example
    -------
    >>> from speechbrain.dataio.encoder import CategoricalEncoder
    >>> from speechbrain_mrmha.resnet import ResNet34
    >>> from speechbrain_mrmha.cosams import CosineClassifier
    >>> model = ResNet34(channels=[2, 2, 2, 2], block_counts=[1, 1, 1, 1], lin_neurons=4)
    >>> encoder = CategoricalEncoder(); encoder.update_from_iterable(["a", "b"])
    >>> sizes = dict(n_mels=40, channels=[2, 2, 2, 2], block_counts=[1, 1, 1, 1],
    ...              emb_dim=4, n_classes=2)
    >>> out = write_pretrained(tempfile.mkdtemp() + "/model", model,
    ...                        CosineClassifier(4, 2), encoder, sizes)
    >>> sorted(p.name for p in out.iterdir())[:3]
    ['classifier.ckpt', 'embedding_model.ckpt', 'hyperparams.yaml']
    """
    folder = Path(folder)
    missing = [key for key in SIZE_KEYS if key not in sizes]
    if missing:
        raise ValueError(f"write_pretrained: sizes lacks {missing}")
    header = [
        "# Generated by speechbrain_mrmha.export.write_pretrained: model sizes,",
        f"# then {Path(model_file).name}, then {Path(interface_file).name}.",
    ]
    values = {**{key: sizes[key] for key in SIZE_KEYS}, **pooling_settings(embedding_model.pooling)}
    header += [f"{key}: {json.dumps(_plain(value))}" for key, value in values.items()]
    text = "\n".join(header) + "\n\n"
    text += Path(model_file).read_text() + "\n" + Path(interface_file).read_text()

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        (staging / "hyperparams.yaml").write_text(text)
        torch.save(embedding_model.state_dict(), staging / "embedding_model.ckpt")
        torch.save(classifier.state_dict(), staging / "classifier.ckpt")
        label_encoder.save(staging / "label_encoder.txt")
        shutil.copyfile(staging / "label_encoder.txt", staging / "label_encoder.ckpt")
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=folder.name + ".old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(staging, folder)
            shutil.rmtree(old)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return folder


def check_pretrained(folder):
    """Raise a clear error if ``folder`` is not a complete pretrained folder.

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
        raise FileNotFoundError(f"pretrained model folder {folder} does not exist")
    missing = [name for name in FOLDER_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"pretrained model folder {folder} lacks {', '.join(missing)} "
            "(it is written at the end of train_speaker_embeddings.py)"
        )
    return folder


def load_encoder(folder, savedir=None, device="cpu", channels_last=True):
    """Load a pretrained folder with SpeechBrain's ``EncoderClassifier``.

    Arguments
    ---------
    folder : str or Path
        A folder written by ``write_pretrained``.
    savedir : str or Path, optional
        Where SpeechBrain links the files (default ``<folder>/.sb_cache``).
    device : str
        ``"cpu"`` or ``"cuda:N"``.
    channels_last : bool
        Store the convolution weights channels-last (``use_channels_last``):
        1.3-1.4x faster extraction on CPU (docs/BENCHMARKS.md), same
        embeddings up to float rounding.

    Returns
    -------
    encoder : speechbrain.inference.EncoderClassifier
    """
    from speechbrain.inference.classifiers import EncoderClassifier

    folder = check_pretrained(folder).resolve()
    savedir = Path(savedir) if savedir else folder / ".sb_cache"
    encoder = EncoderClassifier.from_hparams(
        source=str(folder), savedir=str(savedir), run_opts={"device": device}
    )
    if channels_last:
        use_channels_last(encoder)
    return encoder
