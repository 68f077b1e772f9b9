"""Export of pretrained folders to ONNX and TorchScript
(``speechbrain_mrmha.inference.export``, the CLI's ``export``) and the onnxruntime
backend (``inference.backends.OnnxEncoder``) of ``embed`` and ``verify``.

For every pooling graph of the recipe yamls (one tiny, untrained model
per distinct graph: the other yamls' poolings compute one of these graphs
or a subset of its operations, which a test checks), both formats and
both graphs (waveforms, features), exported through the CLI: utterances
of random lengths (no multiple of the 160-sample hop) padded together in
one batch embed like the PyTorch pretrained model embeds each file alone,
and each file alone embeds like inside the padded batch (cosine
>= 0.9999). Exports are made once per module and shared.

No verdict without speech: the waveform graphs of both formats flag (their
``usable`` output) inputs shorter than ``min_samples``, lengths outside
[1, samples] and silent rows, and the onnxruntime backend refuses silence
with the error of the PyTorch backend. Export hygiene: no absolute path in
the metadata.
"""

from pathlib import Path

import numpy
import pytest
import torch

import speechbrain_mrmha.inference.export as deploy
from speechbrain_mrmha.app.cli import main
from speechbrain_mrmha.inference.backends import (
    NoSignalError,
    OnnxEncoder,
    TorchEncoder,
    load_backend,
)
from speechbrain_mrmha.inference.extraction import encode_signals
from speechbrain_mrmha.inference.pretrained import (
    load_calibration,
    load_encoder,
    write_calibration,
)
from speechbrain_mrmha.layers.lengths import HOP_SAMPLES
from speechbrain_mrmha.layers.pooling import AttentionPooling
from speechbrain_mrmha.scoring.calibration import Calibration

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from conftest import RECIPE_HPARAMS, _write_tiny_pretrained  # noqa: E402

# One yaml per distinct exported graph of a pooling; the others compute one
# of these graphs (test_every_recipe_pooling_graph_is_exported): the
# self-attentive, global multi-head and modern MRMHA poolings are the "mlp"
# scorer of mrmha.yaml with other head counts, less the temperatures.
# yaml -> the seed of its folder's weights
FAMILIES = {
    "statistics.yaml": 3,  # MaskedStatisticsPooling
    "attentive_statistics.yaml": 5,  # "mlp" scorer, weighted std
    "split_multi_head.yaml": 6,  # "split_linear" scorer
    "structured_multi_head.yaml": 7,  # "shared_mlp" scorer
    "mrmha.yaml": 9,  # "mlp" scorer, K heads, temperatures
}
# The ResNet of every folder but mrmha.yaml's (which the tests of lengths
# of fewer frames than the time stride of 8 and of long inputs use): 2
# stages (time stride 2) instead of 4, fewer operations for the exporters
# to trace (about a third less time per ONNX export); same pooling graphs.
SMALL_RESNET = {"channels": [4, 8], "block_counts": [1, 1]}
FORMATS = ["onnx", "torchscript"]
PARITY = 0.9999


