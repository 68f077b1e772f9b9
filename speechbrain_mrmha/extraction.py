"""Embedding extraction with a pretrained ``EncoderClassifier``: batches of
similar length, frame-exact lengths so that an utterance's embedding does not
depend on its batch, and a resumable cache (on disk, or in memory).

Authors
 * speechbrain-mrmha developers
"""

import time
from pathlib import Path

import torch

from speechbrain_mrmha.io import atomic_write, load_audio
from speechbrain_mrmha.lengths import frame_counts, relative_lengths
from speechbrain_mrmha.pooling import attention_entropy

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Padded audio per batch when none is given: on a CPU, batching long padded
# batches only adds padding and cache misses (docs/BENCHMARKS.md), on a GPU
# large batches are what fills the device.
DEFAULT_BATCH_SECONDS = {"cpu": 12.0, "cuda": 240.0}


def encode_signals(encoder, signals, precision="fp32"):
    """Embed a list of signals as one zero-padded batch.

    The relative lengths passed to the model are frame-exact (valid frames /
    padded frames), so every stage sees exactly the frames it would see for
    the utterance alone.

    Arguments
    ---------
    encoder : speechbrain.inference.EncoderClassifier
        A loaded pretrained model.
    signals : list of torch.Tensor
        (samples,) waveforms.
    precision : str
        "fp32", or "bf16" / "fp16" to run under ``torch.autocast`` (the
        attention pooling still computes in float32). Fast only on hardware
        with native support (GPUs; CPUs with AMX for bf16).

    Returns
    -------
    embeddings : torch.Tensor
        (batch, emb_dim) on the CPU.
    entropies : torch.Tensor or None
        (batch, heads) attention entropy per utterance, None for poolings
        without attention.
    """
    lengths = torch.tensor([s.shape[0] for s in signals])
    batch = torch.zeros(len(signals), int(lengths.max()))
    for row, signal in enumerate(signals):
        batch[row, : signal.shape[0]] = signal
    frames = frame_counts(lengths)
    rel = relative_lengths(frames, int(frames.max()))
    dtype = _autocast_dtype(precision)
    device_type = torch.device(encoder.device).type
    with (
        torch.no_grad(),
        torch.autocast(
            device_type, dtype=dtype or torch.float32, enabled=dtype is not None
        ),
    ):
        embeddings = encoder.encode_batch(batch, rel).squeeze(1).float().cpu()
    pooling = encoder.mods.embedding_model.pooling
    weights = getattr(pooling, "last_attention", None)
    entropies = None
    if weights is not None:
        entropies = attention_entropy(weights.detach()).cpu()
    return embeddings, entropies


def _autocast_dtype(precision):
    """The autocast dtype of a precision name (None for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
        )
    return PRECISIONS[precision]


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
    """Embeddings (and attention entropies) of files, saved atomically to one
    ``.pt`` file, tied to a model fingerprint so a new model starts afresh.

    Arguments
    ---------
    path : str or Path or None
        The cache file; None keeps the cache in memory only (nothing is read,
        ``save`` does nothing).
    fingerprint : str
        Identifies the model (e.g. checkpoint size and mtime).

    Example
    -------
    >>> import tempfile
    >>> cache = EmbeddingCache(Path(tempfile.mkdtemp()) / "emb.pt", "model-1")
    >>> cache.put("a.wav", torch.ones(4), None); cache.save()
    >>> "a.wav" in EmbeddingCache(cache.path, "model-1"), "a.wav" in EmbeddingCache(cache.path, "m2")
    (True, False)
    >>> memory = EmbeddingCache(None, "model-1")
    >>> memory.put("a.wav", torch.ones(4), None); memory.save()
    >>> memory.path, "a.wav" in memory
    (None, True)
    """

    def __init__(self, path, fingerprint):
        self.path = None if path is None else Path(path)
        self.fingerprint = fingerprint
        self.embeddings, self.entropies = {}, {}
        if self.path is not None and self.path.is_file():
            stored = torch.load(self.path, map_location="cpu")
            if stored.get("fingerprint") == fingerprint:
                self.embeddings, self.entropies = (
                    stored["embeddings"],
                    stored["entropies"],
                )

    def __contains__(self, key):
        return key in self.embeddings

    def put(self, key, embedding, entropy):
        """Store one file's embedding and entropy (or None).

        Arguments
        ---------
        key : str
        embedding : torch.Tensor
            (emb_dim,)
        entropy : torch.Tensor or None
            (heads,) attention entropy.

        Example
        -------
        >>> cache = EmbeddingCache(None, "m")
        >>> cache.put("a.wav", torch.zeros(3), torch.ones(2))
        >>> cache.entropies["a.wav"]
        tensor([1., 1.])
        """
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


def model_fingerprint(folder):
    """A string that changes whenever the folder's checkpoint changes.

    Arguments
    ---------
    folder : str or Path
        A pretrained-model folder holding ``embedding_model.ckpt``.

    Returns
    -------
    fingerprint : str
        The checkpoint's size and modification time.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "embedding_model.ckpt").write_bytes(b"1234")
    >>> model_fingerprint(folder).startswith("4-")
    True
    """
    stat = (Path(folder) / "embedding_model.ckpt").stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


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
    """Embed every file not yet in ``cache``, batched by length.

    Arguments
    ---------
    encoder : speechbrain.inference.EncoderClassifier
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
        Show a tqdm bar.
    save_every_seconds : float
    precision : str
        See ``encode_signals``.

    Returns
    -------
    cache : EmbeddingCache
    """
    from tqdm import tqdm

    _autocast_dtype(precision)  # a bad name fails before any work
    if batch_seconds is None:
        batch_seconds = default_batch_seconds(encoder.device)
    todo = [key for key in files if key not in cache]
    batches = length_batches(
        [durations[k] for k in todo], batch_seconds, max_batch_size
    )
    last_save = time.monotonic()
    bar = tqdm(
        total=len(todo), disable=not progress, desc="embedding", unit="file"
    )
    for batch in batches:
        keys = [todo[i] for i in batch]
        signals = [load_audio(files[k], sample_rate) for k in keys]
        embeddings, entropies = encode_signals(encoder, signals, precision)
        for row, key in enumerate(keys):
            cache.put(
                key,
                embeddings[row].clone(),
                None if entropies is None else entropies[row].clone(),
            )
        bar.update(len(keys))
        if time.monotonic() - last_save > save_every_seconds:
            cache.save()
            last_save = time.monotonic()
    bar.close()
    cache.save()
    return cache


__all__ = [
    "encode_signals",
    "default_batch_seconds",
    "use_channels_last",
    "length_batches",
    "EmbeddingCache",
    "model_fingerprint",
    "embed_files",
]
