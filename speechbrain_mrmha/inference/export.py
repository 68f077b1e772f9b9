"""Export of a pretrained folder as one ONNX or TorchScript file whose
embeddings stay exact under batch padding. The runtimes that embed with a
folder or an exported file are ``inference.backends``.

The exported graph (``WaveformEmbedder``) takes

* ``wavs``: float32 (batch, samples) waveforms at 16 kHz, zero-padded (the
  graph zeroes every sample past a row's length itself, so the padding
  content does not matter), and
* ``lengths``: int64 (batch,) valid **sample counts**, not SpeechBrain's
  relative lengths: integers name every length exactly at any duration,
  every runtime knows them, and the graph derives the exact frames of each
  signal alone from them (``lengths.frame_counts``), the frames
  ``FrameExactLengths`` recovers in PyTorch only with the padded sample
  count at hand;

and returns float32 ``embeddings`` (batch, emb_dim) and bool ``usable``
(batch,): False for a row whose embedding must not be scored, computed in
the graph (``layers.lengths.usable_rows``): a length outside
[``min_samples``, samples] (so every row of an input shorter than
``min_samples``), or valid samples below the silence floor
(``layers.lengths.SILENCE_FLOOR_DBFS``: digital zero, near-silence). The
onnxruntime backend turns it into an error naming the rows; other runtimes
must check it. Batch and time axes are dynamic; Fbank and the sentence mean
normalisation are inside the graph.
``features_input=True`` exports ``FeatureEmbedder`` instead: ``feats``
(batch, frames, n_mels) Fbank features (before the mean normalisation,
which stays inside) and int64 valid **frame counts**.

Long inputs: the graph encodes every length in a single pass
(``ResNet34.chunk_frames`` is not applied inside it), which equals PyTorch's
windowed encoding of inputs longer than ``chunk_frames`` (2048 frames,
20.47 s by default) up to float rounding (``speechbrain_mrmha.layers.windowing``):
no length is refused, but memory grows with the longest input of a batch
instead of staying bounded by the window.

Folders written with SpeechBrain's ``StatisticsPooling`` (a Python loop
over the batch that adds random noise of 1e-5 to 9e-5 to the means) export
with ``pooling.MaskedStatisticsPooling`` in its place, the noise's
midpoint, 5e-5, added to the means; newer folders train with that layer.

Authors
 * speechbrain-mrmha developers
"""

import contextlib
import copy
import io
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from speechbrain_mrmha.dataio.files import atomic_write
from speechbrain_mrmha.layers.lengths import (
    SILENCE_FLOOR_DBFS,
    frame_counts,
    relative_lengths,
    usable_rows,
)
from speechbrain_mrmha.layers.pooling import MaskedStatisticsPooling

__all__ = [
    "FORMATS",
    "require_packages",
    "FeatureEmbedder",
    "WaveformEmbedder",
    "deployable",
    "check_out",
    "export_module",
    "export_model",
    "relative_to_folder",
    "read_metadata",
]

FORMATS = ("onnx", "torchscript")
# the file name endings each format is loaded by (load_backend needs .onnx)
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts", ".jit")}
ARTICLES = {"onnx": "an ONNX", "torchscript": "a TorchScript"}
EXPORT_EXTRA = "pip install speechbrain-mrmha[export]"
PARITY = 0.9999  # smallest cosine an export must reach against PyTorch
OPSET = 18
# SpeechBrain's StatisticsPooling adds 1e-5 * (9 - 8 g) to the means, g in
# [0, 1]: its stand-in in the exported graph adds the midpoint instead
STATISTICS_MEAN_OFFSET = 5e-5


def require_packages(*names):
    """Import the optional export packages, or say how to install them.

    Arguments
    ---------
    *names : str
        Module names (onnx, onnxscript, onnxruntime).

    Example
    -------
    >>> require_packages("json")
    >>> require_packages("no_such_module_here")
    Traceback (most recent call last):
    ...
    ImportError: no_such_module_here not installed (needed for ONNX export and the onnxruntime backend): pip install speechbrain-mrmha[export]
    """
    import importlib

    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"{', '.join(missing)} not installed (needed for ONNX export and "
            f"the onnxruntime backend): {EXPORT_EXTRA}"
        )