def _cosines(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def _graph_of(pooling):
    """What decides the exported graph of a pooling: its class, or for an
    attention pooling its core's scorer, std, queries and temperatures
    (the head count only sizes the tensors)."""
    if not isinstance(pooling, AttentionPooling):
        return (type(pooling).__name__,)
    return (
        pooling.scorer,
        pooling.std,
        pooling.num_queries > 1,
        pooling.learnable_temperatures,
        pooling.has_temperatures,
    )


def _recipe_pooling(yaml):
    """The pooling module the model entries of a recipe yaml build."""
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_mrmha.training.config import model_definition

    overrides = {"data_folder": "unused", "n_classes": 2}
    overrides.update(channels=[4, 8], block_counts=[1, 1], emb_dim=16)
    text = model_definition(RECIPE_HPARAMS / yaml, overrides)
    return load_hyperpyyaml(text)["embedding_model"].pooling


def _padded(rows):
    """Zero-padded (batch, time, ...) of tensors of different lengths."""
    lengths = torch.tensor([row.shape[0] for row in rows])
    batch = torch.zeros(len(rows), int(lengths.max()), *rows[0].shape[1:])
    for i, row in enumerate(rows):
        batch[i, : row.shape[0]] = row
    return batch, lengths


@pytest.fixture(scope="module")
def signals():
    """Five utterances of 0.5 to 1.9 s, no length a multiple of the hop."""
    generator = torch.Generator().manual_seed(11)
    lengths = torch.randint(8000, 30000, (5,), generator=generator)
    lengths = lengths + (lengths % HOP_SAMPLES == 0).long()
    return [0.1 * torch.randn(int(n), generator=generator) for n in lengths]


def _run_all(path, fmt):
    """(inputs, lengths) -> the tuple of outputs of an exported file."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
        names = [item.name for item in session.get_inputs()]

        def run(inputs, lengths):
            feed = {names[0]: inputs.numpy(), names[1]: lengths.numpy()}
            return tuple(torch.from_numpy(x) for x in session.run(None, feed))

        return run
    module = torch.jit.load(str(path))

    def run(inputs, lengths):
        with torch.no_grad():
            out = module(inputs, lengths)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return run


def _run(path, fmt):
    """(inputs, lengths) -> embeddings of an exported file."""
    run_all = _run_all(path, fmt)
    return lambda inputs, lengths: run_all(inputs, lengths)[0]


class Exports:
    """Tiny pretrained folders and their exports, made on first use."""

    def __init__(self, root, corpus):
        self.root, self.corpus = root, corpus
        self.folders, self.files, self.encoders = {}, {}, {}

    def folder(self, family):
        if family not in self.folders:
            resnet = {} if family == "mrmha.yaml" else SMALL_RESNET
            self.folders[family] = _write_tiny_pretrained(
                self.root / family / "pretrained",
                self.corpus,
                family,
                seed=FAMILIES[family],
                **resnet,
            )
            if family == "mrmha.yaml":  # one calibrated folder
                thresholds = {
                    "eer": {"cosine": 0.25, "llr": 0.5, "value": 0.1},
                    "min_dcf": {"cosine": 0.5, "llr": 2.0, "value": 0.01},
                }
                write_calibration(
                    self.folders[family],
                    Calibration(slope=6.0, offset=-1.0, thresholds=thresholds),
                )
        return self.folders[family]

    def encoder(self, family):
        if family not in self.encoders:
            self.encoders[family] = load_encoder(self.folder(family))
        return self.encoders[family]

    def file(self, family, fmt, features_input=False):
        key = (family, fmt, features_input)
        if key not in self.files:
            suffix = ".onnx" if fmt == "onnx" else ".pt"
            out = self.root / family / f"model{'_feats' * features_input}"
            out = out.with_suffix(suffix)
            argv = ["export", "--model", str(self.folder(family))]
            argv += ["--format", fmt, "--out", str(out)]
            assert main(argv + ["--features-input"] * features_input) == 0
            self.files[key] = out
        return self.files[key]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_corpus):
    return Exports(tmp_path_factory.mktemp("exports"), tiny_corpus)


def test_every_recipe_pooling_graph_is_exported():
    """The exported families have distinct graphs, and the pooling of
    every recipe yaml computes one of them, or one less the division by
    the temperatures (whose poolings then are checked by that export)."""
    yamls = sorted(RECIPE_HPARAMS.glob("*.yaml"))
    graphs = {
        path.name: _graph_of(_recipe_pooling(path.name))
        for path in yamls
        if path.name != "verification.yaml"
    }
    assert set(FAMILIES) < set(graphs)
    exported = [graphs[family] for family in FAMILIES]
    assert len(set(exported)) == len(FAMILIES), exported
    for yaml, graph in graphs.items():
        with_temperatures = graph[:-1] + (True,)
        assert graph in exported or with_temperatures in exported, yaml


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_padded_batch_matches_pytorch_and_each_file_alone(
    exports, signals, family, fmt
):
    run = _run(exports.file(family, fmt), fmt)
    encoder = exports.encoder(family)
    reference = torch.cat([encode_signals(encoder, [s])[0] for s in signals])
    wavs, lengths = _padded(signals)
    batched = run(wavs, lengths)
    alone = torch.cat(
        [run(s[None], lengths[i : i + 1]) for i, s in enumerate(signals)]
    )
    assert batched.shape == reference.shape
    assert _cosines(batched, reference).min() >= PARITY
    assert _cosines(alone, batched).min() >= PARITY
    # the utterances differ: a graph that ignored its inputs would fail
    assert _cosines(batched[:1], batched[1:]).max() < 0.999


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_features_input_matches_pytorch(exports, signals, family, fmt):
    """The features graph of every family; attentive statistics' ONNX
    export once failed (a PassError of onnxscript's constant folding on a
    frame width torch.export could not prove constant)."""
    run = _run(exports.file(family, fmt, features_input=True), fmt)
    encoder = exports.encoder(family)
    reference = torch.cat([encode_signals(encoder, [s])[0] for s in signals])
    with torch.no_grad():
        feats = [encoder.mods.compute_features(s[None])[0] for s in signals]
    batch, frames = _padded(feats)
    batched = run(batch, frames)
    alone = torch.cat(
        [run(f[None], frames[i : i + 1]) for i, f in enumerate(feats)]
    )
    assert batched.shape == reference.shape
    assert _cosines(batched, reference).min() >= PARITY
    assert _cosines(alone, batched).min() >= PARITY


def test_padding_content_and_short_batches(exports, signals):
    """The graph zeroes samples past each length itself, and lengths far
    below the export example (fewer than one frame per stride) still match
    PyTorch."""
    family = "mrmha.yaml"
    run = _run(exports.file(family, "onnx"), "onnx")
    wavs, lengths = _padded(signals)
    noisy = wavs + (wavs == 0) * torch.randn(wavs.shape)
    assert _cosines(run(noisy, lengths), run(wavs, lengths)).min() >= PARITY
    module = deploy.deployable(exports.encoder(family))
    short = [signals[0][:700], signals[1][:1033]]
    wavs, lengths = _padded(short)
    with torch.no_grad():
        expected, usable = module(wavs, lengths)
    assert usable.all()
    assert _cosines(run(wavs, lengths), expected).min() >= PARITY


def test_onnxruntime_backend_has_the_contract(exports, signals):
    """``OnnxEncoder`` meets the encoder contract of the PyTorch backend:
    same attributes, same embeddings of a padded batch of sample counts
    (no entropies), fp32 only; ``load_backend`` picks it for .onnx files."""
    family = "mrmha.yaml"
    onnx_file = exports.file(family, "onnx")
    ours = load_backend(onnx_file)
    assert isinstance(ours, OnnxEncoder)
    torch_backend = TorchEncoder.from_encoder(exports.encoder(family))
    for name in ("device", "sample_rate", "min_samples", "emb_dim"):
        assert getattr(ours, name) == getattr(torch_backend, name), name
    assert ours.source == str(onnx_file) and ours.precisions == ("fp32",)
    wavs, lengths = _padded(signals)
    got, entropies = ours.encode(wavs, lengths)
    expected, expected_entropies = torch_backend.encode(wavs, lengths)
    assert entropies is None and expected_entropies is not None
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert _cosines(got, expected).min() >= PARITY
    with pytest.raises(ValueError, match="fp32 only"):
        ours.encode(wavs, lengths, "bf16")
    with pytest.raises(ValueError, match="integer sample counts"):
        ours.encode(wavs, lengths / wavs.shape[1])
    features = exports.file(family, "onnx", features_input=True)
    with pytest.raises(ValueError, match="features graph"):
        OnnxEncoder(features)


def test_folders_with_speechbrains_statistics_pooling_still_export(
    exports, signals
):
    """A folder written before MaskedStatisticsPooling names SpeechBrain's
    StatisticsPooling: it still loads, runs in the PyTorch backend, and
    exports with our layer in its place (its noise's midpoint added).
    TorchScript here (``deployable`` puts the layer in place for both
    formats, and neither exports SpeechBrain's layer); the ONNX graph of
    our layer is the statistics family's above."""
    import shutil

    from speechbrain.nnet.pooling import StatisticsPooling

    new = exports.folder("statistics.yaml")
    old = exports.root / "old_statistics" / "pretrained"
    shutil.copytree(new, old)
    text = (old / "hyperparams.yaml").read_text()
    ours = "!name:speechbrain_mrmha.layers.pooling.MaskedStatisticsPooling"
    assert text.count(ours) == 1
    theirs = "!new:speechbrain.nnet.pooling.StatisticsPooling"
    (old / "hyperparams.yaml").write_text(text.replace(ours, theirs))
    backend = TorchEncoder(old)
    assert isinstance(backend.mods.embedding_model.pooling, StatisticsPooling)
    out = exports.root / "old_statistics" / "model.pt"
    argv = ["export", "--model", str(old), "--format", "torchscript"]
    assert main(argv + ["--out", str(out)]) == 0
    pooling = torch.jit.load(str(out)).embedder.embedding_model.pooling
    assert pooling.original_name == "MaskedStatisticsPooling"
    wavs, lengths = _padded(signals)
    got = _run(out, "torchscript")(wavs, lengths)
    expected, _ = backend.encode(wavs, lengths)
    assert _cosines(got, expected).min() >= PARITY
    reference, _ = TorchEncoder(new).encode(wavs, lengths)
    assert _cosines(got, reference).min() >= PARITY


@pytest.mark.parametrize("fmt", FORMATS)
def test_waveform_graph_flags_what_must_not_be_scored(exports, signals, fmt):
    """The graph's ``usable`` output is False for inputs shorter than the
    metadata's min_samples (0 or 100 samples), lengths outside
    [1, samples] (0, negative, past the samples) and silent rows (digital
    zero, -80 dBFS, a bare DC offset), True for real rows, also a quiet
    one at -60 dBFS; its embeddings of real rows are unchanged."""
    family = "mrmha.yaml"
    run = _run_all(exports.file(family, fmt), fmt)
    metadata = deploy.read_metadata(exports.file(family, "onnx"))
    min_samples = int(metadata["min_samples"])
    assert min_samples == 201
    for samples in (0, 100, min_samples - 1):
        wavs = 0.1 * torch.randn(2, samples)
        outputs = run(wavs, torch.tensor([samples, samples]))
        assert len(outputs) == 2 and outputs[1].tolist() == [False, False]
    wavs, lengths = _padded(signals)
    quiet = signals[2] / signals[2].std() * 10 ** (-60 / 20)
    rows = [signals[0], signals[1], quiet]
    rows += [torch.zeros(9000), 1e-4 * signals[1][:9000] / 0.1]
    rows += [torch.full((9000,), 0.25)]
    wavs, lengths = _padded(rows)
    embeddings, usable = run(wavs, lengths)
    assert usable.dtype == torch.bool
    assert usable.tolist() == [True, True, True, False, False, False]
    reference = torch.cat(
        [encode_signals(exports.encoder(family), rows[:3])[0]]
    )
    assert _cosines(embeddings[:3], reference).min() >= PARITY
    wavs, lengths = _padded(signals[:4])
    samples = wavs.shape[1]
    bad = torch.tensor([0, -5, samples + 1, int(lengths[3])])
    assert run(wavs, bad)[1].tolist() == [False, False, False, True]


def test_onnxruntime_backend_refuses_silence_as_pytorch_does(exports, signals):
    """Through the onnxruntime backend, the graph's ``usable`` output gives
    the PyTorch backend's error, naming the same rows in the same words."""
    family = "mrmha.yaml"
    ours = OnnxEncoder(exports.file(family, "onnx"))
    torch_backend = TorchEncoder.from_encoder(exports.encoder(family))
    rows = [signals[0], torch.zeros(8000), signals[1], 1e-5 * signals[2]]
    wavs, lengths = _padded(rows)
    messages = []
    for backend in (ours, torch_backend):
        with pytest.raises(NoSignalError) as error:
            backend.encode(wavs, lengths)
        assert error.value.rows == [1, 3]
        messages.append(str(error.value).replace(backend.source, "MODEL"))
    assert messages[0] == messages[1]
    assert "row 1: no usable signal: digital zero" in messages[0]
    assert "row 3: no usable signal: near-silence" in messages[0]
    with pytest.raises(NoSignalError, match="row 1"):
        encode_signals(ours, rows[:2])


def test_metadata_records_the_graph(exports):
    metadata = deploy.read_metadata(exports.file("mrmha.yaml", "onnx"))
    assert metadata["graph"] == "waveform"
    assert metadata["outputs"] == "embeddings,usable"
    assert float(metadata["silence_floor_dbfs"]) == -70.0
    assert metadata["lengths"] == "samples"
    assert int(metadata["chunk_frames"]) == 2048
    assert int(metadata["emb_dim"]) == 16
    assert float(metadata["threshold"]) == 0.5
    features = exports.file("mrmha.yaml", "onnx", features_input=True)
    assert deploy.read_metadata(features)["lengths"] == "frames"


def test_metadata_records_no_absolute_path(exports):
    """The metadata travels with the file: it names the source folder by
    its name, never by a path of the machine that exported it."""
    family = "mrmha.yaml"
    folder = exports.folder(family)
    for features_input in (False, True):
        path = exports.file(family, "onnx", features_input=features_input)
        metadata = deploy.read_metadata(path)
        assert metadata["pretrained_folder"] == folder.name
        for value in metadata.values():
            for absolute in {str(folder), str(folder.resolve())}:
                assert absolute not in value, value
            assert str(exports.root) not in value, value


def test_inputs_longer_than_chunk_frames_match_windowed_pytorch(
    exports, monkeypatch
):
    """The graph encodes long inputs in one pass; PyTorch in windows of
    chunk_frames (here 64 frames for a 301-frame input): same embedding."""
    import speechbrain_mrmha.layers.resnet as resnet

    family = "mrmha.yaml"
    windows = []
    original = resnet.encode_windowed

    def spy(*args, **kwargs):
        windows.append(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(resnet, "encode_windowed", spy)
    encoder = load_encoder(exports.folder(family))
    encoder.mods.embedding_model.chunk_frames = 64
    long = 0.1 * torch.randn(48071, generator=torch.Generator().manual_seed(5))
    reference, _ = encode_signals(encoder, [long])
    assert windows == [64]
    run = _run(exports.file(family, "onnx"), "onnx")
    got = run(long[None], torch.tensor([long.shape[0]]))
    assert _cosines(got, reference).min() >= PARITY


def test_onnxruntime_backend_of_embed_and_verify(exports, tiny_corpus, capsys):
    family = "mrmha.yaml"
    folder, onnx_file = exports.folder(family), exports.file(family, "onnx")
    files = sorted(str(p) for p in Path(tiny_corpus.root).rglob("*.wav"))[:6]
    outs = {}
    for backend, model in (("pytorch", folder), ("onnxruntime", onnx_file)):
        out = exports.root / f"emb_{backend}.npy"
        argv = ["embed", "--model", str(model), *files, "--out", str(out)]
        assert main(argv + ["--backend", backend]) == 0
        outs[backend] = torch.from_numpy(numpy.load(out))
    assert outs["pytorch"].shape == (6, 16)
    assert _cosines(outs["pytorch"], outs["onnxruntime"]).min() >= PARITY
    capsys.readouterr()
    lines = {}
    for backend, model in (("pytorch", folder), ("onnxruntime", onnx_file)):
        argv = ["verify", "--model", str(model), files[0], files[3]]
        assert main(argv + ["--backend", backend]) == 0
        printed = capsys.readouterr().out.splitlines()
        lines[backend] = {
            line.split(":")[0]: line.split(":", 1)[1].strip()
            for line in printed
        }
    pt, ort = lines["pytorch"], lines["onnxruntime"]
    score = float(pt["score"].split()[0])
    assert abs(score - float(ort["score"].split()[0])) < 1e-4
    # the folder's calibration travels in the exported file
    calibration = load_calibration(folder)
    for printed in (pt, ort):
        llr = float(printed["llr"].split()[0])
        assert llr == pytest.approx(
            calibration.slope * score + calibration.offset, abs=1e-3
        )
        assert printed["threshold"].split()[:2] == [
            "cosine",
            f"{calibration.thresholds['eer']['cosine']:.6f}",
        ]
    threshold = calibration.thresholds["eer"]["cosine"]
    if abs(score - threshold) > 1e-4:
        assert pt["decision"] == ort["decision"]


def test_cli_refuses_wrong_models_in_one_line(exports, tiny_corpus, capsys):
    family = "mrmha.yaml"
    folder, onnx_file = exports.folder(family), exports.file(family, "onnx")
    features = exports.file(family, "onnx", features_input=True)
    wav = str(next(Path(tiny_corpus.root).rglob("*.wav")))
    cases = [
        (["--model", str(folder), "--backend", "onnxruntime"], "onnx file"),
        (["--model", str(onnx_file)], "--backend onnxruntime"),
        (["--model", str(features), "--backend", "onnxruntime"], "features"),
        (
            ["--model", str(onnx_file), "--backend", "onnxruntime"]
            + ["--precision", "bf16"],
            "fp32",
        ),
    ]
    for options, words in cases:
        capsys.readouterr()
        assert main(["verify", wav, wav, *options]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert words in err, err
    out = exports.root / "missing.onnx"
    assert main(["export", "--model", "/nonexistent", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_export_leaves_one_file_and_keeps_it_on_failure(exports, monkeypatch):
    """One self-contained file (no external data, no temporary file left);
    an export whose graph does not match PyTorch fails its check and keeps
    the previous file."""
    family = "mrmha.yaml"
    out = exports.file(family, "torchscript")
    made = {p.name for (f, *_), p in exports.files.items() if f == family}
    assert {p.name for p in out.parent.iterdir()} == made | {"pretrained"}
    before = out.read_bytes()

    class Wrong(torch.nn.Module):
        def forward(self, wavs, lengths):
            return wavs[:, :16] * lengths[:, None]

    monkeypatch.setattr(
        deploy,
        "_to_torchscript",
        lambda module, example: torch.jit.trace(Wrong(), example),
    )
    with pytest.raises(ValueError, match="does not match PyTorch"):
        deploy.export_model(exports.folder(family), out, "torchscript")
    assert out.read_bytes() == before
    assert {p.name for p in out.parent.iterdir()} == made | {"pretrained"}


def test_an_exported_models_cache_is_tied_like_a_folders(exports):
    """The embedding cache of an exported model has the fingerprint of a
    folder's (``extraction.cache_fingerprint``): its content, the data
    folder, the precision and the silence floor, so a cache written before
    the floor (which may hold embeddings of silence) starts afresh with an
    exported model too."""
    import json

    from speechbrain_mrmha.dataio.files import content_digest
    from speechbrain_mrmha.inference.extraction import SILENCE_FLOOR_DBFS
    from speechbrain_mrmha.inference.model import SpeakerModel

    path = exports.file("mrmha.yaml", "onnx")  # SpeakerModel's exported kind
    exported = json.loads(SpeakerModel(path).cache().fingerprint)
    folder = SpeakerModel(exports.folder("mrmha.yaml"))
    assert set(exported) == set(json.loads(folder.cache().fingerprint))
    assert exported["model"] == {path.name: content_digest(path)}
    assert exported["silence_floor_dbfs"] == SILENCE_FLOOR_DBFS
