"""Embedding extraction with a pretrained ``EncoderClassifier``: audio
loading with clear errors, batches of similar length, frame-exact lengths so
that an utterance's embedding does not depend on its batch, and a resumable
on-disk cache.

Authors
 * speechbrain-mrmha developers
"""

import os
import tempfile
import time
from pathlib import Path

import soundfile
import torch
import torchaudio

from speechbrain_mrmha.pooling import attention_entropy
from speechbrain_mrmha.resnet import relative_lengths

HOP_SAMPLES = 160  # Fbank hop of 10 ms at 16 kHz
MIN_SECONDS = 0.5
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Padded audio per batch when none is given: on a CPU, batching long padded
# batches only adds padding and cache misses (docs/BENCHMARKS.md), on a GPU
# large batches are what fills the device.
DEFAULT_BATCH_SECONDS = {"cpu": 12.0, "cuda": 240.0}


def load_audio(path, sample_rate=16000, min_seconds=MIN_SECONDS):
    """Read a file as mono float32 at ``sample_rate``.

    Stereo is mixed down, other sample rates are resampled.

    Arguments
    ---------
    path : str or Path
        An audio file soundfile can read.
    sample_rate : int
        The model's sample rate.
    min_seconds : float
        Shorter audio is refused (too few frames for a ResNet embedding).

    Returns
    -------
    signal : torch.Tensor
        (samples,) float32.

    Example
    -------
    >>> load_audio("/nonexistent.wav")
    Traceback (most recent call last):
    ...
    ValueError: /nonexistent.wav: cannot read audio (file does not exist)
    """
    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: cannot read audio (file does not exist)")
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types
        raise ValueError(f"{path}: cannot read audio ({error})") from None
    signal = torch.from_numpy(data).mean(dim=1)
    if rate != sample_rate:
        signal = torchaudio.functional.resample(signal, rate, sample_rate)
    if signal.shape[0] < min_seconds * sample_rate:
        raise ValueError(
            f"{path}: audio too short ({signal.shape[0] / sample_rate:.2f} s, "
            f"need at least {min_seconds} s)"
        )
    return signal


def frame_counts(num_samples, hop=HOP_SAMPLES):
    """Feature frames of a centred STFT: 1 + samples // hop.

    Example
    -------
    >>> frame_counts(torch.tensor([16000, 16159]))
    tensor([101, 101])
    """
    return 1 + torch.div(num_samples, hop, rounding_mode="floor")


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
    with torch.no_grad(), torch.autocast(device_type, dtype=dtype or torch.float32,
                                         enabled=dtype is not None):
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
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def default_batch_seconds(device):
    """Padded audio per batch for ``device`` ("cpu", "cuda:0", ...).

    Example
    -------
    >>> default_batch_seconds("cpu"), default_batch_seconds("cuda:1")
    (12.0, 240.0)
    """
    return DEFAULT_BATCH_SECONDS["cpu" if torch.device(device).type == "cpu" else "cuda"]


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
            len(current) >= max_batch_size or longest * (len(current) + 1) > batch_seconds
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
    path : str or Path
        The cache file.
    fingerprint : str
        Identifies the model (e.g. checkpoint size and mtime).

    Example
    -------
    >>> import tempfile
    >>> cache = EmbeddingCache(Path(tempfile.mkdtemp()) / "emb.pt", "model-1")
    >>> cache.put("a.wav", torch.ones(4), None); cache.save()
    >>> "a.wav" in EmbeddingCache(cache.path, "model-1"), "a.wav" in EmbeddingCache(cache.path, "m2")
    (True, False)
    """

    def __init__(self, path, fingerprint):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.embeddings, self.entropies = {}, {}
        if self.path.is_file():
            stored = torch.load(self.path, map_location="cpu")
            if stored.get("fingerprint") == fingerprint:
                self.embeddings, self.entropies = stored["embeddings"], stored["entropies"]

    def __contains__(self, key):
        return key in self.embeddings

    def put(self, key, embedding, entropy):
        """Store one file's embedding and entropy (or None)."""
        self.embeddings[key] = embedding
        if entropy is not None:
            self.entropies[key] = entropy

    def save(self):
        """Write the cache atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                       dir=self.path.parent)
        os.close(handle)
        try:
            torch.save(
                {"fingerprint": self.fingerprint, "embeddings": self.embeddings,
                 "entropies": self.entropies},
                tmp,
            )
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def model_fingerprint(folder):
    """A string that changes whenever the folder's checkpoint changes."""
    stat = (Path(folder) / "embedding_model.ckpt").stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def embed_files(encoder, files, durations, cache, batch_seconds=None, max_batch_size=64,
                sample_rate=16000, progress=True, save_every_seconds=60.0, precision="fp32"):
    """Embed every file not yet in ``cache``, batched by length.

    Arguments
    ---------
    encoder : speechbrain.inference.EncoderClassifier
    files : dict
        key -> audio path.
    durations : dict
        key -> duration in seconds (from headers).
    cache : EmbeddingCache
        Filled in place and saved every ``save_every_seconds`` and at the end.
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
    batches = length_batches([durations[k] for k in todo], batch_seconds, max_batch_size)
    last_save = time.monotonic()
    bar = tqdm(total=len(todo), disable=not progress, desc="embedding", unit="file")
    for batch in batches:
        keys = [todo[i] for i in batch]
        signals = [load_audio(files[k], sample_rate) for k in keys]
        embeddings, entropies = encode_signals(encoder, signals, precision)
        for row, key in enumerate(keys):
            cache.put(key, embeddings[row].clone(), None if entropies is None else entropies[row].clone())
        bar.update(len(keys))
        if time.monotonic() - last_save > save_every_seconds:
            cache.save()
            last_save = time.monotonic()
    bar.close()
    cache.save()
    return cache


__all__ = ["load_audio", "frame_counts", "encode_signals", "default_batch_seconds",
           "use_channels_last", "length_batches", "EmbeddingCache", "model_fingerprint",
           "embed_files"]
