"""Tests of the export module (speechbrain_mrmha/inference/export.py) that
need no exporter: the graph modules in eager PyTorch, the copy
``deployable`` makes (SpeechBrain's statistics pooling swapped for ours),
the install hint of the optional packages, and what
``extraction.encode_signals`` hands a backend, the waveform graph's
``usable`` output (inputs shorter than min_samples, lengths outside
[1, samples], silence), and export hygiene (a folder as the output, a file
name that does not match the format). The exports themselves:
tests/integration/test_export.py; the backends: tests/unit/test_backends.py."""

import sys
import warnings

import pytest
import torch
from speechbrain.nnet.pooling import StatisticsPooling

import speechbrain_mrmha.inference.export as deploy
from speechbrain_mrmha.app.cli import main
from speechbrain_mrmha.inference.extraction import encode_signals
from speechbrain_mrmha.layers.pooling import MaskedStatisticsPooling


def _cosines(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def test_deployable_swaps_speechbrains_statistics_pooling(small_mods):
    """A folder trained with SpeechBrain's StatisticsPooling exports with
    ours in its place (the noise's midpoint added to the means): the same
    statistics up to SpeechBrain's noise; a folder trained with ours keeps
    its layer."""
    from speechbrain_mrmha.layers.resnet import ResNet34

    torch.manual_seed(0)
    old = ResNet34(
        channels=[4, 4, 8, 8],
        block_counts=[1, 1, 1, 1],
        lin_neurons=8,
        pooling=StatisticsPooling(return_std=False),
    ).eval()
    mods = {**small_mods, "embedding_model": old}
    pooling = deploy.deployable(mods).embedder.embedding_model.pooling
    assert isinstance(pooling, MaskedStatisticsPooling)
    assert (pooling.return_mean, pooling.return_std) == (True, False)
    assert pooling.mean_offset == 5e-5 and pooling.input_size == old.frame_dim
    frames = torch.randn(3, 9, old.frame_dim)
    lengths = torch.tensor([1.0, 5 / 9, 2 / 9])
    theirs = old.pooling(frames, lengths)
    assert (pooling(frames, lengths) - theirs).abs().max() <= 4e-5 + 1e-6
    assert isinstance(old.pooling, StatisticsPooling)  # the encoder's own
    new = ResNet34(
        channels=[4, 4, 8, 8], block_counts=[1, 1, 1, 1], lin_neurons=8
    )
    mods = {**small_mods, "embedding_model": new}
    kept = deploy.deployable(mods).embedder.embedding_model.pooling
    assert isinstance(kept, MaskedStatisticsPooling) and kept.mean_offset == 0


@pytest.fixture(scope="module")
def small_mods():
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    from speechbrain_mrmha.layers.pooling import (
        MultiResolutionMultiHeadAttentionPooling,
    )
    from speechbrain_mrmha.layers.resnet import ResNet34

    torch.manual_seed(0)
    model = ResNet34(
        channels=[4, 4, 8, 8],
        block_counts=[1, 1, 1, 1],
        lin_neurons=8,
        pooling=lambda input_size: MultiResolutionMultiHeadAttentionPooling(
            input_size, num_heads=2, temperatures=[1.0, 0.1]
        ),
    )
    return {
        "compute_features": Fbank(n_mels=40),
        "mean_var_norm": InputNormalization(
            norm_type="sentence", std_norm=False
        ),
        "embedding_model": model.eval(),
    }


def test_waveform_graph_ignores_padding_and_batch(small_mods):
    """Each row of a padded batch, whatever the padding holds, embeds as the
    signal alone; lengths are sample counts, no multiple of the hop."""
    module = deploy.deployable(small_mods)
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor([9001, 4321, 2555])
    wavs = torch.randn(3, 9001, generator=generator)  # padding is noise
    with torch.no_grad():
        batched, usable = module(wavs, lengths)
        alone = torch.cat(
            [
                module(wavs[i : i + 1, :n], lengths[i : i + 1])[0]
                for i, n in enumerate(lengths.tolist())
            ]
        )
    assert usable.tolist() == [True, True, True]
    assert _cosines(batched, alone).min() > 0.99999
    assert _cosines(batched[:1], batched[1:]).max() < 0.999


def test_deployable_copies_and_leaves_the_encoder(tiny_encoder):
    model = tiny_encoder.mods.embedding_model
    hooks = len(tiny_encoder.mods.compute_features._forward_hooks)
    module = deploy.deployable(tiny_encoder)
    assert model.chunk_frames == 2048
    assert module.embedder.embedding_model.chunk_frames is None
    assert module.embedder.embedding_model is not model
    assert len(tiny_encoder.mods.compute_features._forward_hooks) == hooks > 0
    assert not any(
        m._forward_hooks or m._forward_pre_hooks for m in module.modules()
    )
    assert not any(p.requires_grad for p in module.parameters())
    features = deploy.deployable(tiny_encoder, features_input=True)
    assert isinstance(features, deploy.FeatureEmbedder)


def test_missing_export_packages_name_the_extra(
    tiny_pretrained, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails
    with pytest.raises(
        ImportError, match=r"pip install speechbrain-mrmha\[export\]"
    ):
        deploy.export_model(tiny_pretrained, tmp_path / "m.onnx")
    out = tmp_path / "cli.onnx"
    argv = ["export", "--model", str(tiny_pretrained), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: onnxscript not installed")
        and err.count("\n") == 1
    )
    assert "speechbrain-mrmha[export]" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unknown_format_is_refused(tiny_pretrained, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        deploy.export_model(tiny_pretrained, tmp_path / "m", "tflite")


def test_encode_signals_hands_a_backend_the_sample_counts():
    """A backend's ``encode`` gets the zero-padded batch, the exact int64
    sample counts (the lengths the exported graph takes) and the
    precision; its embeddings and entropies come back as they are."""

    class Backend:
        device, precisions, source = "cpu", ("fp32", "bf16"), "stand-in"

        def encode(self, wavs, lengths, precision="fp32"):
            self.seen = wavs.clone(), lengths.clone(), precision
            return torch.stack([wavs.sum(dim=1), lengths.float()], 1), None

    backend = Backend()
    signals = [torch.ones(5), torch.ones(3)]
    embeddings, entropies = encode_signals(backend, signals, "bf16")
    wavs, lengths, precision = backend.seen
    assert lengths.dtype == torch.int64 and lengths.tolist() == [5, 3]
    assert wavs.tolist() == [[1.0] * 5, [1.0] * 3 + [0.0] * 2]
    assert precision == "bf16"
    assert embeddings.tolist() == [[5.0, 5.0], [3.0, 3.0]] and entropies is None


def test_waveform_graph_flags_short_inputs_bad_lengths_and_silence(
    small_mods,
):
    """The graph module's ``usable`` output is False for inputs shorter
    than min_samples (0 and 100 samples; before, they gave the silence
    embedding), lengths outside [1, samples], and silent rows."""
    module = deploy.deployable(small_mods)
    assert module.min_samples == 201
    with torch.no_grad():
        for samples in (0, 100, 200):
            wavs = 0.1 * torch.randn(2, samples)
            _, usable = module(wavs, torch.tensor([samples, samples]))
            assert usable.tolist() == [False, False]
        wavs = 0.1 * torch.randn(3, 4000)
        wavs[1] = 0.0
        wavs[2] *= 1e-3  # -80 dBFS
        _, usable = module(wavs, torch.tensor([4000, 4000, 3999]))
        assert usable.tolist() == [True, False, False]
        # lengths outside [1, samples]: eager PyTorch flags them or refuses
        # them outright (the exported graphs flag them, see
        # tests/integration/test_export.py)
        wavs[1:] = 0.1 * torch.randn(2, 4000)
        for bad in ([4000, 0, 4000], [4000, -3, 4000], [4000, 4001, 4000]):
            try:
                _, usable = module(wavs, torch.tensor(bad))
            except ValueError as error:
                assert "relative lengths" in str(error)
            else:
                assert usable.tolist() == [True, False, True], bad


def test_export_to_a_folder_names_the_out_path(tiny_pretrained, tmp_path):
    """A folder as ``out``: an error naming it (not a hidden temporary
    file), before anything is exported; nothing is written in it."""
    for fmt in deploy.FORMATS:
        with pytest.raises(IsADirectoryError) as error:
            deploy.export_model(tiny_pretrained, tmp_path, fmt)
        message = str(error.value)
        assert message.startswith(f"--out {tmp_path}: is a folder")
        assert ".tmp" not in message and "model." in message
    assert list(tmp_path.iterdir()) == []


def test_cli_export_to_a_folder_is_one_line(tiny_pretrained, tmp_path, capsys):
    argv = ["export", "--model", str(tiny_pretrained), "--out", str(tmp_path)]
    assert main(argv + ["--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path}: is a folder")
    assert err.count("\n") == 1


def test_extension_that_does_not_match_the_format_warns(
    small_mods, tmp_path, monkeypatch
):
    """ONNX written to x.pt and TorchScript to x.onnx warn (load_backend
    picks the runtime by the ending); matching names do not."""
    features = deploy.deployable(small_mods, features_input=True)
    with pytest.warns(
        UserWarning, match=r"x\.onnx: a TorchScript file usually ends in \.pt"
    ):
        out = deploy.export_module(features, tmp_path / "x.onnx", "torchscript")
    assert out.is_file()

    class Stop(Exception):
        pass

    def stop(module, example):
        raise Stop

    monkeypatch.setattr(deploy, "_to_onnx", stop)
    with pytest.warns(
        UserWarning, match=r"--out .*x\.pt: an ONNX file usually ends in \.onnx"
    ):
        with pytest.raises(Stop):
            deploy.export_module(features, tmp_path / "x.pt", "onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(Stop):
            deploy.export_module(features, tmp_path / "x.onnx", "onnx")
        deploy.export_module(features, tmp_path / "x.pt", "torchscript")
