"""The model object (speechbrain_mrmha/inference/model.py): one object
loads a pretrained folder or an exported file and embeds, scores,
calibrates and decides. Its threshold comes from the model's own folder or
file, never from a recipe output folder; options and files are checked
before the model loads; an exported file decides like its folder."""

import json
import shutil

import numpy as np
import pytest
import soundfile
import torch
from conftest import calibration_at, noise

import speechbrain_mrmha.inference.backends as backends
import speechbrain_mrmha.inference.export as export
import speechbrain_mrmha.inference.pretrained as pretrained
from speechbrain_mrmha.inference.model import (
    DEFAULT_THRESHOLD,
    DecisionRule,
    SpeakerModel,
    read_calibration,
    read_threshold,
)
from speechbrain_mrmha.inference.pretrained import (
    load_threshold,
    write_calibration,
    write_threshold,
)
from speechbrain_mrmha.scoring.metrics import EER


@pytest.fixture
def folder(tmp_path, tiny_pretrained):
    """A copy of the tiny pretrained folder inside a run folder, next to
    where the verification recipe writes by default (../verification)."""
    copy = tmp_path / "run" / "pretrained"
    shutil.copytree(tiny_pretrained, copy)
    return copy


@pytest.fixture
def wavs(tmp_path):
    """Two 1-s and 1.5-s noise files."""
    paths = []
    for index, seconds in enumerate((1.0, 1.5)):
        path = tmp_path / f"noise{index}.wav"
        soundfile.write(
            path, noise(seconds, index).numpy(), 16000, subtype="FLOAT"
        )
        paths.append(str(path))
    return paths


@pytest.fixture
def trials_file(tmp_path):
    path = tmp_path / "trials.txt"
    path.write_text("1 a b\n0 a c\n1 d e\n0 d f\n")
    return path


@pytest.fixture
def no_loading(monkeypatch):
    """Loading the encoder fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(backends, "load_backend", refuse)
    monkeypatch.setattr(pretrained, "load_encoder", refuse)


def test_threshold_comes_from_the_model_folder_never_a_recipe_folder(
    folder, trials_file, no_loading
):
    """The old default read <model>/../verification/metrics.json, the
    verification recipe's default output folder: 0.3125 here. Now the
    threshold is the model's own: verification.json in its folder."""
    metrics = folder.parent / "verification" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(
        json.dumps({"EER": 3.9, "EER_threshold": 0.3125, "score_norm": None})
    )
    model = SpeakerModel(folder)
    rule = model.decision_rule()
    assert rule == DecisionRule(
        DEFAULT_THRESHOLD,
        "cosine",
        f"default; no {folder / 'verification.json'}",
    )
    target, nontarget = torch.tensor([0.9, 0.8, 0.35]), torch.tensor([0.4, 0.1])
    write_threshold(folder, target, nontarget, trials_file)
    threshold = float(EER(target, nontarget)[1])
    threshold_file, where = read_threshold(folder)
    for rule in (
        SpeakerModel(folder).decision_rule(),
        DecisionRule(threshold_file, "cosine", where),
    ):
        assert rule.threshold == pytest.approx(threshold)
        assert str(folder / "verification.json") in rule.source
        assert str(trials_file) in rule.source
    assert rule.threshold != 0.3125


def test_write_threshold_records_the_eer_point_of_raw_cosine(
    tmp_path, trials_file
):
    target, nontarget = torch.rand(50) + 0.3, torch.rand(200)
    folder = tmp_path / "model"
    folder.mkdir()
    path = write_threshold(folder, target, nontarget, trials_file)
    assert [p.name for p in folder.iterdir()] == ["verification.json"]
    data = json.loads(path.read_text())
    eer, threshold = EER(target, nontarget)
    assert data["threshold"] == pytest.approx(float(threshold))
    assert data["EER"] == pytest.approx(100 * float(eer), abs=1e-4)
    assert data["scores"] == "cosine" and data["operating_point"] == "eer"
    assert (data["n_target"], data["n_nontarget"]) == (50, 200)
    assert data["verification_file"] == str(trials_file)
    assert len(data["verification_file_sha256"]) == 64


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{broken", "not valid JSON"),
        ("[0.3]", "expected a JSON object"),
        ('{"threshold": 0.3}', "format None"),
        (
            '{"format": "speechbrain_mrmha.verification/1", "threshold": "x"}',
            "threshold 'x' is not a number",
        ),
        (
            '{"format": "speechbrain_mrmha.verification/1", "threshold": 3}',
            "not a cosine in [-1, 1]",
        ),
    ],
)
def test_a_malformed_threshold_file_is_named_before_the_model_loads(
    folder, no_loading, text, problem
):
    path = folder / "verification.json"
    path.write_text(text)
    for load in (load_threshold, SpeakerModel):
        with pytest.raises(ValueError) as error:
            load(folder)
        assert str(path) in str(error.value) and problem in str(error.value)


