"""Padding never changes an embedding through SpeechBrain's own API:
``EncoderClassifier.encode_batch(wavs, wav_lens)`` of a pretrained folder,
with ``wav_lens`` relative to the padded samples (not to the 160-sample hop),
gives every utterance the embedding of its file alone. A peaky attention
(scorer weights scaled up) is the stress case: there a single frame counted
or missed at a signal's end moves an embedding far more than the threshold.
See docs/EQUATIONS.md, "Lengths and masking"."""

import math

import pytest
import torch
from speechbrain.inference.classifiers import EncoderClassifier

from speechbrain_mrmha.inference.backends import TorchEncoder
from speechbrain_mrmha.layers.lengths import HOP_SAMPLES

MIN_COSINE = 0.9999
# samples of one batch the frames alone cannot count: l * T is 50.19 for
# 8000 samples and 6.27 for 1000 (51 and 7 frames alone)
FIXED = [16100, 8000, 1000, 8150, 12345]


def signal(samples, generator):
    """White noise or a harmonic, amplitude-modulated speech-like tone."""
    if torch.rand(1, generator=generator).item() < 0.5:
        return 0.1 * torch.randn(samples, generator=generator)
    t = torch.arange(samples) / 16000
    f0 = 100 + 100 * torch.rand(1, generator=generator)
    phase = 2 * math.pi * torch.cumsum(f0 * (1 + 0.1 * torch.sin(t)), 0) / 16000
    tone = sum(torch.sin(k * phase) / k for k in range(1, 12))
    envelope = (torch.sin(2 * math.pi * 4 * t) > -0.3).float()
    return 0.2 * tone * (0.05 + envelope) + 0.003 * torch.randn(
        samples, generator=generator
    )


def batches(count=6, seed=0):
    """Sample counts of random batches (0.5-6 s, never a multiple of the
    hop), after the fixed one."""
    generator = torch.Generator().manual_seed(seed)
    yield FIXED
    for _ in range(count):
        size = int(torch.randint(3, 7, (1,), generator=generator))
        lengths = torch.randint(8000, 96001, (size,), generator=generator)
        lengths += (lengths % HOP_SAMPLES == 0).long()
        yield lengths.tolist()


@pytest.fixture(scope="module", params=[1.0, 30.0], ids=["plain", "peaky"])
def encoder(request, tiny_pretrained, tmp_path_factory):
    """The tiny pretrained folder loaded the plain SpeechBrain way; "peaky"
    scales the attention scorer weights by 30."""
    loaded = EncoderClassifier.from_hparams(
        source=str(tiny_pretrained),
        savedir=str(tmp_path_factory.mktemp("padding_encoder")),
        run_opts={"device": "cpu"},
    )
    with torch.no_grad():
        loaded.mods.embedding_model.pooling.score_weight.mul_(request.param)
    return loaded


def test_encode_batch_with_sample_relative_lengths_equals_each_file_alone(
    encoder,
):
    generator = torch.Generator().manual_seed(1)
    worst = 1.0
    for lengths in batches():
        signals = [signal(n, generator) for n in lengths]
        padded = torch.zeros(len(signals), max(lengths))
        for row, wav in enumerate(signals):
            padded[row, : wav.shape[0]] = wav
        wav_lens = torch.tensor(lengths, dtype=torch.float32) / max(lengths)
        with torch.no_grad():
            batched = encoder.encode_batch(padded, wav_lens).squeeze(1)
            alone = torch.cat(
                [encoder.encode_batch(wav[None]).squeeze(1) for wav in signals]
            )
        cosines = torch.nn.functional.cosine_similarity(batched, alone)
        assert torch.isfinite(cosines).all()
        worst = min(worst, cosines.min().item())
        assert bool((cosines >= MIN_COSINE).all()), (
            f"lengths {lengths}: cosines {cosines.tolist()}"
        )
    assert worst >= MIN_COSINE


def test_backend_sample_counts_give_the_same_embeddings(encoder):
    """The PyTorch backend (what ``extraction.encode_signals`` runs) takes
    sample counts and hands ``encode_batch`` SpeechBrain's sample-relative
    lengths (samples / padded samples): the embeddings SpeechBrain's users
    get."""
    generator = torch.Generator().manual_seed(2)
    lengths = torch.tensor(FIXED)
    padded = torch.zeros(len(FIXED), max(FIXED))
    for row, n in enumerate(FIXED):
        padded[row, :n] = signal(n, generator)
    with torch.no_grad():
        by_samples = encoder.encode_batch(padded, lengths / max(FIXED))
    by_counts, _ = TorchEncoder.from_encoder(encoder).encode(padded, lengths)
    torch.testing.assert_close(
        by_counts, by_samples.squeeze(1), rtol=0, atol=1e-5
    )