class FeatureEmbedder(nn.Module):
    """Embeddings of padded Fbank features and their valid frame counts:
    sentence mean normalisation, then the embedding model, both handed
    frame-exact relative lengths (``lengths.relative_lengths``).

    Arguments
    ---------
    mean_var_norm : torch.nn.Module
        SpeechBrain's ``InputNormalization`` (called with relative lengths).
    embedding_model : torch.nn.Module
        ``speechbrain_mrmha.layers.resnet.ResNet34`` (or any module with its call).

    Example
    -------
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain_mrmha.layers.resnet import ResNet34
    >>> model = ResNet34(channels=[2, 2, 2, 2], block_counts=[1, 1, 1, 1], lin_neurons=4)
    >>> embedder = FeatureEmbedder(InputNormalization(norm_type="sentence"), model).eval()
    >>> embedder(torch.randn(2, 50, 40), torch.tensor([50, 31])).shape
    torch.Size([2, 4])
    """

    def __init__(self, mean_var_norm, embedding_model):
        super().__init__()
        self.mean_var_norm = mean_var_norm
        self.embedding_model = embedding_model

    def forward(self, feats, lengths):
        """Embeds (batch, frames, n_mels) features.

        Arguments
        ---------
        feats : torch.Tensor
            (batch, frames, n_mels) float32 features.
        lengths : torch.Tensor
            (batch,) int64 valid frames of each row, in [1, frames].

        Returns
        -------
        embeddings : torch.Tensor
            (batch, emb_dim).
        """
        rel = relative_lengths(lengths, feats.shape[1])
        feats = self.mean_var_norm(feats, rel)
        return self.embedding_model(feats, rel)[:, 0]


class WaveformEmbedder(nn.Module):
    """Embeddings of zero-padded waveforms and their valid sample counts:
    samples past each count are zeroed, then Fbank, and the features with
    the frames of each signal alone (1 + samples // hop) go through a
    ``FeatureEmbedder``; with them, which rows are usable
    (``layers.lengths.usable_rows``: a length in [``min_samples``, samples]
    and a level at or above the silence floor).

    Arguments
    ---------
    compute_features : torch.nn.Module
        SpeechBrain's ``Fbank`` (a centred STFT).
    embedder : FeatureEmbedder

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain_mrmha.layers.resnet import ResNet34
    >>> model = ResNet34(channels=[2, 2, 2, 2], block_counts=[1, 1, 1, 1], lin_neurons=4)
    >>> embedder = WaveformEmbedder(
    ...     Fbank(n_mels=40),
    ...     FeatureEmbedder(InputNormalization(norm_type="sentence"), model),
    ... ).eval()
    >>> embeddings, usable = embedder(torch.randn(2, 8000), torch.tensor([8000, 5555]))
    >>> embeddings.shape, usable
    (torch.Size([2, 4]), tensor([True, True]))
    >>> embedder(torch.zeros(2, 8000), torch.tensor([8000, 100]))[1]
    tensor([False, False])
    """

    def __init__(self, compute_features, embedder):
        super().__init__()
        stft = getattr(compute_features, "compute_STFT", None)
        if stft is None or not getattr(stft, "center", False):
            raise ValueError(
                "WaveformEmbedder needs a feature extractor with a centred "
                "STFT in compute_STFT (SpeechBrain's Fbank), got "
                f"{type(compute_features).__name__}"
            )
        self.compute_features = compute_features
        self.embedder = embedder
        self.hop = int(stft.hop_length)
        self.sample_rate = int(stft.sample_rate)
        # the centred STFT reflects n_fft // 2 samples at each end
        self.min_samples = int(stft.n_fft) // 2 + 1

    def forward(self, wavs, lengths):
        """Embeds (batch, samples) waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) float32 waveforms, zero-padded.
        lengths : torch.Tensor
            (batch,) int64 valid samples of each row, in [1, samples].

        Returns
        -------
        embeddings : torch.Tensor
            (batch, emb_dim).
        usable : torch.Tensor
            (batch,) bool: False where the embedding must not be scored
            (length outside [min_samples, samples], or silence).
        """
        usable = usable_rows(wavs, lengths, self.min_samples)
        steps = torch.arange(wavs.shape[1], device=wavs.device)
        wavs = wavs * (steps[None, :] < lengths[:, None]).to(wavs.dtype)
        feats = self.compute_features(wavs)
        embeddings = self.embedder(feats, frame_counts(lengths, self.hop))
        return embeddings, usable


