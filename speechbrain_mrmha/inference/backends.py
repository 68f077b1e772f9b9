"""Runtime backends: what embeds a padded batch of waveforms, behind one
encoder contract that the extraction (``extraction.encode_signals``,
``embed_files``) and the model object use without telling backends apart.

The contract, met by ``TorchEncoder`` (a pretrained folder run by PyTorch)
and ``OnnxEncoder`` (an exported waveform graph run by onnxruntime):

* attributes ``device`` (str), ``sample_rate`` (int), ``min_samples``
  (int, the fewest padded samples the features accept), ``emb_dim`` (int),
  ``source`` (str, the folder or file) and ``precisions`` (tuple of the
  precision names it runs, ``PRECISIONS`` keys);
* ``encode(wavs, lengths, precision="fp32") -> (embeddings, entropies)``:
  ``wavs`` (batch, samples) float32 waveforms at ``sample_rate``, padded
  (samples past a row's count are zeroed: the padding content does not
  matter); ``lengths`` (batch,) int64 **valid sample counts** in
  [``min_samples``, samples] (``check_padded_batch``); ``embeddings``
  (batch, emb_dim) float32 on the CPU; ``entropies`` (batch, heads)
  attention entropy per utterance, or None (onnxruntime, poolings without
  attention).

No verdict without speech: a row whose valid samples lie below the one
silence floor (``layers.lengths.SILENCE_FLOOR_DBFS``: digital zero,
near-silence, a bare DC offset) gets no embedding. ``encode`` raises one
``NoSignalError`` naming every such row, in every backend: PyTorch computes
``layers.lengths.usable_rows`` itself, the exported waveform graph returns
it as its ``usable`` output.

``load_backend`` picks the backend of a path: a folder runs in PyTorch, an
``.onnx`` file in onnxruntime.

Authors
 * speechbrain-mrmha developers
"""

import functools
from pathlib import Path

import torch

from speechbrain_mrmha.dataio.problems import raise_problems
from speechbrain_mrmha.inference.export import require_packages
from speechbrain_mrmha.layers.lengths import (
    FrameExactLengths,
    level_problem,
    signal_levels,
    usable_rows,
)
from speechbrain_mrmha.layers.pooling import attention_entropy

__all__ = [
    "PRECISIONS",
    "check_precision",
    "check_padded_batch",
    "NoSignalError",
    "refuse_unusable",
    "TorchEncoder",
    "OnnxEncoder",
    "as_backend",
    "load_backend",
]

# precision name -> autocast dtype (None: plain float32)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
ONNX_SUFFIX = ".onnx"