def test_the_model_loads_on_first_use_after_every_bad_file_is_listed(
    folder, wavs, tmp_path, no_loading
):
    short = tmp_path / "short.wav"
    soundfile.write(short, np.zeros(1600, dtype="float32"), 16000)
    missing = tmp_path / "missing.wav"
    model = SpeakerModel(folder)
    with pytest.raises(ValueError) as error:
        model.embed_files([wavs[0], short, missing, short])
    message = str(error.value)
    assert message.startswith("2 files cannot be used:")
    assert f"{short}: audio too short (0.10 s" in message
    assert str(missing) in message
    with pytest.raises(ValueError, match="1 file cannot be used"):
        model.verify(wavs[0], short)
    with pytest.raises(AssertionError, match="loaded"):
        model.embed_files(wavs)


def test_embeddings_scores_and_verdict_agree(folder, wavs):
    """verify's cosine is score() of embed_files' embeddings; a padded
    batch of signals embeds each signal as alone."""
    model = SpeakerModel(folder)
    embedded = model.embed_files(wavs + wavs[:1])
    assert list(embedded.embeddings) == wavs
    assert embedded.entropies[wavs[0]].shape == (2,)  # MRMHA, 2 heads
    a, b = (embedded.embeddings[w] for w in wavs)
    result = model.verify(*wavs)
    assert result.cosine == pytest.approx(model.score(a, b), abs=1e-5)
    assert result.llr is None and result.scale == "cosine"
    assert result.decision == (result.cosine > DEFAULT_THRESHOLD)
    signals = [noise(1.0, 0), noise(1.5, 1), noise(0.7, 2)]
    batch = model.embed_signals(signals)
    alone = torch.cat([model.embed_signals([s]) for s in signals])
    assert batch.shape == (3, 16)
    assert torch.allclose(batch, alone, atol=1e-5)
    assert torch.allclose(batch[:2], torch.stack([a, b]), atol=1e-5)
    rows = model.score(batch[:2], batch[1:])
    assert rows.shape == (2,) and float(rows[0]) == pytest.approx(
        model.score(batch[0], batch[1])
    )
    with pytest.raises(ValueError, match="2 signals cannot be embedded"):
        model.embed_signals([torch.zeros(2, 100), torch.zeros(10)])


def test_llr_and_decisions_follow_the_model_calibration(folder, wavs):
    score = SpeakerModel(folder).verify(*wavs).cosine
    with pytest.raises(ValueError, match="has no calibration"):
        SpeakerModel(folder).llr(score)
    calibration = calibration_at(score)
    write_calibration(folder, calibration)
    model = SpeakerModel(folder)
    assert model.calibration == calibration
    assert model.calibration_source == str(folder / "calibration.json")
    assert model.llr(score) == pytest.approx(0.25)
    llrs = model.llr(torch.tensor([score, score + 0.1]), [[1, 2], [3, 4]])
    assert torch.allclose(llrs, torch.tensor([0.25, 0.95], dtype=torch.float64))
    expected = {
        None: (True, "cosine", score - 1e-3),
        "eer": (True, "cosine", score - 1e-3),
        "min_dcf": (False, "cosine", score + 1e-3),
        "bayes": (True, "llr", 0.0),  # llr 0.25 > log(0.5 / 0.5)
    }
    for point, (decision, scale, threshold) in expected.items():
        result = model.verify(*wavs, operating_point=point)
        assert result.cosine == pytest.approx(score, abs=1e-6)
        assert result.llr == pytest.approx(0.25, abs=1e-4)
        assert (result.decision, result.scale) == (decision, scale), point
        assert result.threshold == pytest.approx(threshold)
    verdict = model.decide(score, threshold=score + 0.01)
    assert not verdict.decision and verdict.source == "--threshold"
    with pytest.raises(ValueError, match="give one of them"):
        model.decide(score, threshold=0.1, operating_point="eer")
    with pytest.raises(ValueError, match="no typo threshold"):
        model.decision_rule("typo")


def test_operating_point_needs_a_calibration(folder, no_loading):
    with pytest.raises(ValueError, match="min_dcf: .* has no calibration"):
        SpeakerModel(folder).decision_rule("min_dcf")