def _drop_hooks(module):
    """Remove every forward (pre-)hook of a module tree (a copy's)."""
    for sub in module.modules():
        for name in (
            "_forward_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_hooks_always_called",
            "_forward_pre_hooks",
            "_forward_pre_hooks_with_kwargs",
        ):
            hooks = getattr(sub, name, None)
            if hooks is not None:
                hooks.clear()


def deployable(encoder, features_input=False):
    """The graph module of a loaded pretrained model, ready to export: a
    copy of its modules (the encoder is unchanged) without the
    ``FrameExactLengths`` hooks (the graph gets exact lengths itself), in
    eval mode, with contiguous weights, ``chunk_frames`` off (one pass for
    every length, see the module docstring) and SpeechBrain's
    ``StatisticsPooling`` (of folders written before
    ``pooling.MaskedStatisticsPooling``) replaced by that layer.

    Arguments
    ---------
    encoder : speechbrain.inference.EncoderClassifier or backends.TorchEncoder or dict
        A loaded pretrained model, or its modules ``compute_features``,
        ``mean_var_norm`` and ``embedding_model`` by name.
    features_input : bool
        False: a ``WaveformEmbedder`` (waveforms, sample counts); True: a
        ``FeatureEmbedder`` (Fbank features, frame counts).

    Returns
    -------
    module : WaveformEmbedder or FeatureEmbedder

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.nnet.pooling import StatisticsPooling
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain_mrmha.layers.resnet import ResNet34
    >>> mods = {"compute_features": Fbank(n_mels=40),
    ...         "mean_var_norm": InputNormalization(norm_type="sentence"),
    ...         "embedding_model": ResNet34(channels=[2, 2, 2, 2],
    ...             block_counts=[1, 1, 1, 1], lin_neurons=4,
    ...             pooling=StatisticsPooling())}
    >>> module = deployable(mods)
    >>> type(module).__name__, type(module.embedder.embedding_model.pooling).__name__
    ('WaveformEmbedder', 'MaskedStatisticsPooling')
    >>> module.embedder.embedding_model.chunk_frames is None, mods["embedding_model"].chunk_frames
    (True, 2048)
    """
    from speechbrain.nnet.pooling import StatisticsPooling

    mods = encoder if isinstance(encoder, dict) else encoder.mods
    names = ["mean_var_norm", "embedding_model"]
    if not features_input:
        names.insert(0, "compute_features")
    copies = copy.deepcopy(nn.ModuleDict({name: mods[name] for name in names}))
    _drop_hooks(copies)
    copies = copies.to(memory_format=torch.contiguous_format).cpu().eval()
    model = copies["embedding_model"]
    model.chunk_frames = None
    if isinstance(model.pooling, StatisticsPooling):
        model.pooling = MaskedStatisticsPooling(
            input_size=model.frame_dim,
            return_mean=model.pooling.return_mean,
            return_std=model.pooling.return_std,
            mean_offset=STATISTICS_MEAN_OFFSET,
        )
    module = FeatureEmbedder(copies["mean_var_norm"], model)
    if not features_input:
        module = WaveformEmbedder(copies["compute_features"], module)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


def _example_inputs(module, generator=None):
    """A padded batch of 3 rows whose lengths are no multiple of the hop."""
    if isinstance(module, WaveformEmbedder):
        lengths = torch.tensor([12345, 7919, 4001])
        wavs = 0.1 * torch.randn(3, 12345, generator=generator)
    else:
        lengths = torch.tensor([77, 50, 23])
        n_mels = module.embedding_model.n_mels
        wavs = torch.randn(3, 77, n_mels, generator=generator)
    steps = torch.arange(wavs.shape[1])
    keep = steps[None, :] < lengths[:, None]
    wavs = wavs * keep.view(*keep.shape, *[1] * (wavs.dim() - 2))
    return wavs, lengths


def _names(module):
    if isinstance(module, WaveformEmbedder):
        return ["wavs", "lengths"], ["embeddings", "usable"]
    return ["feats", "lengths"], ["embeddings"]


