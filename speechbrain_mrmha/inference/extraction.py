"""Embedding extraction with any backend of ``inference.backends``
(a pretrained folder in PyTorch, an exported graph in onnxruntime): batches
of similar length, each utterance embedded as alone (the backends take
valid sample counts), a resumable cache (on disk, or in memory) keyed by the
content of each audio file and tied to the model's content, the data folder
and the precision, and a check of the device before any model is loaded.

No verdict without speech: a signal below the silence floor
(``layers.lengths.SILENCE_FLOOR_DBFS``) is never embedded. ``embed_files``
names every such file in one error, before anything is cached for it;
``encode_signals`` names the rows (the backends refuse them).

Authors
 * speechbrain-mrmha developers
"""

import json
import time
from pathlib import Path

import torch

from speechbrain_mrmha.dataio.audio import load_audio
from speechbrain_mrmha.dataio.files import atomic_write, content_digest
from speechbrain_mrmha.dataio.problems import raise_problems
from speechbrain_mrmha.inference.backends import as_backend, check_precision
from speechbrain_mrmha.layers.lengths import (
    SILENCE_FLOOR_DBFS,
    level_problem,
    signal_levels,
)

# Padded audio per batch when none is given: on a CPU, batching long padded
# batches only adds padding and cache misses (docs/BENCHMARKS.md), on a GPU
# large batches are what fills the device.
DEFAULT_BATCH_SECONDS = {"cpu": 12.0, "cuda": 240.0}
# the files of a pretrained folder that define its embeddings
MODEL_FILES = ("embedding_model.ckpt", "hyperparams.yaml")


def encode_signals(encoder, signals, precision="fp32"):
    """Embed a list of signals as one zero-padded batch: the backend gets
    the batch and the valid sample count of every signal, and embeds each
    as it would alone.

    Arguments
    ---------
    encoder : backends.TorchEncoder or backends.OnnxEncoder
        A backend (``backends.load_backend``), or a loaded
        ``speechbrain.inference.EncoderClassifier``, which is run as a
        ``backends.TorchEncoder``.
    signals : list of torch.Tensor
        (samples,) waveforms.
    precision : str
        A name of the backend's ``precisions``: "fp32", or "bf16" / "fp16"
        under ``torch.autocast`` (PyTorch only; see
        ``backends.TorchEncoder.encode``).

    Returns
    -------
    embeddings : torch.Tensor
        (batch, emb_dim) on the CPU.
    entropies : torch.Tensor or None
        (batch, heads) attention entropy per utterance, None for poolings
        without attention and the onnxruntime backend.

    Raises
    ------
    backends.NoSignalError
        From the backend, naming every row (the index in ``signals``) with
        no usable signal (``layers.lengths.SILENCE_FLOOR_DBFS``).

    Example
    -------
    >>> class Sums:  # a stand-in backend of the contract
    ...     device, precisions = "cpu", ("fp32",)
    ...     def encode(self, wavs, lengths, precision="fp32"):
    ...         return torch.stack([wavs.sum(1), lengths.float()], 1), None
    >>> encode_signals(Sums(), [torch.ones(3), torch.ones(5)])
    (tensor([[3., 3.],
            [5., 5.]]), None)
    """
    lengths = torch.tensor([s.shape[0] for s in signals], dtype=torch.int64)
    batch = torch.zeros(len(signals), int(lengths.max()))
    for row, signal in enumerate(signals):
        batch[row, : signal.shape[0]] = signal
    return as_backend(encoder).encode(batch, lengths, precision)


def default_batch_seconds(device):
    """Padded audio per batch for ``device`` ("cpu", "cuda:0", ...).

    Example
    -------
    >>> default_batch_seconds("cpu"), default_batch_seconds("cuda:1")
    (12.0, 240.0)
    """
    return DEFAULT_BATCH_SECONDS[
        "cpu" if torch.device(device).type == "cpu" else "cuda"
    ]


def use_channels_last(encoder):
    """Store the encoder's convolution weights channels-last (NHWC), the
    layout oneDNN and cuDNN convolve fastest; activations follow the
    weights. Values are unchanged, results equal up to float rounding.

    Arguments
    ---------
    encoder : speechbrain.inference.EncoderClassifier

    Returns
    -------
    encoder : the same object, converted in place.
    """
    encoder.mods.embedding_model.to(memory_format=torch.channels_last)
    return encoder