@pytest.fixture
def exported(tmp_path, monkeypatch):
    """A stand-in .onnx file whose metadata ``export.read_metadata``
    returns from a dict."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    metadata = {}
    monkeypatch.setattr(
        export,
        "read_metadata",
        lambda file: metadata,
    )
    return path, metadata


def test_an_exported_file_decides_like_its_folder(
    folder, wavs, exported, trials_file, no_loading
):
    """export_metadata records the folder's calibration and threshold;
    a model of the exported file reads them back."""
    path, metadata = exported
    metadata.update(SpeakerModel(folder).export_metadata())
    model = SpeakerModel(path)
    assert model.backend == "onnxruntime" and model.calibration is None
    assert model.decision_rule() == DecisionRule(
        0.5,
        "cosine",
        f"default; no {folder / 'verification.json'}; recorded in {path}",
    )
    write_threshold(
        folder, torch.tensor([0.9, 0.8]), torch.tensor([0.1]), trials_file
    )
    write_calibration(folder, calibration_at(0.5))
    metadata.update(SpeakerModel(folder).export_metadata())
    model = SpeakerModel(path)
    assert read_calibration(path)[0] == model.calibration == calibration_at(0.5)
    assert model.calibration_source == f"{path} (recorded calibration)"
    del metadata["calibration"]
    threshold, where = read_threshold(path)
    assert threshold == load_threshold(folder)[0]
    assert where.endswith(
        f"from {folder / 'verification.json'}; recorded in {path}"
    )
    metadata.clear()
    assert read_threshold(path) == (0.5, f"default; {path} records none")


def test_a_backend_that_cannot_run_the_model_fails_up_front(
    folder, exported, no_loading
):
    path, _ = exported
    cases = [
        (folder, {"backend": "onnxruntime"}, "takes an exported .onnx file"),
        (path, {"backend": "pytorch"}, "is a file; the pytorch backend"),
        (path, {"precision": "bf16"}, "runs in fp32"),
        (folder, {"backend": "tensorrt"}, "backend must be one of"),
        (folder, {"precision": "fp8"}, "precision must be one of"),
        (folder, {"device": "banana"}, "device 'banana'"),
    ]
    for source, options, words in cases:
        with pytest.raises(ValueError, match=words):
            SpeakerModel(source, **options)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SpeakerModel(folder.parent / "none")


def test_cohort_means_and_cache_follow_the_model(folder, wavs, tmp_path):
    model = SpeakerModel(folder)
    cohort = {"s1": {wavs[0]: 1.0, wavs[1]: 1.5}, "s2": {wavs[1]: 1.5}}
    cache = model.cache(tmp_path / "cache.pt", tmp_path)
    means = model.embed_cohort(cohort, cache)
    embedded = model.embed_files(wavs).embeddings
    assert torch.allclose(
        means,
        torch.stack(
            [(embedded[wavs[0]] + embedded[wavs[1]]) / 2, embedded[wavs[1]]]
        ),
        atol=1e-5,
    )
    assert (tmp_path / "cache.pt").is_file() and len(cache.embeddings) == 2
    fingerprint = json.loads(cache.fingerprint)
    assert fingerprint["precision"] == "fp32"
    assert fingerprint["data_folder"] == str(tmp_path.resolve())
    other = SpeakerModel(folder, precision="bf16").cache(None, tmp_path)
    assert other.fingerprint != cache.fingerprint and other.path is None


def test_record_threshold_writes_the_folder_or_warns(
    folder, trials_file, exported, monkeypatch, caplog, no_loading
):
    import speechbrain_mrmha.inference.pretrained as pretrained

    model = SpeakerModel(folder)
    target, nontarget = torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.85])
    path = model.record_threshold(target, nontarget, trials_file)
    assert path == folder / "verification.json"
    assert SpeakerModel(folder).decision_rule().threshold == pytest.approx(
        float(EER(target, nontarget)[1])
    )

    def read_only(path, text, encoding="utf-8"):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pretrained, "write_text_atomic", read_only)
    with caplog.at_level("WARNING"):
        assert model.record_threshold(target, nontarget, trials_file) is None
    assert f"not recorded in {folder}" in caplog.text
    assert "Permission denied" in caplog.text
    with pytest.raises(ValueError, match="records its threshold when"):
        SpeakerModel(exported[0]).record_threshold(
            target, nontarget, trials_file
        )


@pytest.mark.parametrize("value", [5.0, -1.01, float("nan"), float("inf")])
def test_a_threshold_outside_the_cosine_range_is_refused(
    folder, no_loading, value
):
    """A threshold outside [-1, 1] decides every trial alike (a file
    against itself would be "different speakers"): refused before loading."""
    model = SpeakerModel(folder)
    with pytest.raises(ValueError, match=r"--threshold .*finite cosine"):
        model.decision_rule(threshold=value)
    with pytest.raises(ValueError, match=r"--threshold .*\[-1, 1\]"):
        model.verify(torch.zeros(16000), torch.zeros(16000), threshold=value)
    assert model.decision_rule(threshold=-1.0).threshold == -1.0


def _untrusted(folder, tmp_path):
    """``folder``'s yaml plus a line that would create a marker file."""
    marker = tmp_path / "owned.marker"
    yaml = folder / "hyperparams.yaml"
    lines = yaml.read_text().splitlines()
    lines.append(f"x: !apply:os.system ['touch {marker}']")
    yaml.write_text("\n".join(lines) + "\n")
    return marker, len(lines)


