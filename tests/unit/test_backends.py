"""Tests of the runtime backends (speechbrain_mrmha/inference/backends.py):
the one encoder contract of the PyTorch backend (attributes, padded batches
of sample counts embedding as each signal alone, SpeechBrain's own
``encode_batch`` with sample-relative lengths, entropies, clear errors),
folders without the frame-exact hooks, ``load_backend``, and no verdict
without speech (rows below the silence floor are refused, naming them). The
onnxruntime backend against PyTorch: tests/integration/test_export.py."""

import pytest
import torch
from speechbrain.inference.classifiers import EncoderClassifier

from speechbrain_mrmha.inference.backends import (
    NoSignalError,
    OnnxEncoder,
    TorchEncoder,
    as_backend,
    check_padded_batch,
    load_backend,
)
from speechbrain_mrmha.layers.lengths import (
    SILENCE_FLOOR,
    SILENCE_FLOOR_DBFS,
    FrameExactLengths,
    signal_levels,
    usable_rows,
)

SAMPLES = [16100, 8000, 1000, 8150, 12345]  # no two with the same frames


def padded(samples, seed=0):
    """A zero-padded batch of noise and its int64 sample counts."""
    generator = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(samples), max(samples))
    for row, n in enumerate(samples):
        wavs[row, :n] = 0.1 * torch.randn(n, generator=generator)
    return wavs, torch.tensor(samples)


def assert_rows_embed_alone(backend, wavs, lengths, atol=1e-5):
    embeddings, entropies = backend.encode(wavs, lengths)
    for row, n in enumerate(lengths.tolist()):
        alone, alone_entropy = backend.encode(
            wavs[row : row + 1, :n], lengths[row : row + 1]
        )
        torch.testing.assert_close(embeddings[row], alone[0], atol=atol, rtol=0)
        if entropies is not None:
            torch.testing.assert_close(
                entropies[row], alone_entropy[0], atol=1e-5, rtol=0
            )
    return embeddings, entropies


@pytest.fixture(scope="module")
def backend(tiny_pretrained):
    return TorchEncoder(tiny_pretrained)


def test_torch_backend_has_the_contract(backend, tiny_pretrained):
    assert backend.device == "cpu"
    assert (backend.sample_rate, backend.min_samples) == (16000, 201)
    assert backend.emb_dim == 16 and backend.source == str(tiny_pretrained)
    assert backend.precisions == ("fp32", "bf16", "fp16")
    wavs, lengths = padded(SAMPLES)
    embeddings, entropies = backend.encode(wavs, lengths)
    assert embeddings.shape == (5, 16) and embeddings.dtype == torch.float32
    assert embeddings.device.type == "cpu"
    assert entropies.shape == (5, 2)  # MRMHA, 2 heads
    # the utterances differ: an encoder that ignored its input would fail
    cosines = torch.nn.functional.cosine_similarity(
        embeddings[:1], embeddings[1:]
    )
    assert cosines.max() < 0.999


def test_torch_backend_embeds_each_row_as_alone(backend):
    """Padding never changes an embedding or an entropy, whatever the
    padding holds (samples past a row's count are zeroed, as the exported
    graph does)."""
    wavs, lengths = padded(SAMPLES)
    clean, entropies = assert_rows_embed_alone(backend, wavs, lengths)
    noisy = wavs + (wavs == 0) * torch.randn(wavs.shape)
    got, got_entropies = backend.encode(noisy, lengths)
    assert torch.equal(got, clean) and torch.equal(got_entropies, entropies)


def test_torch_backend_equals_speechbrains_encode_batch(backend):
    """The PyTorch backend is SpeechBrain's API with sample-relative
    wav_lens: the same embeddings, bit for bit."""
    wavs, lengths = padded(SAMPLES, seed=1)
    embeddings, _ = backend.encode(wavs, lengths)
    with torch.no_grad():
        expected = backend.encoder_classifier.encode_batch(
            wavs, lengths / wavs.shape[1]
        )
    assert torch.equal(embeddings, expected.squeeze(1))


def test_bad_batches_are_refused_naming_the_model(backend):
    wavs, lengths = padded([8000, 4000])
    cases = [
        (wavs, lengths / 8000, "integer sample counts"),
        (wavs, torch.tensor([8000, 8001]), r"must lie in \[1, 8000\]"),
        (wavs, torch.tensor([8000, 0]), r"must lie in \[1, 8000\]"),
        (wavs, torch.tensor([8000]), r"lengths \(batch,\)"),
        (wavs[0], lengths[:1], r"wavs \(batch, samples\)"),
        (wavs[:, :200], torch.tensor([200, 100]), "too few for the features"),
        (wavs, torch.tensor([8000, 200]), r"rows \[1\] have fewer than 201"),
    ]
    for bad_wavs, bad_lengths, words in cases:
        with pytest.raises(ValueError, match=words) as error:
            backend.encode(bad_wavs, bad_lengths)
        assert str(error.value).startswith(backend.source)
    with pytest.raises(ValueError, match="precision must be one of"):
        backend.encode(wavs, lengths, "fp8")
    assert check_padded_batch(wavs, lengths.int()).dtype == torch.int64


