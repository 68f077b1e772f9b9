"""Tests of the extraction helpers (speechbrain_mrmha/extraction.py) that
need no training: channels-last weights, autocast precision, CPU batch
budget, windowed encoding of long inputs through ``encode_signals``, and the
embedding cache on disk and in memory."""

import pytest
import torch

from speechbrain_mrmha.export import load_encoder
from speechbrain_mrmha.extraction import (
    EmbeddingCache,
    default_batch_seconds,
    embed_files,
    encode_signals,
    length_batches,
)
from speechbrain_mrmha.io import load_audio


def noise(seconds, seed):
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(16000 * seconds), generator=generator)


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
    cache = embed_files(
        tiny_encoder,
        files,
        durations,
        EmbeddingCache(tmp_path / "e.pt", "m"),
        progress=False,
    )
    for key, path in files.items():
        alone, _ = encode_signals(tiny_encoder, [load_audio(path)])
        assert (cache.embeddings[key] - alone[0]).abs().max() <= 1e-4, key


def test_cache_on_disk_round_trip_and_atomic_save(tmp_path):
    path = tmp_path / "cache" / "emb.pt"
    cache = EmbeddingCache(path, "model-1")
    cache.put("a.wav", torch.arange(3.0), torch.ones(2))
    cache.save()
    assert [p.name for p in path.parent.iterdir()] == [
        "emb.pt"
    ]  # no temporary file left
    again = EmbeddingCache(path, "model-1")
    assert torch.equal(again.embeddings["a.wav"], torch.arange(3.0))
    assert torch.equal(again.entropies["a.wav"], torch.ones(2))
    assert "a.wav" not in EmbeddingCache(
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
    filled = embed_files(
        tiny_encoder,
        {p: p for p in wavs},
        durations,
        cache,
        progress=False,
        save_every_seconds=0.0,
    )
    assert filled is cache and sorted(cache.embeddings) == wavs
    assert list(tmp_path.iterdir()) == []
