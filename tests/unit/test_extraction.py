"""Tests of the extraction helpers (speechbrain_mrmha/inference/extraction.py) that
need no training: channels-last weights, autocast precision, CPU batch
budget, windowed encoding of long inputs through ``encode_signals``, the
embedding cache on disk and in memory (keyed by audio content, never serving
a non-finite embedding, tied to the model's content), errors that list every
bad file (silent ones too: no verdict without speech), and the device
check."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import noise

from speechbrain_mrmha.dataio.audio import load_audio
from speechbrain_mrmha.dataio.files import content_digest
from speechbrain_mrmha.inference.backends import NoSignalError
from speechbrain_mrmha.inference.extraction import (
    EmbeddingCache,
    cache_fingerprint,
    check_device,
    default_batch_seconds,
    embed_files,
    encode_signals,
    length_batches,
    model_fingerprint,
)
from speechbrain_mrmha.inference.pretrained import load_encoder
from speechbrain_mrmha.layers.lengths import SILENCE_FLOOR_DBFS


@pytest.fixture(scope="module")
def contiguous_encoder(tiny_pretrained, tmp_path_factory):
    return load_encoder(
        tiny_pretrained,
        savedir=tmp_path_factory.mktemp("contiguous"),
        channels_last=False,
    )


def test_load_encoder_stores_convolutions_channels_last(
    tiny_encoder, contiguous_encoder
):
    convs = [
        m
        for m in tiny_encoder.mods.embedding_model.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    assert convs and all(
        c.weight.is_contiguous(memory_format=torch.channels_last)
        and not c.weight.is_contiguous()
        for c in convs
        if c.in_channels > 1 and c.kernel_size != (1, 1)
    )
    plain = [
        m
        for m in contiguous_encoder.mods.embedding_model.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    assert all(c.weight.is_contiguous() for c in plain)


def test_channels_last_gives_the_same_embeddings(
    tiny_encoder, contiguous_encoder
):
    signals = [noise(1.3, 1), noise(2.1, 2), noise(0.9, 3)]
    fast, _ = encode_signals(tiny_encoder, signals)
    plain, _ = encode_signals(contiguous_encoder, signals)
    assert (fast - plain).abs().max() <= 1e-4 * max(
        1.0, plain.abs().max().item()
    )


def test_bf16_autocast_runs_in_bf16_and_stays_close(tiny_encoder):
    signals = [noise(1.5, 4), noise(1.1, 5)]
    full, entropy = encode_signals(tiny_encoder, signals)
    half, half_entropy = encode_signals(tiny_encoder, signals, precision="bf16")
    assert half.dtype == torch.float32 and not torch.equal(
        half, full
    )  # autocast was on
    assert torch.nn.functional.cosine_similarity(half, full).min() > 0.99
    assert half_entropy.dtype == torch.float32  # attention stays float32
    torch.testing.assert_close(half_entropy, entropy, atol=0.05, rtol=0)


def test_unknown_precision_is_refused(tiny_encoder, tmp_path):
    with pytest.raises(
        ValueError, match=r"precision must be one of \['bf16', 'fp16', 'fp32'\]"
    ):
        encode_signals(tiny_encoder, [noise(1.0, 6)], precision="fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        embed_files(
            tiny_encoder,
            {"a": "/nonexistent.wav"},
            {"a": 1.0},
            EmbeddingCache(tmp_path / "c.pt", "m"),
            precision="half",
        )


def test_long_input_windows_equal_single_pass(tiny_encoder):
    """encode_signals on an input longer than chunk_frames (windows) gives
    the single-pass embedding, alone and in a padded batch."""
    model = tiny_encoder.mods.embedding_model
    signals = [noise(6.0, 7), noise(3.7, 8)]
    saved = model.chunk_frames
    try:
        model.chunk_frames = None
        reference, _ = encode_signals(tiny_encoder, signals)
        model.chunk_frames = 128
        windowed, _ = encode_signals(tiny_encoder, signals)
        alone, _ = encode_signals(tiny_encoder, signals[:1])
    finally:
        model.chunk_frames = saved
    torch.testing.assert_close(windowed, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], reference[0], atol=1e-4, rtol=0)


def test_cpu_budget_keeps_batches_small():
    assert default_batch_seconds("cpu") < default_batch_seconds("cuda:0")
    durations = [4.0 + 0.1 * i for i in range(40)]
    batches = length_batches(durations, default_batch_seconds("cpu"), 64)
    for batch in batches:
        padded = max(durations[i] for i in batch) * len(batch)
        assert len(batch) == 1 or padded <= default_batch_seconds("cpu")
    assert sorted(i for b in batches for i in b) == list(range(40))


def test_embed_files_default_budget_matches_encode_alone(
    tiny_encoder, tiny_corpus, tmp_path
):
    from pathlib import Path

    wavs = sorted(Path(tiny_corpus.wav_folder).rglob("*.wav"))[:5]
    files = {str(p): str(p) for p in wavs}
    durations = {k: load_audio(v).shape[0] / 16000 for k, v in files.items()}
    embeddings, entropies = embed_files(
        tiny_encoder,
        files,
        durations,
        EmbeddingCache(tmp_path / "e.pt", "m"),
        progress=False,
    )
    for key, path in files.items():
        alone, entropy = encode_signals(tiny_encoder, [load_audio(path)])
        assert (embeddings[key] - alone[0]).abs().max() <= 1e-4, key
        assert (entropies[key] - entropy[0]).abs().max() <= 1e-4, key


def test_cache_on_disk_round_trip_and_atomic_save(tmp_path):
    path = tmp_path / "cache" / "emb.pt"
    cache = EmbeddingCache(path, "model-1")
    cache.put("digest-a", torch.arange(3.0), torch.ones(2))
    cache.save()
    assert [p.name for p in path.parent.iterdir()] == [
        "emb.pt"
    ]  # no temporary file left
    again = EmbeddingCache(path, "model-1")
    assert torch.equal(again.embeddings["digest-a"], torch.arange(3.0))
    assert torch.equal(again.entropies["digest-a"], torch.ones(2))
    assert "digest-a" not in EmbeddingCache(
        path, "model-2"
    )  # another model starts afresh


def test_in_memory_cache_reads_and_writes_nothing(
    tiny_encoder, tiny_corpus, tmp_path, monkeypatch
):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    wavs = sorted(str(p) for p in Path(tiny_corpus.wav_folder).rglob("*.wav"))[
        :3
    ]
    durations = {p: load_audio(p).shape[0] / 16000 for p in wavs}
    cache = EmbeddingCache(None, "m")
    assert cache.path is None and not cache.embeddings
    embeddings, _ = embed_files(
        tiny_encoder,
        {p: p for p in wavs},
        durations,
        cache,
        progress=False,
        save_every_seconds=0.0,
    )
    assert sorted(embeddings) == wavs
    assert sorted(cache.embeddings) == sorted(content_digest(p) for p in wavs)
    assert list(tmp_path.iterdir()) == []


def write_wav(path, seconds, seed, subtype="PCM_16", value=None):
    """Noise (or a constant ``value``) at 16 kHz; returns the path as str."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (
        np.full(int(16000 * seconds), value, dtype="float32")
        if value is not None
        else 0.1
        * np.random.default_rng(seed).standard_normal(int(16000 * seconds))
    )
    soundfile.write(path, data, 16000, subtype=subtype)
    return str(path)