def _outputs(result):
    """The outputs of a graph or module as a tuple."""
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def check_out(out, format):
    """Refuse a folder as the file to write, naming it; warn when the file
    name does not end as ``format`` files do (``SUFFIXES``: an ONNX file
    not ending in .onnx is not taken by ``backends.load_backend``).

    Arguments
    ---------
    out : str or Path
        The file to write.
    format : str
        "onnx" or "torchscript".

    Returns
    -------
    out : Path

    Example
    -------
    >>> import tempfile, warnings
    >>> folder = tempfile.mkdtemp()
    >>> check_out(folder, "onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    IsADirectoryError: --out .../tmp...: is a folder; give the file to write, e.g. .../model.onnx
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = check_out(folder + "/m.pt", "onnx")
    >>> str(caught[0].message)  # doctest: +ELLIPSIS
    '--out .../m.pt: an ONNX file usually ends in .onnx, not .pt (...)'
    """
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(
            f"--out {out}: is a folder; give the file to write, e.g. "
            f"{out / ('model' + SUFFIXES[format][0])}"
        )
    if out.suffix.lower() not in SUFFIXES[format]:
        warnings.warn(
            f"--out {out}: {ARTICLES[format]} file usually ends in "
            f"{' or '.join(SUFFIXES[format])}, not {out.suffix or 'nothing'} "
            "(load_backend and other tools pick the runtime by the ending)",
            UserWarning,
            stacklevel=3,
        )
    return out


def _to_onnx(module, example):
    """The ONNX model (``onnx.ModelProto``) of ``module``, from torch's
    dynamo exporter, weights inside (no external data)."""
    require_packages("onnx", "onnxscript")
    from torch.export import Dim

    batch = Dim("batch", min=1)
    if isinstance(module, WaveformEmbedder):
        time = Dim("samples", min=module.min_samples)
    else:
        time = Dim("frames", min=1)
    inputs, outputs = _names(module)
    quiet = io.StringIO()
    log = logging.getLogger("torch.onnx")  # "torchvision is not installed"
    level = log.level
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(quiet),
        torch.no_grad(),
        contextlib.ExitStack() as restore,
    ):
        warnings.simplefilter("ignore")
        log.setLevel(logging.ERROR)
        restore.callback(log.setLevel, level)
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=({0: batch, 1: time}, {0: batch}),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    return program.model_proto


def _to_torchscript(module, example):
    """A traced TorchScript module (value checks are left out of the trace,
    every shape stays symbolic)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings of skipped checks
        return torch.jit.trace(module, example, check_trace=False)


def _cosines(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def export_module(module, out, format="onnx", metadata=None, check=True):
    """Export a ``WaveformEmbedder`` or ``FeatureEmbedder`` to one file,
    written atomically (the file is complete or absent, no external data).

    With ``check`` the exported graph first embeds a padded batch of three
    rows whose lengths are no multiple of the hop, and also a single row
    (one sample count at which nothing was traced), and nothing is written
    unless every cosine to the PyTorch module's embeddings is >= 0.9999
    and, for a waveform graph, its ``usable`` output flags a silent row and
    a row shorter than ``min_samples`` (and no other).

    ``out`` must not be a folder (an error naming it); a name that does not
    end as ``format`` files do gets a warning (``check_out``).

    Arguments
    ---------
    module : WaveformEmbedder or FeatureEmbedder
        From ``deployable``.
    out : str or Path
        The file to write (.onnx or .pt by convention).
    format : str
        "onnx" (dynamo exporter, needs onnx and onnxscript; the check needs
        onnxruntime) or "torchscript" (``torch.jit.trace``).
    metadata : dict or None
        str -> str entries stored in the ONNX file (``metadata_props``) or
        in the TorchScript file's ``extra_files`` as ``metadata.json``.
    check : bool
        Run the parity check before writing.

    Returns
    -------
    out : Path

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain_mrmha.layers.resnet import ResNet34
    >>> model = ResNet34(channels=[2, 2, 2, 2], block_counts=[1, 1, 1, 1], lin_neurons=4)
    >>> module = deployable({"mean_var_norm": InputNormalization(norm_type="sentence"),
    ...                      "embedding_model": model}, features_input=True)
    >>> out = export_module(module, tempfile.mkdtemp() + "/m.pt", "torchscript")
    >>> torch.jit.load(out)(torch.randn(2, 30, 40), torch.tensor([30, 17])).shape
    torch.Size([2, 4])
    """
    if format not in FORMATS:
        raise ValueError(
            f"unknown export format {format!r}; use {' or '.join(FORMATS)}"
        )
    out = check_out(out, format)
    metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
    module = module.eval()
    example = _example_inputs(module, torch.Generator().manual_seed(0))
    if format == "onnx":
        proto = _to_onnx(module, example)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        payload = proto.SerializeToString()
        if check:
            require_packages("onnxruntime")
            run = _onnx_runner(payload)
    else:
        traced = _to_torchscript(module, example)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit
            torch.jit.save(
                traced,
                buffer,
                _extra_files={"metadata.json": json.dumps(metadata)},
            )
            loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
        payload = buffer.getvalue()
        run = lambda *inputs: loaded(*inputs)  # noqa: E731
    if check:
        _check_parity(module, run)
    with atomic_write(out, "wb") as handle:
        handle.write(payload)
    return out


def _onnx_runner(payload):
    """A function (inputs, lengths) -> embeddings of an ONNX model."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        payload, providers=["CPUExecutionProvider"]
    )
    names = [item.name for item in session.get_inputs()]

    def run(inputs, lengths):
        feed = {names[0]: inputs.numpy(), names[1]: lengths.numpy()}
        return tuple(torch.from_numpy(x) for x in session.run(None, feed))

    return run