def check_precision(precision, supported=tuple(PRECISIONS), source=None):
    """Raise a ValueError unless ``precision`` is a known name that
    ``source`` runs in.

    Arguments
    ---------
    precision : str
        A key of ``PRECISIONS``.
    supported : tuple of str
        The names the backend runs (its ``precisions``).
    source : str or None
        The backend's model, named in the message.

    Returns
    -------
    precision : str
        As given.

    Example
    -------
    >>> check_precision("bf16")
    'bf16'
    >>> check_precision("fp8")
    Traceback (most recent call last):
    ...
    ValueError: precision must be one of ['bf16', 'fp16', 'fp32'], got 'fp8'
    >>> check_precision("bf16", ("fp32",), "m.onnx")
    Traceback (most recent call last):
    ...
    ValueError: precision bf16: m.onnx runs in fp32 only
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
        )
    if precision not in supported:
        runs = ", ".join(supported) + " only" * (len(supported) == 1)
        raise ValueError(
            f"precision {precision}: {source or 'this backend'} runs in {runs}"
        )
    return precision


def check_padded_batch(wavs, lengths, min_samples=1, source=None):
    """Raise a ValueError naming ``source`` unless ``wavs`` is a (batch,
    samples) waveform batch of at least ``min_samples`` samples and
    ``lengths`` its (batch,) integer valid sample counts in [1, samples],
    none below ``min_samples`` (each row embeds as its signal alone, which
    needs that many samples).

    Arguments
    ---------
    wavs : torch.Tensor
        (batch, samples) waveforms.
    lengths : torch.Tensor
        (batch,) valid samples of each row.
    min_samples : int
        The fewest samples the features accept.
    source : str or None
        The backend's model, the head of the message.

    Returns
    -------
    lengths : torch.Tensor
        As int64 on the CPU.

    Example
    -------
    >>> check_padded_batch(torch.zeros(2, 400), torch.tensor([400, 3]))
    tensor([400,   3])
    >>> check_padded_batch(torch.zeros(2, 400), torch.tensor([1.0, 0.5]))
    Traceback (most recent call last):
    ...
    ValueError: lengths must be integer sample counts, got torch.float32 [1.0, 0.5] (relative lengths? multiply them by the padded samples)
    >>> check_padded_batch(torch.zeros(2, 400), torch.tensor([400, 401]), source="m")
    Traceback (most recent call last):
    ...
    ValueError: m: sample counts [400, 401] must lie in [1, 400] (the padded samples)
    >>> check_padded_batch(torch.zeros(2, 400), torch.tensor([400, 100]), 201)
    Traceback (most recent call last):
    ...
    ValueError: sample counts [400, 100]: rows [1] have fewer than 201 samples, too few for the features
    """
    head = f"{source}: " if source else ""
    if (
        not torch.is_tensor(wavs)
        or not torch.is_tensor(lengths)
        or wavs.dim() != 2
        or tuple(lengths.shape) != tuple(wavs.shape[:1])
    ):
        shapes = [
            tuple(item.shape) if torch.is_tensor(item) else type(item).__name__
            for item in (wavs, lengths)
        ]
        raise ValueError(
            f"{head}expected wavs (batch, samples) and lengths (batch,), got "
            f"{shapes[0]} and {shapes[1]}"
        )
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(
            f"{head}lengths must be integer sample counts, got {lengths.dtype} "
            f"{lengths.tolist()} (relative lengths? multiply them by the "
            "padded samples)"
        )
    lengths = lengths.to("cpu", torch.int64)
    if not bool(((lengths >= 1) & (lengths <= wavs.shape[1])).all()):
        raise ValueError(
            f"{head}sample counts {lengths.tolist()} must lie in "
            f"[1, {wavs.shape[1]}] (the padded samples)"
        )
    if wavs.shape[1] < min_samples:
        raise ValueError(
            f"{head}{wavs.shape[1]} samples are too few for the features "
            f"(at least {min_samples})"
        )
    short = (lengths < min_samples).nonzero().flatten().tolist()
    if short:
        raise ValueError(
            f"{head}sample counts {lengths.tolist()}: rows {short} have "
            f"fewer than {min_samples} samples, too few for the features"
        )
    return lengths


class NoSignalError(ValueError):
    """Rows of a batch with no usable signal (``refuse_unusable``): a
    ValueError whose ``rows`` attribute lists their indexes, so a caller
    can name its files or signals instead.

    Arguments
    ---------
    message : str
        The error, one line per row.
    rows : list of int
        The rows, from 0.

    Example
    -------
    >>> error = NoSignalError("1 row cannot be embedded", [2])
    >>> error.rows, isinstance(error, ValueError)
    ([2], True)
    """

    def __init__(self, message, rows):
        super().__init__(message)
        self.rows = list(rows)


def refuse_unusable(usable, wavs, lengths, source=None):
    """Raise one ``NoSignalError`` naming every row flagged not usable
    (``layers.lengths.usable_rows``: below the silence floor, or non-finite)
    and why; return when every row is usable.

    Arguments
    ---------
    usable : torch.Tensor
        (batch,) bool, from ``usable_rows`` or a graph's ``usable`` output.
    wavs : torch.Tensor
        (batch, samples) the waveforms (their levels go in the message).
    lengths : torch.Tensor
        (batch,) int64 valid sample counts.
    source : str or None
        The backend's model, named in the message.

    Example
    -------
    >>> wavs = torch.zeros(2, 400)
    >>> wavs[0] = 0.1
    >>> wavs[0, ::2] = -0.1
    >>> lengths = torch.tensor([400, 400])
    >>> refuse_unusable(usable_rows(wavs, lengths), wavs, lengths, "m")
    Traceback (most recent call last):
    ...
    speechbrain_mrmha.inference.backends.NoSignalError: 1 row cannot be embedded by m:
      row 1: no usable signal: digital zero or a constant (level -inf dBFS, the floor is -70 dBFS)
    """
    usable = torch.as_tensor(usable, dtype=torch.bool).cpu()
    rows = (~usable).nonzero().flatten().tolist()
    if not rows:
        return
    levels = signal_levels(wavs.detach(), lengths.to(wavs.device)).cpu()
    problems = [
        f"row {row}: "
        + (level_problem(float(levels[row])) or "flagged not usable")
        for row in rows
    ]
    by = f" by {source}" if source else ""
    raise_problems(
        problems,
        f"rows cannot be embedded{by}",
        error=functools.partial(NoSignalError, rows=rows),
    )


class _Encoder:
    """What every backend shares: ``encode`` checks its inputs against the
    backend's ``precisions``, ``min_samples`` and ``source``, then runs the
    backend's ``_encode`` on the checked batch, and refuses the rows it
    flags as holding no usable signal (``refuse_unusable``)."""

    def encode(self, wavs, lengths, precision="fp32"):
        """Embeddings and attention entropies of a padded batch.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) float32 waveforms at ``sample_rate``.
        lengths : torch.Tensor
            (batch,) int64 valid samples of each row, in [1, samples].
        precision : str
            One of the backend's ``precisions``: "fp32", or (PyTorch only)
            "bf16" / "fp16" under ``torch.autocast`` (the attention pooling
            still computes in float32); fast only on hardware with native
            support (GPUs; CPUs with AMX for bf16).

        Returns
        -------
        embeddings : torch.Tensor
            (batch, emb_dim) float32 on the CPU.
        entropies : torch.Tensor or None
            (batch, heads) attention entropy per utterance; None for
            poolings without attention, and from onnxruntime.

        Raises
        ------
        NoSignalError
            Naming every row below the silence floor
            (``layers.lengths.SILENCE_FLOOR_DBFS``).
        """
        check_precision(precision, self.precisions, self.source)
        lengths = check_padded_batch(
            wavs, lengths, self.min_samples, self.source
        )
        embeddings, entropies, usable = self._encode(wavs, lengths, precision)
        refuse_unusable(usable, wavs, lengths, self.source)
        return embeddings, entropies


class TorchEncoder(_Encoder):
    """A pretrained folder run by PyTorch, through SpeechBrain's own
    ``EncoderClassifier.encode_batch`` with sample-relative ``wav_lens``
    (the folder's ``FrameExactLengths`` hooks make each row's frames those
    of the signal alone, so each row embeds as alone); the module docstring
    gives the contract.

    Arguments
    ---------
    folder : str or Path
        A pretrained folder (``pretrained.write_pretrained``), loaded with
        ``pretrained.load_encoder``.
    device : str
        "cpu" or "cuda:N".
    channels_last : bool
        Channels-last convolution weights (``pretrained.load_encoder``).

    Example
    -------
    >>> from speechbrain_mrmha.inference.pretrained import example_folder
    >>> backend = TorchEncoder(example_folder())  # an untrained tiny model
    >>> backend.emb_dim, backend.precisions
    (4, ('fp32', 'bf16', 'fp16'))
    """

    precisions = tuple(PRECISIONS)

    def __init__(self, folder, device="cpu", channels_last=True):
        from speechbrain_mrmha.inference.pretrained import load_encoder

        encoder = load_encoder(
            folder, device=device, channels_last=channels_last
        )
        self._wrap(encoder, str(folder))

    @classmethod
    def from_encoder(cls, encoder, source=None):
        """The backend of an already loaded ``EncoderClassifier``.

        A model without ``FrameExactLengths`` hooks (a folder written before
        them) gets them, kept in ``encoder.hparams`` as newer folders keep
        theirs, so its batches embed exactly too.

        Arguments
        ---------
        encoder : speechbrain.inference.EncoderClassifier
            With ``compute_features`` (SpeechBrain's Fbank),
            ``mean_var_norm`` and ``embedding_model`` modules.
        source : str or None
            Where it came from; None: the folder of its checkpoints.

        Returns
        -------
        backend : TorchEncoder

        Example
        -------
        >>> from speechbrain_mrmha.inference.pretrained import example_folder, load_encoder
        >>> backend = TorchEncoder.from_encoder(load_encoder(example_folder()))
        >>> backend.emb_dim, backend.sample_rate, backend.min_samples
        (4, 16000, 201)
        >>> wavs = 0.1 * torch.randn(2, 8000)
        >>> embeddings, entropies = backend.encode(wavs, torch.tensor([8000, 5555]))
        >>> embeddings.shape, entropies is None
        (torch.Size([2, 4]), True)
        """
        backend = cls.__new__(cls)
        backend._wrap(encoder, source)
        return backend

    def _wrap(self, encoder, source):
        mods = encoder.mods
        stft = getattr(mods.compute_features, "compute_STFT", None)
        if stft is None or not getattr(stft, "center", False):
            raise ValueError(
                f"{source or 'the encoder'}: compute_features must be a "
                "feature extractor with a centred STFT in compute_STFT "
                "(SpeechBrain's Fbank), got "
                f"{type(mods.compute_features).__name__}"
            )
        hparams = encoder.hparams
        if not isinstance(
            getattr(hparams, "frame_exact_lengths", None), FrameExactLengths
        ):
            hparams.frame_exact_lengths = FrameExactLengths(
                mods.compute_features,
                [mods.mean_var_norm, mods.embedding_model],
            )
        if source is None:
            paths = getattr(getattr(hparams, "pretrainer", None), "paths", {})
            checkpoint = paths.get("embedding_model")
            source = (
                str(Path(checkpoint).resolve().parent)
                if checkpoint
                else "encoder"
            )
        self.encoder_classifier = encoder
        self.source = str(source)
        self.device = str(encoder.device)
        self.sample_rate = int(stft.sample_rate)
        # the centred STFT reflects n_fft // 2 samples at each end
        self.min_samples = int(stft.n_fft) // 2 + 1
        self.emb_dim = int(mods.embedding_model.linear2.out_features)

    @property
    def mods(self):
        """The loaded modules (``compute_features``, ``mean_var_norm``,
        ``embedding_model``, ``classifier``)."""
        return self.encoder_classifier.mods

    def _encode(self, wavs, lengths, precision):
        """``encode`` of a checked batch (int64 CPU ``lengths``): the
        embeddings, entropies and ``usable`` flags; nothing is embedded
        unless every row is usable."""
        usable = usable_rows(
            wavs.detach(), lengths.to(wavs.device), self.min_samples
        )
        if not bool(usable.all()):
            return None, None, usable
        # samples past each count are zeroed, as in the exported graph
        steps = torch.arange(wavs.shape[1], device=wavs.device)
        keep = steps[None, :] < lengths.to(wavs.device)[:, None]
        wavs = wavs.float() * keep
        # SpeechBrain's wav_lens: relative to the padded samples
        wav_lens = lengths.to(torch.float32) / wavs.shape[1]
        dtype = PRECISIONS[precision]
        with (
            torch.no_grad(),
            torch.autocast(
                torch.device(self.device).type,
                dtype=dtype or torch.float32,
                enabled=dtype is not None,
            ),
        ):
            embeddings = self.encoder_classifier.encode_batch(wavs, wav_lens)
        pooling = self.mods.embedding_model.pooling
        weights = getattr(pooling, "last_attention", None)
        entropies = None
        if weights is not None:
            entropies = attention_entropy(weights.detach()).cpu()
        return embeddings.squeeze(1).float().cpu(), entropies, usable


class OnnxEncoder(_Encoder):
    """An exported waveform graph (``export.export_model``, ONNX) run by
    onnxruntime on the CPU, in fp32; the module docstring gives the
    contract. So ``--backend onnxruntime`` batches, caches and checks files
    exactly as the PyTorch backend does.

    Arguments
    ---------
    path : str or Path
        An ``.onnx`` file written by ``export.export_model`` (the waveform
        graph).
    threads : int or None
        onnxruntime's intra-op threads (None: its default, all cores).

    Example
    -------
    >>> OnnxEncoder("/nonexistent/model.onnx")
    Traceback (most recent call last):
    ...
    FileNotFoundError: exported model /nonexistent/model.onnx does not exist
    """

    device = "cpu"
    precisions = ("fp32",)

    def __init__(self, path, threads=None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"exported model {path} does not exist")
        require_packages("onnxruntime")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own types
            first = (str(error).strip().splitlines() or [""])[0]
            raise ValueError(
                f"{path}: not an ONNX model onnxruntime can load ({first})"
            ) from None
        self.source = str(path)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        graph = self.metadata.get("graph")
        if graph != "waveform":
            raise ValueError(
                f"{path}: a {graph or 'foreign'} graph; the onnxruntime "
                "backend needs the waveform graph of 'python -m "
                "speechbrain_mrmha export' (without --features-input)"
            )
        self.sample_rate = int(self.metadata["sample_rate"])
        self.min_samples = int(self.metadata["min_samples"])
        self.emb_dim = int(self.metadata["emb_dim"])
        self.outputs = [item.name for item in self.session.get_outputs()]

    def _encode(self, wavs, lengths, precision):
        """``encode`` of a checked batch: fp32, no attention entropies; the
        graph's ``usable`` output (graphs exported before it: the same
        ``usable_rows`` computed here)."""
        wavs = wavs.detach().to("cpu", torch.float32).contiguous()
        feed = {"wavs": wavs.numpy(), "lengths": lengths.numpy()}
        outputs = dict(zip(self.outputs, self.session.run(None, feed)))
        if "usable" in outputs:
            usable = torch.from_numpy(outputs["usable"]).to(torch.bool)
        else:
            usable = usable_rows(wavs, lengths, self.min_samples)
        return torch.from_numpy(outputs["embeddings"]), None, usable


def as_backend(encoder):
    """A backend of the contract for ``encoder``: a loaded SpeechBrain
    model (``EncoderClassifier``) wrapped in ``TorchEncoder.from_encoder``,
    any other object as it is.

    Arguments
    ---------
    encoder : TorchEncoder or OnnxEncoder or speechbrain.inference.EncoderClassifier
        Or any object of the contract.

    Returns
    -------
    backend : object of the contract

    Example
    -------
    >>> class Custom:  # any object of the contract
    ...     pass
    >>> backend = Custom()
    >>> as_backend(backend) is backend
    True
    """
    from speechbrain.inference.interfaces import Pretrained

    if isinstance(encoder, Pretrained):
        return TorchEncoder.from_encoder(encoder)
    return encoder


def load_backend(model, device="cpu", channels_last=True, threads=None):
    """The backend of a model path: a pretrained folder runs in PyTorch
    (``TorchEncoder``), an exported ``.onnx`` file in onnxruntime on the
    CPU (``OnnxEncoder``). Anything else fails with what to give instead.

    Arguments
    ---------
    model : str or Path
        A pretrained folder or an exported ``.onnx`` file.
    device : str
        "cpu" or "cuda:N" (a folder); "cpu" (an .onnx file).
    channels_last : bool
        Channels-last convolution weights (a folder).
    threads : int or None
        onnxruntime's intra-op threads (an .onnx file).

    Returns
    -------
    backend : TorchEncoder or OnnxEncoder

    Example
    -------
    >>> load_backend("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: model /nonexistent does not exist (give a pretrained folder or an exported .onnx file)
    """
    from speechbrain_mrmha.inference.extraction import check_device

    check_device(device)
    path = Path(model)
    if path.is_dir():
        return TorchEncoder(path, device=device, channels_last=channels_last)
    if not path.exists():
        raise FileNotFoundError(
            f"model {path} does not exist (give a pretrained folder or an "
            "exported .onnx file)"
        )
    if path.suffix.lower() != ONNX_SUFFIX:
        raise ValueError(
            f"model {path} is a file but no exported .onnx file: the "
            "pytorch backend takes a pretrained folder, the onnxruntime "
            "backend an .onnx file of 'python -m speechbrain_mrmha export "
            "--format onnx'"
        )
    if torch.device(device).type != "cpu":  # a valid device (check_device)
        raise ValueError(
            f"the onnxruntime backend runs on the cpu here, got device "
            f"{device}; run the pretrained folder for {device}"
        )
    return OnnxEncoder(path, threads=threads)