def embed(encoder, paths, cache):
    """embed_files on {path: path} with header durations."""
    files = {str(p): str(p) for p in paths}
    durations = {p: soundfile.info(p).duration for p in files}
    return embed_files(encoder, files, durations, cache, progress=False)


def test_replaced_audio_under_the_same_name_is_embedded_afresh(
    tiny_encoder, tmp_path
):
    """The observed bug: audio replaced under the same name, rerun with the
    same cache file, served the old embedding. Same size, same mtime."""
    cache_file = tmp_path / "emb.pt"
    wav = write_wav(tmp_path / "data" / "a.wav", 1.2, seed=1)
    other = write_wav(tmp_path / "data" / "b.wav", 1.4, seed=2)
    before, _ = embed(
        tiny_encoder, [wav, other], EmbeddingCache(cache_file, "m")
    )
    stat = os.stat(wav)
    write_wav(tmp_path / "data" / "a.wav", 1.2, seed=3)  # new audio
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(wav).st_size == stat.st_size
    cache = EmbeddingCache(cache_file, "m")
    after, _ = embed(tiny_encoder, [wav, other], cache)
    fresh, _ = encode_signals(tiny_encoder, [load_audio(wav)])
    assert (after[wav] - fresh[0]).abs().max() <= 1e-4
    assert (after[wav] - before[wav]).abs().max() > 1e-3
    assert torch.equal(after[other], before[other])  # served from the cache
    assert len(cache.embeddings) == 3  # old a, b, new a


def test_identical_content_is_one_key_whatever_the_name_or_folder(
    tiny_encoder, tmp_path
):
    """The key is the content: a copy under another name or folder is served
    the same embedding (within one fingerprint; ``cache_fingerprint`` ties a
    cache to its data folder, see test_cache_fingerprint_...)."""
    wav = write_wav(tmp_path / "one" / "a.wav", 1.1, seed=4)
    copy = tmp_path / "two" / "renamed.wav"
    copy.parent.mkdir()
    shutil.copyfile(wav, copy)
    cache = EmbeddingCache(tmp_path / "emb.pt", "m")
    embeddings, _ = embed(tiny_encoder, [wav, copy], cache)
    assert list(cache.embeddings) == [content_digest(wav)]
    assert torch.equal(embeddings[wav], embeddings[str(copy)])