def test_folder_without_hooks_gets_them_once(tiny_pretrained, tmp_path):
    """A folder written before the FrameExactLengths hooks embeds exactly
    too; wrapping it again adds no second set of hooks (which would convert
    lengths twice)."""
    encoder = EncoderClassifier.from_hparams(
        source=str(tiny_pretrained),
        savedir=str(tmp_path),
        run_opts={"device": "cpu"},
    )
    encoder.hparams.frame_exact_lengths.remove()
    del encoder.hparams.frame_exact_lengths
    features = encoder.mods.compute_features
    assert not features._forward_hooks
    wavs, lengths = padded(SAMPLES, seed=2)
    with torch.no_grad():  # SpeechBrain's own rule is off by a frame here
        plain = encoder.encode_batch(wavs, lengths / wavs.shape[1]).squeeze(1)
    backend = TorchEncoder.from_encoder(encoder)
    assert isinstance(encoder.hparams.frame_exact_lengths, FrameExactLengths)
    assert backend.source == str(tiny_pretrained.resolve())
    embeddings, _ = assert_rows_embed_alone(backend, wavs, lengths)
    assert not torch.allclose(plain, embeddings, atol=1e-5, rtol=0)
    again = TorchEncoder.from_encoder(encoder)
    assert len(features._forward_hooks) == 1
    assert torch.equal(again.encode(wavs, lengths)[0], embeddings)


def test_as_backend_wraps_a_speechbrain_model(tiny_encoder):
    backend = as_backend(tiny_encoder)
    assert isinstance(backend, TorchEncoder)
    assert backend.encoder_classifier is tiny_encoder
    assert as_backend(backend) is backend


def test_load_backend_picks_by_path(tiny_pretrained, tmp_path):
    assert isinstance(load_backend(tiny_pretrained), TorchEncoder)
    with pytest.raises(FileNotFoundError, match="pretrained folder or an"):
        load_backend(tmp_path / "missing")
    script = tmp_path / "model.pt"
    script.write_bytes(b"not a folder")
    with pytest.raises(ValueError, match="no exported .onnx file"):
        load_backend(script)
    with pytest.raises(ValueError, match="not a torch device"):
        load_backend(tiny_pretrained, device="gpu0")
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not onnx")
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="not an ONNX model"):
        load_backend(broken)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxEncoder(tmp_path / "absent.onnx")


def at_dbfs(signal, dbfs):
    """``signal`` scaled to an RMS about its mean of ``dbfs``."""
    return signal / signal.std(unbiased=False) * 10 ** (dbfs / 20)


def test_the_floor_is_minus_70_dbfs_of_the_valid_samples():
    """The level is the RMS of the valid samples about their mean: padding
    never changes it, a DC offset is no signal; rows at the floor pass,
    rows just under it do not."""
    assert SILENCE_FLOOR_DBFS == -70.0
    assert SILENCE_FLOOR == pytest.approx(3.1623e-4, rel=1e-4)
    wavs, lengths = padded([16000, 4000])
    wavs[1, 4000:] = 1.0  # loud padding
    levels = signal_levels(wavs, lengths)
    alone = signal_levels(wavs[1:, :4000], lengths[1:])
    torch.testing.assert_close(levels[1:], alone)
    assert float(levels[0]) == pytest.approx(0.1, rel=0.02)
    tone = torch.sin(torch.arange(8000) * 0.3)
    rows = [
        at_dbfs(tone, -69.9),
        at_dbfs(tone, -70.1),
        torch.full((8000,), 0.5),  # DC offset alone
        at_dbfs(tone, -69.9) + 0.5,  # DC offset on a faint tone
    ]
    usable = usable_rows(torch.stack(rows), torch.full((4,), 8000), 201)
    assert usable.tolist() == [True, False, False, True]


def test_silence_is_refused_naming_every_row(backend):
    """Digital zero, -80 dBFS noise and a constant give no embedding (one
    NoSignalError naming those rows and why); a quiet but real signal at
    -60 dBFS still embeds as it would at a normal level (the sentence mean
    normalisation)."""
    wavs, lengths = padded([16000, 8000, 12000, 9000, 9500])
    wavs[1] = 0.0
    wavs[2, :12000] = at_dbfs(wavs[2, :12000], -80.0)
    wavs[3, :9000] = 0.3
    with pytest.raises(NoSignalError) as error:
        backend.encode(wavs, lengths)
    assert error.value.rows == [1, 2, 3]
    message = str(error.value)
    assert message.startswith(f"3 rows cannot be embedded by {backend.source}")
    assert "row 1: no usable signal: digital zero" in message
    assert "row 2: no usable signal: near-silence (level -80.0 dBFS" in message
    assert "row 3: no usable signal" in message
    assert "row 0" not in message and "row 4" not in message
    assert isinstance(error.value, ValueError)
    loud = 0.1 * torch.randn(
        1, 9500, generator=torch.Generator().manual_seed(3)
    )
    quiet = at_dbfs(loud, -60.0)
    got, _ = backend.encode(torch.cat([loud, quiet]), torch.tensor([9500] * 2))
    assert torch.isfinite(got).all()
    cosine = torch.nn.functional.cosine_similarity(got[:1], got[1:])
    assert float(cosine) > 0.99


def test_silent_file_against_itself_is_no_match(backend):
    """silent.wav vs silent.wav: the two rows are refused, never embedded
    (and so never scored as a match with cosine 1)."""
    silent = torch.zeros(2, 16000)
    with pytest.raises(NoSignalError, match="2 rows cannot be embedded"):
        backend.encode(silent, torch.tensor([16000, 16000]))