def length_batches(durations, batch_seconds, max_batch_size):
    """Group items sorted by duration into batches of at most
    ``batch_seconds`` of padded audio and ``max_batch_size`` items.

    Arguments
    ---------
    durations : list of float
        Duration of each item, seconds.
    batch_seconds : float
        Budget of padded audio per batch.
    max_batch_size : int
        Most items per batch.

    Returns
    -------
    batches : list of list of int
        Item indexes, longest batch first.

    Example
    -------
    >>> length_batches([1.0, 5.0, 2.0, 4.0], batch_seconds=10, max_batch_size=3)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    batches, current = [], []
    for index in order:
        longest = durations[current[0]] if current else durations[index]
        if current and (
            len(current) >= max_batch_size
            or longest * (len(current) + 1) > batch_seconds
        ):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class EmbeddingCache:
    """Embeddings (and attention entropies) of audio content, saved
    atomically to one ``.pt`` file, tied to a fingerprint of everything else
    they depend on (``cache_fingerprint``: model content, data folder,
    precision); a cache of another fingerprint starts afresh.

    Entries are keyed by the content digest of the audio file
    (``io.content_digest``), never by its name: a file replaced under the
    same name is a new key, and nothing can serve the embedding of other
    audio. Non-finite embeddings are never stored (``put`` refuses them)
    nor served (entries of an older file that hold any are dropped on load).

    Arguments
    ---------
    path : str or Path or None
        The cache file; None keeps the cache in memory only (nothing is read,
        ``save`` does nothing).
    fingerprint : str
        Identifies what the embeddings depend on besides the audio.

    Example
    -------
    >>> import tempfile
    >>> cache = EmbeddingCache(Path(tempfile.mkdtemp()) / "emb.pt", "model-1")
    >>> cache.put("digest-a", torch.ones(4), None); cache.save()
    >>> "digest-a" in EmbeddingCache(cache.path, "model-1"), "digest-a" in EmbeddingCache(cache.path, "m2")
    (True, False)
    >>> memory = EmbeddingCache(None, "model-1")
    >>> memory.put("digest-a", torch.ones(4), None); memory.save()
    >>> memory.path, "digest-a" in memory
    (None, True)
    """

    def __init__(self, path, fingerprint):
        self.path = None if path is None else Path(path)
        self.fingerprint = fingerprint
        self.embeddings, self.entropies = {}, {}
        if self.path is not None and self.path.is_file():
            stored = torch.load(
                self.path, map_location="cpu", weights_only=True
            )
            if stored.get("fingerprint") == fingerprint:
                for key, embedding in stored["embeddings"].items():
                    entropy = stored["entropies"].get(key)
                    if _finite(embedding) and (
                        entropy is None or _finite(entropy)
                    ):
                        self.put(key, embedding, entropy)

    def __contains__(self, key):
        return key in self.embeddings

    def put(self, key, embedding, entropy):
        """Store the embedding and entropy (or None) of one audio content.

        Arguments
        ---------
        key : str
            The content digest of the audio file.
        embedding : torch.Tensor
            (emb_dim,), finite.
        entropy : torch.Tensor or None
            (heads,) attention entropy, finite.

        Example
        -------
        >>> cache = EmbeddingCache(None, "m")
        >>> cache.put("digest-a", torch.zeros(3), torch.ones(2))
        >>> cache.entropies["digest-a"]
        tensor([1., 1.])
        >>> cache.put("digest-b", torch.tensor([0.0, float("nan")]), None)
        Traceback (most recent call last):
        ...
        ValueError: embedding of digest-b is not finite; not cached
        """
        if not _finite(embedding) or (
            entropy is not None and not _finite(entropy)
        ):
            raise ValueError(f"embedding of {key} is not finite; not cached")
        self.embeddings[key] = embedding
        if entropy is not None:
            self.entropies[key] = entropy

    def save(self):
        """Write the cache atomically (nothing for an in-memory cache).

        Example
        -------
        >>> import tempfile
        >>> cache = EmbeddingCache(Path(tempfile.mkdtemp()) / "sub" / "emb.pt", "m")
        >>> cache.save(); cache.path.is_file()
        True
        """
        if self.path is None:
            return
        with atomic_write(self.path, "wb") as handle:
            torch.save(
                {
                    "fingerprint": self.fingerprint,
                    "embeddings": self.embeddings,
                    "entropies": self.entropies,
                },
                handle,
            )


def _finite(tensor):
    return bool(torch.isfinite(tensor).all())


def model_fingerprint(folder):
    """Content digests of the files of a pretrained folder that define its
    embeddings: ``embedding_model.ckpt`` (the weights) and
    ``hyperparams.yaml`` (the architecture and features); of an exported
    model (an ``.onnx`` or TorchScript file), the file's. Unlike size and
    modification time, they change whenever the content does.

    Arguments
    ---------
    folder : str or Path
        A pretrained-model folder, or an exported model file.

    Returns
    -------
    fingerprint : dict
        File name -> sha256 hex digest.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "embedding_model.ckpt").write_bytes(b"1234")
    >>> _ = (folder / "hyperparams.yaml").write_text("a: 1")
    >>> before = model_fingerprint(folder)
    >>> _ = (folder / "embedding_model.ckpt").write_bytes(b"1235")
    >>> sorted(before), before == model_fingerprint(folder)
    (['embedding_model.ckpt', 'hyperparams.yaml'], False)
    >>> _ = (folder / "model.onnx").write_bytes(b"onnx")
    >>> list(model_fingerprint(folder / "model.onnx"))
    ['model.onnx']
    """
    if Path(folder).is_file():  # an exported model: its content
        return {Path(folder).name: content_digest(folder)}
    return {name: content_digest(Path(folder) / name) for name in MODEL_FILES}


def cache_fingerprint(model_folder, data_folder=None, precision="fp32"):
    """What an ``EmbeddingCache`` depends on besides the audio content: the
    model's content (``model_fingerprint``), the data folder (resolved), the
    precision and the silence floor (a cache written before the floor, or
    with another, may hold embeddings of silence: it starts afresh).

    Arguments
    ---------
    model_folder : str or Path
        The pretrained-model folder, or an exported model file.
    data_folder : str or Path or None
        The folder the audio comes from.
    precision : str
        See ``encode_signals``.

    Returns
    -------
    fingerprint : str
        JSON, with keys ``model``, ``data_folder`` and ``precision``.

    Example
    -------
    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "embedding_model.ckpt").write_bytes(b"1234")
    >>> _ = (folder / "hyperparams.yaml").write_text("a: 1")
    >>> fp = json.loads(cache_fingerprint(folder, "/data", "bf16"))
    >>> fp["data_folder"], fp["precision"], fp["silence_floor_dbfs"]
    ('/data', 'bf16', -70.0)
    """
    check_precision(precision)
    return json.dumps(
        {
            "model": model_fingerprint(model_folder),
            "data_folder": None
            if data_folder is None
            else str(Path(data_folder).resolve()),
            "precision": precision,
            "silence_floor_dbfs": SILENCE_FLOOR_DBFS,
        },
        sort_keys=True,
    )


def check_device(device):
    """Refuse, with a one-line message, a device string torch cannot parse
    or a device this machine does not have, before any model is loaded.

    Arguments
    ---------
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ...

    Returns
    -------
    device : str
        As given.

    Example
    -------
    >>> check_device("cpu")
    'cpu'
    >>> check_device("gpu0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: device 'gpu0' is not a torch device (...); use cpu or cuda:N
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device {device!r} is not a torch device ({error}); use cpu "
            "or cuda:N"
        ) from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: CUDA is not available on this machine "
                "(no GPU or no CUDA driver); use cpu"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"device {device!r}: this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
    try:
        torch.empty(1, device=parsed)
    except Exception as error:  # torch raises several types
        message = str(error).strip().splitlines()[0]
        raise ValueError(
            f"device {device!r} is not available ({message})"
        ) from None
    return device