def test_cached_non_finite_embedding_is_never_served(tiny_encoder, tmp_path):
    wav = write_wav(tmp_path / "a.wav", 1.3, seed=5)
    digest = content_digest(wav)
    cache_file = tmp_path / "emb.pt"
    poisoned = torch.full((16,), float("nan"))
    torch.save(  # a cache file written by an older version
        {
            "fingerprint": "m",
            "embeddings": {digest: poisoned},
            "entropies": {digest: torch.ones(2)},
        },
        cache_file,
    )
    cache = EmbeddingCache(cache_file, "m")
    assert digest not in cache
    embeddings, _ = embed(tiny_encoder, [wav], cache)
    assert torch.isfinite(embeddings[wav]).all()
    with pytest.raises(ValueError, match="not finite; not cached"):
        cache.put("x", poisoned, None)
    with pytest.raises(ValueError, match="not finite; not cached"):
        cache.put("x", torch.ones(16), torch.tensor([1.0, float("inf")]))


def test_non_finite_embedding_is_an_error_naming_the_file(
    tiny_encoder, tmp_path, monkeypatch
):
    import speechbrain_mrmha.inference.extraction as extraction

    wavs = [write_wav(tmp_path / f"{i}.wav", 1.0 + i / 10, i) for i in range(3)]
    real = extraction.encode_signals

    def nan_for_the_longest(encoder, signals, precision="fp32"):
        embeddings, entropies = real(encoder, signals, precision)
        longest = max(range(len(signals)), key=lambda i: len(signals[i]))
        embeddings[longest] = float("nan")
        return embeddings, entropies

    monkeypatch.setattr(extraction, "encode_signals", nan_for_the_longest)
    cache = EmbeddingCache(tmp_path / "emb.pt", "m")
    with pytest.raises(ValueError) as error:
        embed(tiny_encoder, wavs, cache)
    assert f"{wavs[2]}: the model gave a non-finite embedding" in str(
        error.value
    )
    assert content_digest(wavs[2]) not in EmbeddingCache(cache.path, "m")


def test_every_bad_file_is_listed_and_finished_embeddings_are_kept(
    tiny_encoder, tmp_path
):
    """Non-finite samples are found when a file is read: the first one stops
    the embedding, the rest are only read, one error lists them all, and the
    cache holds only complete, finite embeddings (a rerun resumes)."""
    good = [write_wav(tmp_path / f"g{i}.wav", 3.0, seed=i) for i in range(2)]
    nan = write_wav(tmp_path / "nan.wav", 2.0, 0, "FLOAT", float("nan"))
    inf = write_wav(tmp_path / "inf.wav", 1.0, 0, "FLOAT", float("inf"))
    cache = EmbeddingCache(tmp_path / "emb.pt", "m")
    files = {p: p for p in good + [nan, inf]}
    durations = {p: soundfile.info(p).duration for p in files}
    with pytest.raises(ValueError) as error:
        embed_files(
            tiny_encoder,
            files,
            durations,
            cache,
            max_batch_size=1,
            progress=False,
        )
    message = str(error.value)
    assert message.startswith("2 files cannot be embedded:")
    assert f"{nan}: audio has non-finite samples" in message
    assert f"{inf}: audio has non-finite samples" in message
    stored = EmbeddingCache(tmp_path / "emb.pt", "m")
    assert sorted(stored.embeddings) == sorted(content_digest(p) for p in good)
    assert all(torch.isfinite(e).all() for e in stored.embeddings.values())


def test_model_fingerprint_follows_content_not_size_or_mtime(
    tiny_pretrained, tmp_path
):
    folder = tmp_path / "model"
    shutil.copytree(tiny_pretrained, folder)
    ckpt = folder / "embedding_model.ckpt"
    before = model_fingerprint(folder)
    stat = ckpt.stat()
    state = torch.load(ckpt)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1.0
    torch.save(state, ckpt)
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ckpt.stat().st_size == stat.st_size
    assert ckpt.stat().st_mtime_ns == stat.st_mtime_ns
    assert model_fingerprint(folder) != before
    assert model_fingerprint(tiny_pretrained) == before  # the original