def _check_parity(module, run):
    """Raise unless ``run`` matches ``module`` on a fresh padded batch and
    on one row alone (cosine >= PARITY), and a waveform graph's ``usable``
    output flags exactly what the module flags: a silent row and a row
    shorter than ``min_samples``, not the others."""
    inputs, lengths = _example_inputs(module, torch.Generator().manual_seed(1))
    inputs = inputs[:, : inputs.shape[1] - 7]  # shapes not traced
    lengths = lengths.clamp(max=inputs.shape[1])
    with torch.no_grad():
        expected = _outputs(module(inputs, lengths))
        alone = _outputs(module(inputs[1:2, : int(lengths[1])], lengths[1:2]))
    got = _outputs(run(inputs, lengths))
    one = inputs[1:2, : int(lengths[1])].contiguous()
    got_alone = _outputs(run(one, lengths[1:2]))
    worst = min(
        float(_cosines(got[0], expected[0]).min()),
        float(_cosines(got_alone[0], alone[0]).min()),
    )
    if not worst >= PARITY:
        raise ValueError(
            f"the exported graph does not match PyTorch (cosine {worst:.6f} "
            f"< {PARITY}); nothing written"
        )
    if isinstance(module, WaveformEmbedder):
        flagged = inputs.clone()
        flagged[1] = 0.0  # silence
        lengths = lengths.clone()
        lengths[2] = module.min_samples - 1  # too short
        with torch.no_grad():
            wanted = _outputs(module(flagged, lengths))[1]
        flags = _outputs(run(flagged, lengths))[1:]
        if not flags or flags[0].tolist() != wanted.tolist():
            got_flags = flags[0].tolist() if flags else "no usable output"
            raise ValueError(
                "the exported graph does not match PyTorch (usable "
                f"{got_flags}, expected {wanted.tolist()}); nothing written"
            )