def test_an_untrusted_folder_is_refused_before_its_yaml_runs(folder, tmp_path):
    from speechbrain_mrmha.inference.trust import UntrustedFolderError

    marker, line = _untrusted(folder, tmp_path)
    with pytest.raises(UntrustedFolderError) as error:
        SpeakerModel(folder)
    assert f"line {line}: !apply:os.system" in str(error.value)
    with pytest.raises(UntrustedFolderError, match=f"line {line}: !apply"):
        pretrained.load_encoder(folder)
    # the opt-in passes the check (the yaml runs only when it loads)
    assert SpeakerModel(folder, trust_folder=True).trust_folder
    assert not marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused(folder, tmp_path):
    """Every checkpoint is read with torch.load(weights_only=True) before
    SpeechBrain loads it: a pickle that runs a command is refused."""
    import os

    marker = tmp_path / "owned.marker"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"weight": Payload()}, folder / "classifier.ckpt")
    with pytest.raises(ValueError, match="weights_only=True") as error:
        SpeakerModel(folder).embed_signals([torch.zeros(16000)])
    assert str(folder / "classifier.ckpt") in str(error.value)
    assert not marker.exists()


def test_another_models_calibration_is_refused(folder, tmp_path, no_loading):
    """calibration.json records the weights it was fitted on; next to other
    weights it is refused, naming both files."""
    calibration = calibration_at(0.5)
    calibration.fitted_on = pretrained.weights_fingerprint(folder)
    write_calibration(folder, calibration)
    assert SpeakerModel(folder).calibration == calibration
    torch.save({"other": torch.ones(1)}, folder / "embedding_model.ckpt")
    with pytest.raises(ValueError) as error:
        SpeakerModel(folder)
    message = str(error.value)
    assert f"{folder / 'calibration.json'} was fitted on other" in message
    assert str(folder / "embedding_model.ckpt") in message


def test_an_exported_calibration_is_checked_against_its_recorded_weights(
    folder, exported, no_loading
):
    """export records the folder's weights beside its calibration; a
    calibration recorded for other weights is refused."""
    path, metadata = exported
    calibration = calibration_at(0.5)
    calibration.fitted_on = pretrained.weights_fingerprint(folder)
    write_calibration(folder, calibration)
    metadata.update(SpeakerModel(folder).export_metadata())
    assert json.loads(metadata["weights"]) == calibration.fitted_on
    assert SpeakerModel(path).calibration == calibration
    metadata["weights"] = json.dumps({"embedding_model.ckpt": "0" * 64})
    with pytest.raises(ValueError, match="fitted on other weights"):
        SpeakerModel(path)


def test_an_exported_threshold_outside_the_cosine_range_is_refused(
    exported, no_loading
):
    path, metadata = exported
    metadata["threshold"] = "nan"
    with pytest.raises(ValueError, match="recorded threshold 'nan'"):
        SpeakerModel(path)


def test_no_verdict_on_silence_and_the_error_names_the_files(tmp_path):
    """verify(silent, silent) used to say cosine 1.0, same speaker."""
    import numpy as np
    import soundfile

    from speechbrain_mrmha.inference.pretrained import example_folder

    silent, quiet = tmp_path / "silent.wav", tmp_path / "quiet.wav"
    soundfile.write(silent, np.zeros(32000, dtype="float32"), 16000)
    rng = np.random.default_rng(0)
    hiss = (1e-5 * rng.standard_normal(32000)).astype("float32")
    soundfile.write(quiet, hiss, 16000)
    model = SpeakerModel(example_folder(tmp_path / "model"))
    for a, b in ((silent, silent), (quiet, silent), (quiet, quiet)):
        with pytest.raises(ValueError) as error:
            model.verify(a, b)
        assert str(a) in str(error.value) and "no usable signal" in str(
            error.value
        )
    speech_like = (0.1 * rng.standard_normal(32000)).astype("float32")
    soundfile.write(tmp_path / "loud.wav", speech_like, 16000)
    assert model.verify(tmp_path / "loud.wav", tmp_path / "loud.wav").decision