def test_cache_fingerprint_covers_model_data_folder_and_precision(
    tiny_pretrained, tmp_path
):
    base = cache_fingerprint(tiny_pretrained, tmp_path / "data", "fp32")
    assert base == cache_fingerprint(
        tiny_pretrained, tmp_path / "x" / ".." / "data", "fp32"
    )
    assert base != cache_fingerprint(tiny_pretrained, tmp_path / "copy")
    assert base != cache_fingerprint(tiny_pretrained, tmp_path / "data", "bf16")
    fields = json.loads(base)
    assert fields["data_folder"] == str((tmp_path / "data").resolve())
    assert fields["model"]["embedding_model.ckpt"] == content_digest(
        Path(tiny_pretrained) / "embedding_model.ckpt"
    )
    with pytest.raises(ValueError, match="precision must be one of"):
        cache_fingerprint(tiny_pretrained, tmp_path, "fp8")


@pytest.mark.parametrize(
    "device, message",
    [
        ("banana", "device 'banana' is not a torch device"),
        ("cuda:x", "device 'cuda:x' is not a torch device"),
        ("cuda:0", "device 'cuda:0': CUDA is not available"),
        ("xpu", "device 'xpu' is not available"),
    ],
)
def test_check_device_refuses_unknown_or_absent_devices(device, message):
    if device.startswith("cuda:0") and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    if device == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
        pytest.skip("an XPU is present")
    assert check_device("cpu") == "cpu"
    with pytest.raises(ValueError) as error:
        check_device(device)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def write_at_dbfs(path, seconds, dbfs, seed=0):
    """Noise whose RMS is ``dbfs`` dB of full scale, as float samples."""
    data = np.random.default_rng(seed).standard_normal(int(16000 * seconds))
    data *= 10 ** (dbfs / 20) / data.std()
    soundfile.write(path, data.astype("float32"), 16000, subtype="FLOAT")
    return str(path)


def test_silent_files_are_named_in_one_error_and_never_cached(
    tiny_encoder, tmp_path
):
    """No verdict without speech: silent.wav against silent.wav (digital
    zero) and a -80 dBFS file are all named in one error, read to the end
    even after the first, and nothing is cached for them; a quiet but real
    file at -60 dBFS, above the -70 dBFS floor, still embeds."""
    silent = write_wav(tmp_path / "a" / "silent.wav", 2.0, 0, value=0.0)
    same = write_wav(tmp_path / "b" / "silent.wav", 2.0, 0, value=0.0)
    near = write_at_dbfs(tmp_path / "near.wav", 1.5, -80.0)
    quiet = write_at_dbfs(tmp_path / "quiet.wav", 3.0, -60.0, seed=1)
    loud = write_at_dbfs(tmp_path / "loud.wav", 3.0, -20.0, seed=1)
    cache = EmbeddingCache(tmp_path / "emb.pt", "m")
    files = {"enrol": silent, "test": same, "near": near, "quiet": quiet}
    durations = {k: soundfile.info(p).duration for k, p in files.items()}
    with pytest.raises(ValueError) as error:
        embed_files(
            tiny_encoder,
            files,
            durations,
            cache,
            max_batch_size=1,
            progress=False,
        )
    message = str(error.value)
    assert message.startswith("2 files cannot be embedded:"), message
    assert f"{silent}: no usable signal: digital zero" in message
    assert (
        f"{near}: no usable signal: near-silence (level -80.0 dBFS" in message
    )
    assert "quiet.wav" not in message
    stored = EmbeddingCache(tmp_path / "emb.pt", "m")
    for path in (silent, near):
        assert content_digest(path) not in stored
        assert content_digest(path) not in cache
    files = {"quiet": quiet, "loud": loud}
    durations = dict.fromkeys(files, 3.0)
    embeddings, _ = embed_files(
        tiny_encoder, files, durations, cache, progress=False
    )
    assert torch.isfinite(embeddings["quiet"]).all()
    cosine = torch.nn.functional.cosine_similarity(
        embeddings["quiet"], embeddings["loud"], dim=0
    )
    assert float(cosine) > 0.99  # the sentence mean normalisation


def test_silent_signals_are_named_by_row(tiny_encoder):
    """Signals without a name: the error names their rows (their indexes
    in the list), and silence against silence gives no embedding."""
    signals = [noise(1.0, 0), torch.zeros(16000), noise(0.8, 1) * 1e-3]
    with pytest.raises(NoSignalError) as error:
        encode_signals(tiny_encoder, signals)
    assert error.value.rows == [1, 2]
    assert "row 1: no usable signal" in str(error.value)
    assert "row 2: no usable signal: near-silence" in str(error.value)
    with pytest.raises(NoSignalError, match="2 rows cannot be embedded"):
        encode_signals(tiny_encoder, [torch.zeros(16000)] * 2)


def test_cache_fingerprint_follows_the_silence_floor(tiny_pretrained):
    """A cache written before the floor (or with another) may hold
    embeddings of silence: its fingerprint differs, it starts afresh."""
    fingerprint = json.loads(cache_fingerprint(tiny_pretrained))
    assert fingerprint["silence_floor_dbfs"] == SILENCE_FLOOR_DBFS