def export_model(
    folder,
    out,
    format="onnx",
    features_input=False,
    metadata=None,
    trust_folder=False,
):
    """Export a pretrained folder (written by the recipe) to one ONNX or
    TorchScript file, atomically, after the parity check of
    ``export_module``.

    The file records in its metadata what its inputs and outputs are
    (``graph``, ``lengths``, ``outputs``), ``sample_rate``, ``hop``,
    ``min_samples``, ``silence_floor_dbfs`` (waveform graph), ``n_mels``,
    ``emb_dim``, ``chunk_frames`` of the folder's model, the folder's name
    (``pretrained_folder``: its name only, never a path of the machine that
    exported it), and the entries of ``metadata``, in which the folder's
    absolute path is replaced by its name too (``relative_to_folder``).

    ``out`` must not be a folder (an error naming it); a name that does not
    end as ``format`` files do gets a warning (``check_out``).

    Arguments
    ---------
    folder : str or Path
        A pretrained folder (``pretrained.check_pretrained``).
    out : str or Path
        The file to write.
    format : str
        "onnx" or "torchscript".
    features_input : bool
        Export the features graph (``FeatureEmbedder``) instead of the
        waveform graph (``WaveformEmbedder``).
    metadata : dict or None
        More str -> str entries to record (e.g. a decision threshold).
    trust_folder : bool
        Load a folder whose yaml is outside the allow-list
        (``inference.trust``).

    Returns
    -------
    out : Path

    Example
    -------
    >>> export_model("/nonexistent", "m.onnx")
    Traceback (most recent call last):
    ...
    FileNotFoundError: pretrained model folder /nonexistent does not exist
    """
    from speechbrain_mrmha.inference.pretrained import (
        check_pretrained,
        load_encoder,
    )

    if format not in FORMATS:
        raise ValueError(
            f"unknown export format {format!r}; use {' or '.join(FORMATS)}"
        )
    if Path(out).is_dir():  # refused before loading; export_module warns
        check_out(out, format)
    folder = check_pretrained(folder)
    if format == "onnx":
        require_packages("onnx", "onnxscript", "onnxruntime")
    encoder = load_encoder(
        folder, channels_last=False, trust_folder=trust_folder
    )
    module = deployable(encoder, features_input=features_input)
    stft = encoder.mods.compute_features.compute_STFT
    model = encoder.mods.embedding_model
    info = {
        "graph": "features" if features_input else "waveform",
        "lengths": "frames" if features_input else "samples",
        "sample_rate": int(stft.sample_rate),
        "hop": int(stft.hop_length),
        "min_samples": int(stft.n_fft) // 2 + 1,
        "n_mels": model.n_mels,
        "emb_dim": model.linear2.out_features,
        "chunk_frames": model.chunk_frames,
        "pretrained_folder": Path(folder).resolve().name,
        "exporter": "speechbrain_mrmha.inference.export",
    }
    if not features_input:
        info["outputs"] = "embeddings,usable"
        info["usable"] = (
            "False: do not score the row (length outside [min_samples, "
            "samples], or level below silence_floor_dbfs)"
        )
        info["silence_floor_dbfs"] = SILENCE_FLOOR_DBFS
    else:
        info["outputs"] = "embeddings"
    info.update(metadata or {})
    info = {
        key: relative_to_folder(value, folder) for key, value in info.items()
    }
    try:
        return export_module(module, out, format, metadata=info)
    except (ImportError, ValueError):
        raise
    except Exception as error:  # the exporters raise many types
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(
            f"{folder}: {format} export failed ({type(error).__name__}: "
            f"{first})"
        ) from None


def relative_to_folder(value, folder):
    """``value`` as a string with every occurrence of ``folder``'s absolute
    path (as given and resolved) replaced by the folder's name: exported
    metadata travels to other machines and must not record local paths.

    Arguments
    ---------
    value : object
        A metadata value (made a string).
    folder : str or Path
        The pretrained folder.

    Returns
    -------
    value : str

    Example
    -------
    >>> relative_to_folder("default; no /data/run1/pretrained/v.json", "/data/run1/pretrained")
    'default; no pretrained/v.json'
    >>> relative_to_folder(16000, "/data/run1/pretrained")
    '16000'
    """
    value = str(value)
    folder = Path(folder)
    paths = {str(folder.absolute()), str(folder.resolve())}
    for path in sorted(paths, key=len, reverse=True):
        value = value.replace(path, folder.name)
    return value


def read_metadata(path):
    """The metadata an exported ONNX file records (``export_model``).

    Arguments
    ---------
    path : str or Path
        An ``.onnx`` file.

    Returns
    -------
    metadata : dict
        str -> str.

    Example
    -------
    >>> read_metadata("/nonexistent/model.onnx")
    Traceback (most recent call last):
    ...
    FileNotFoundError: exported model /nonexistent/model.onnx does not exist
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {path} does not exist")
    require_packages("onnx")
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises its own types
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not an ONNX file ({first})") from None
    return {entry.key: entry.value for entry in proto.metadata_props}