def embed_files(
    encoder,
    files,
    durations,
    cache,
    batch_seconds=None,
    max_batch_size=64,
    sample_rate=16000,
    progress=True,
    save_every_seconds=60.0,
    precision="fp32",
):
    """Embed every file whose content is not yet in ``cache``, batched by
    length.

    Each file is identified by the digest of its bytes
    (``io.content_digest``), so a file replaced under the same name is
    embedded afresh, and files with identical content are embedded once.
    A file that cannot be embedded (unreadable, too short, non-finite
    samples, no usable signal: below the silence floor
    ``layers.lengths.SILENCE_FLOOR_DBFS``, or a non-finite embedding) stops
    the embedding; the remaining files are then only read, so that one
    ValueError lists every such file. The cache is saved either way, with
    the finished embeddings only: nothing is ever cached for a bad file.

    Arguments
    ---------
    encoder : backends.TorchEncoder or backends.OnnxEncoder
        A backend, or a loaded EncoderClassifier (see ``encode_signals``).
    files : dict
        key -> audio path.
    durations : dict
        key -> duration in seconds (from headers).
    cache : EmbeddingCache
        Filled in place and saved every ``save_every_seconds`` and at the end
        (an in-memory cache, ``path=None``, is never written).
    batch_seconds : float or None
        Padded audio per batch (see ``length_batches``); None picks
        ``default_batch_seconds`` of the encoder's device.
    max_batch_size : int
        Most files per batch.
    sample_rate : int
    progress : bool
        Show tqdm bars.
    save_every_seconds : float
    precision : str
        See ``encode_signals``.

    Returns
    -------
    embeddings : dict
        key -> (emb_dim,) embedding, for every key of ``files``.
    entropies : dict
        key -> (heads,) attention entropy (empty for poolings without
        attention).
    """
    from tqdm import tqdm

    encoder = as_backend(encoder)
    # a bad name or one the backend does not run fails before any work
    check_precision(precision, encoder.precisions, encoder.source)
    if batch_seconds is None:
        batch_seconds = default_batch_seconds(encoder.device)
    digests = {}
    for key in tqdm(files, disable=not progress, desc="hashing", unit="file"):
        try:
            digests[key] = content_digest(files[key])
        except OSError as error:
            raise ValueError(
                f"{files[key]}: cannot read ({error.strerror or error})"
            ) from None
    todo = list(dict.fromkeys(d for d in digests.values() if d not in cache))
    path_of = {}
    for key, digest in digests.items():
        path_of.setdefault(digest, (files[key], durations[key]))
    batches = length_batches(
        [path_of[d][1] for d in todo], batch_seconds, max_batch_size
    )
    problems = []
    last_save = time.monotonic()
    bar = tqdm(
        total=len(todo), disable=not progress, desc="embedding", unit="file"
    )
    for batch in batches:
        keys = [todo[i] for i in batch]
        signals = []
        for digest in keys:
            try:
                signal = load_audio(path_of[digest][0], sample_rate)
            except ValueError as error:  # names the file
                problems.append(str(error))
                continue
            length = torch.tensor([signal.shape[0]])
            level = float(signal_levels(signal[None], length)[0])
            problem = level_problem(level)
            if problem:  # the backends would refuse it: name the file
                problems.append(f"{path_of[digest][0]}: {problem}")
            signals.append(signal)
        bar.update(len(keys))
        if problems:  # only read the rest, to list every bad file
            continue
        embeddings, entropies = encode_signals(encoder, signals, precision)
        for row, digest in enumerate(keys):
            entropy = None if entropies is None else entropies[row].clone()
            try:
                cache.put(digest, embeddings[row].clone(), entropy)
            except ValueError:
                problems.append(
                    f"{path_of[digest][0]}: the model gave a non-finite "
                    f"embedding (precision {precision})"
                )
        if time.monotonic() - last_save > save_every_seconds:
            cache.save()
            last_save = time.monotonic()
    bar.close()
    cache.save()
    raise_problems(problems, "files cannot be embedded")
    return (
        {key: cache.embeddings[d] for key, d in digests.items()},
        {
            key: cache.entropies[d]
            for key, d in digests.items()
            if d in cache.entropies
        },
    )


__all__ = [
    "encode_signals",
    "default_batch_seconds",
    "use_channels_last",
    "length_batches",
    "EmbeddingCache",
    "model_fingerprint",
    "cache_fingerprint",
    "check_device",
    "embed_files",
]
