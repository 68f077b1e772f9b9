"""The command line (``python -m speechbrain_mrmha``) on the tiny synthetic
corpus and tiny untrained models. The subprocess runs are started together
(each spends most of its time importing torch) and checked one per test."""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from conftest import HANG_GUARD_SECONDS, calibration_at, run_process
from matplotlib.image import imread

from speechbrain_mrmha.app.cli import main, write_embeddings
from speechbrain_mrmha.dataio.trials import read_trials

COMMAND = [sys.executable, "-m", "speechbrain_mrmha"]
HELP_COMMANDS = [
    [],
    ["verify"],
    ["embed"],
    ["plot"],
    ["plot", "attention"],
    ["plot", "det"],
    ["plot", "hist"],
    ["demo"],
]


def embed_argv(model, files, out, *options):
    """``embed --model MODEL FILES... OPTIONS... --out OUT``."""
    return ["embed", "--model", model, *files, *options, "--out", str(out)]


@pytest.fixture(scope="module")
def inputs(
    tmp_path_factory,
    tiny_corpus,
    tiny_pretrained,
    tiny_pretrained_selfattentive,
):
    """Audio and score files the CLI runs use."""
    folder = tmp_path_factory.mktemp("cli")
    trials = read_trials(tiny_corpus.verification_file)
    target = next(t for t in trials if t.label == 1)
    wav = lambda name: os.path.join(tiny_corpus.wav_folder, name)  # noqa: E731
    corpus_files = sorted(
        {wav(t.enrol) for t in trials} | {wav(t.test) for t in trials}
    )[:4]
    first, second = wav(target.enrol), wav(target.test)
    # stereo at 8 kHz: two different channels of a corpus utterance
    mono, rate = soundfile.read(first, dtype="float32")
    low = torchaudio.functional.resample(
        torch.from_numpy(mono), rate, 8000
    ).numpy()
    stereo_file = folder / "stereo_8k.wav"
    soundfile.write(
        stereo_file,
        np.stack([low, 0.5 * np.roll(low, 800)], axis=1),
        8000,
        subtype="FLOAT",
    )
    short_file = folder / "short.wav"
    soundfile.write(short_file, np.zeros(1600, dtype="float32"), 16000)
    not_audio = folder / "notes.wav"
    not_audio.write_text("this is not audio\n")
    g = torch.Generator().manual_seed(0)
    score_files = []
    for index, shift in enumerate((2.0, 1.0)):
        path = folder / f"scores_{index}.txt"
        lines = [
            f"e{i} t{i} {float(torch.randn(1, generator=g)) + shift:.6f} 1"
            for i in range(50)
        ]
        lines += [
            f"e{i} n{i} {float(torch.randn(1, generator=g)):.6f} 0"
            for i in range(300)
        ]
        path.write_text("\n".join(lines) + "\n")
        score_files.append(str(path))
    return types.SimpleNamespace(
        folder=folder,
        first=first,
        second=second,
        stereo=str(stereo_file),
        embed_files=list(
            dict.fromkeys([first, second] + corpus_files + [str(stereo_file)])
        ),
        short=str(short_file),
        not_audio=str(not_audio),
        scores=score_files,
        model=str(tiny_pretrained),
        reference=str(tiny_pretrained_selfattentive),
    )


@pytest.fixture(scope="module")
def runs(inputs):
    """Every CLI run, started in parallel; name -> CompletedProcess."""
    out = inputs.folder
    commands = {
        "embed": embed_argv(inputs.model, inputs.embed_files, out / "emb.pt"),
        "embed_repeats": embed_argv(
            inputs.model,
            [inputs.second, inputs.first, inputs.second],
            out / "rep.npy",
            "--max-batch-size",
            "1",
        ),
        "verify": [
            "verify",
            "--model",
            inputs.model,
            inputs.first,
            inputs.second,
        ],
        "embed_bf16": embed_argv(
            inputs.model,
            inputs.embed_files,
            out / "emb_bf16.pt",
            "--precision",
            "bf16",
            "--batch-seconds",
            "3",
        ),
        "attention": [
            "plot",
            "attention",
            "--model",
            inputs.model,
            "--wav",
            inputs.first,
            "--out",
            str(out / "attention.png"),
            "--reference",
            inputs.reference,
        ],
        "det": [
            "plot",
            "det",
            *inputs.scores,
            "--out",
            str(out / "det.png"),
            "--labels",
            "good",
            "worse",
        ],
        "hist": [
            "plot",
            "hist",
            inputs.scores[0],
            "--out",
            str(out / "hist.png"),
        ],
        "not_audio": embed_argv(
            inputs.model, [inputs.first, inputs.not_audio], out / "never.pt"
        ),
        "short": [
            "verify",
            "--model",
            inputs.model,
            inputs.first,
            inputs.short,
        ],
    }
    untrusted, line = untrusted_folder(inputs.model, out / "untrusted")
    for command in ("verify", "embed", "export"):
        argv = {
            "verify": ["verify", "--model", str(untrusted)],
            "embed": embed_argv(
                str(untrusted), [inputs.first], out / "never.pt"
            ),
            "export": ["export", "--model", str(untrusted)],
        }[command]
        if command == "verify":
            argv += [inputs.first, inputs.second]
        if command == "export":
            argv += ["--format", "torchscript", "--out", str(out / "x.pt")]
        commands[f"untrusted_{command}"] = argv
    commands["untrusted_attention"] = [
        "plot",
        "attention",
        "--model",
        str(untrusted),
        "--wav",
        inputs.first,
        "--out",
        str(out / "never.png"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    processes = {
        name: subprocess.Popen(
            COMMAND + args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, args in commands.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=HANG_GUARD_SECONDS)
        results[name] = subprocess.CompletedProcess(
            commands[name], process.returncode, stdout, stderr
        )
    return results


def untrusted_folder(model, folder, command=None):
    """A copy of ``model`` whose hyperparams.yaml ends with a line that
    creates ``<folder>.marker`` if the yaml is ever run (``command``: that
    !apply line instead). Returns the folder and the line's number."""
    marker = folder.parent / f"{folder.name}.marker"
    shutil.copytree(model, folder)
    yaml = folder / "hyperparams.yaml"
    lines = yaml.read_text().splitlines()
    command = command or f"x: !apply:os.system ['touch {marker}']"
    yaml.write_text("\n".join([*lines, command]) + "\n")
    return folder, len(lines) + 1


@pytest.mark.parametrize("command", ["verify", "embed", "export", "attention"])
def test_a_folder_whose_yaml_would_run_code_is_refused_unrun(
    runs, inputs, command
):
    """Every command that loads a folder checks its hyperparams.yaml
    against the allow-list before SpeechBrain runs it: exit 2 naming the
    tag and its line, and the command in the yaml never runs."""
    result = runs[f"untrusted_{command}"]
    yaml = Path(inputs.model) / "hyperparams.yaml"
    line = len(yaml.read_text().splitlines())
    assert result.returncode == 2, result.stderr
    assert f"line {line + 1}: !apply:os.system" in result.stderr
    assert "--trust-folder" in result.stderr
    assert not (inputs.folder / "untrusted.marker").exists()
    assert not (inputs.folder / "x.pt").exists()


def test_trust_folder_loads_a_folder_outside_the_allow_list(
    inputs, tmp_path, capsys
):
    """--trust-folder is the explicit opt-in (here for a harmless call
    outside the allow-list)."""
    folder, line = untrusted_folder(
        inputs.model, tmp_path / "model", "x: !apply:os.getcwd []"
    )
    argv = ["verify", "--model", str(folder), inputs.first, inputs.second]
    assert main(argv) == 2
    assert f"line {line}: !apply:os.getcwd" in capsys.readouterr().err
    assert main(argv + ["--trust-folder"]) == 0
    assert "decision: same speaker" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["5", "nan", "inf", "-1.5"])
def test_threshold_outside_the_cosine_range_is_refused(inputs, capsys, value):
    argv = ["verify", "--model", str(inputs.model), inputs.first, inputs.first]
    assert main(argv + ["--threshold", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --threshold {float(value)!r}: must be")
    assert "[-1, 1]" in err


def test_another_models_calibration_is_refused(inputs, tmp_path, capsys):
    """calibration.json records the weights it was fitted on: copied into
    another model's folder it is refused, naming both files."""
    from speechbrain_mrmha.inference.pretrained import (
        weights_fingerprint,
        write_calibration,
    )

    own, other = tmp_path / "own", tmp_path / "other"
    shutil.copytree(inputs.model, own)
    shutil.copytree(inputs.reference, other)
    calibration = calibration_at(0.5)
    calibration.fitted_on = weights_fingerprint(own)
    write_calibration(own, calibration)
    argv = ["verify", "--model", str(own), inputs.first, inputs.second]
    assert main(argv) == 0
    assert "llr: " in capsys.readouterr().out
    shutil.copyfile(own / "calibration.json", other / "calibration.json")
    argv[2] = str(other)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{other / 'calibration.json'} was fitted on other weights" in err
    assert f"{other / 'embedding_model.ckpt'}" in err


def succeeded(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert min(image.shape[:2]) > 100 and float(image[..., :3].std()) > 0.01


def alone(encoder, signal):
    """The embedding SpeechBrain's encode_batch gives for one signal alone."""
    with torch.no_grad():
        return encoder.encode_batch(
            torch.as_tensor(signal, dtype=torch.float32)[None]
        )[0, 0]


@pytest.mark.parametrize(
    "words", HELP_COMMANDS, ids=lambda w: "-".join(w) or "top"
)
def test_help_of_every_command(words):
    result = run_process(COMMAND + words + ["--help"])
    assert result.stdout.startswith(
        "usage: python -m speechbrain_mrmha " + " ".join(words)
    )


def test_embed_equals_encode_batch_on_each_file_alone(
    runs, inputs, tiny_encoder
):
    succeeded(runs["embed"])
    embeddings = torch.load(inputs.folder / "emb.pt")
    assert list(embeddings) == inputs.embed_files
    for path in inputs.embed_files[:-1]:  # 16 kHz mono corpus files
        signal, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000 and signal.ndim == 1
        expected = alone(tiny_encoder, signal)
        assert (embeddings[path] - expected).abs().max() <= 1e-4, path


def test_embed_writes_one_row_per_file_given_in_order(runs, inputs):
    """Repeated files: one row per input in input order, the repeat embedded
    once (so its rows are identical), each file's row its embedding."""
    assert succeeded(runs["embed_repeats"]).startswith(
        "3 embeddings of dim 16 -> "
    )
    rows = np.load(inputs.folder / "rep.npy")
    succeeded(runs["embed"])
    embeddings = torch.load(inputs.folder / "emb.pt")
    assert rows.shape == (3, 16)
    np.testing.assert_array_equal(rows[0], rows[2])
    for row, path in zip(rows, [inputs.second, inputs.first, inputs.second]):
        assert np.abs(row - embeddings[path].numpy()).max() <= 1e-4, path
    assert np.abs(rows[0] - rows[1]).max() > 1e-3


def test_embed_uses_the_extraction_loop(inputs, tmp_path, monkeypatch):
    """``embed`` goes through extraction.embed_files (the verification
    recipe's loop, via SpeakerModel.embed_files) with an in-memory cache
    and each file once."""
    import speechbrain_mrmha.inference.extraction as extraction

    calls = []
    real = extraction.embed_files

    def recording(encoder, files, durations, cache, **kwargs):
        calls.append((dict(files), cache.path))
        return real(encoder, files, durations, cache, **kwargs)

    monkeypatch.setattr(extraction, "embed_files", recording)
    files = [inputs.first, inputs.second, inputs.first]
    assert main(embed_argv(inputs.model, files, tmp_path / "e.npz")) == 0
    assert calls == [
        ({inputs.first: inputs.first, inputs.second: inputs.second}, None)
    ]
    with np.load(tmp_path / "e.npz") as data:
        assert data["paths"].tolist() == files and data["embeddings"].shape == (
            3,
            16,
        )
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]


def test_embed_precision_bf16_is_close_to_fp32(runs, inputs):
    succeeded(runs["embed"])
    succeeded(runs["embed_bf16"])
    full = torch.load(inputs.folder / "emb.pt")
    half = torch.load(inputs.folder / "emb_bf16.pt")
    assert list(half) == list(full)
    for path in full:
        assert not torch.equal(half[path], full[path])  # autocast was on
        assert (
            torch.nn.functional.cosine_similarity(half[path], full[path], dim=0)
            > 0.99
        )


def test_stereo_8k_file_is_mixed_down_and_resampled(runs, inputs, tiny_encoder):
    succeeded(runs["embed"])
    stereo, rate = soundfile.read(inputs.stereo, dtype="float32")
    assert rate == 8000 and stereo.shape[1] == 2
    mixed = torchaudio.functional.resample(
        torch.from_numpy(stereo).mean(dim=1), 8000, 16000
    )
    embedding = torch.load(inputs.folder / "emb.pt")[inputs.stereo]
    assert (embedding - alone(tiny_encoder, mixed)).abs().max() <= 1e-4
    # not the same as taking one channel only
    assert (
        embedding
        - alone(
            tiny_encoder,
            torchaudio.functional.resample(
                torch.from_numpy(stereo[:, 0]), 8000, 16000
            ),
        )
    ).abs().max() > 1e-3


def test_verify_prints_the_cosine_of_the_embed_embeddings(runs, inputs):
    lines = succeeded(runs["verify"]).splitlines()
    score = float(lines[0].split()[1])
    embeddings = torch.load(inputs.folder / "emb.pt")
    cosine = torch.nn.functional.cosine_similarity(
        embeddings[inputs.first], embeddings[inputs.second], dim=0
    )
    assert score == pytest.approx(float(cosine), abs=1e-4)
    assert lines[1] == f"llr: none ({inputs.model} has no calibration)"
    assert lines[2].startswith("threshold: cosine 0.500000 (default; no ")
    assert lines[3] == (
        "decision: same speaker"
        if score > 0.5
        else "decision: different speakers"
    )


def test_plot_commands_write_figures(runs, inputs):
    for name, figure in (
        ("attention", "attention.png"),
        ("det", "det.png"),
        ("hist", "hist.png"),
    ):
        succeeded(runs[name])
        assert_png(inputs.folder / figure)
    assert "attention of 2 heads" in runs["attention"].stdout


@pytest.mark.parametrize(
    "name, problem",
    [
        ("not_audio", "notes.wav: cannot read audio"),
        ("short", "short.wav: audio too short (0.10 s"),
    ],
)
def test_bad_audio_gives_one_line_error_and_code_2(runs, inputs, name, problem):
    result = runs[name]
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("error: ")
        and problem in lines[0]
    )
    assert not (inputs.folder / "never.pt").exists()


def test_verify_threshold_option_sets_the_decision(inputs, capsys):
    assert (
        main(["verify", "--model", inputs.model, inputs.first, inputs.second])
        == 0
    )
    score = float(capsys.readouterr().out.split()[1])
    for threshold, decision in (
        (score - 1e-3, "same speaker"),
        (score + 1e-3, "different speakers"),
    ):
        assert (
            main(
                [
                    "verify",
                    "--model",
                    inputs.model,
                    inputs.first,
                    inputs.second,
                    "--threshold",
                    str(threshold),
                ]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert f"decision: {decision}" in out and "(--threshold)" in out


def _verify_lines(argv, capsys):
    """``verify``'s printout as {field: value}."""
    assert main(argv) == 0
    return {
        line.split(":")[0]: line.split(":", 1)[1].strip()
        for line in capsys.readouterr().out.splitlines()
    }


def test_verify_prints_the_calibrated_llr_and_decides_by_its_thresholds(
    inputs, tmp_path, capsys
):
    """With calibration.json the LLR is slope * cosine + offset, and each
    operating point decides by its own threshold: the stored cosine of the
    EER / minDCF point, or the Bayes rule llr > log((1 - p) / p)."""
    from speechbrain_mrmha.inference.pretrained import write_calibration

    model = tmp_path / "pretrained"
    shutil.copytree(inputs.model, model)
    files = [inputs.first, inputs.second]
    plain = _verify_lines(["verify", "--model", str(model), *files], capsys)
    score = float(plain["score"].split()[0])
    # thresholds just below and just above the score: EER accepts, minDCF
    # rejects; the Bayes rule at p_target 0.5 is llr > 0 (llr 0.25 here)
    calibration = calibration_at(score)
    write_calibration(model, calibration)
    argv = ["verify", "--model", str(model), *files]
    default = _verify_lines(argv, capsys)
    llr = float(default["llr"].split()[0])
    assert llr == pytest.approx(7.0 * score + calibration.offset, abs=1e-3)
    assert default["decision"] == "same speaker"
    assert default["threshold"].startswith(f"cosine {score - 1e-3:.6f} (EER")
    expected = {
        "eer": "same speaker",
        "min_dcf": "different speakers",
        "bayes": "same speaker",  # llr 0.25 > 0
    }
    for point, decision in expected.items():
        lines = _verify_lines(argv + ["--operating-point", point], capsys)
        assert lines["decision"] == decision, point
    assert _verify_lines(argv + ["--operating-point", "bayes"], capsys)[
        "threshold"
    ].startswith("llr 0.000000 (Bayes")
    # an explicit cosine threshold still wins, and both at once is an error
    lines = _verify_lines(argv + ["--threshold", str(score + 0.01)], capsys)
    assert lines["decision"] == "different speakers"
    both = argv + ["--threshold", "0.1", "--operating-point", "eer"]
    assert main(both) == 2
    assert "give one of them" in capsys.readouterr().err


def test_operating_point_without_calibration_is_an_error(inputs, capsys):
    argv = ["verify", "--model", inputs.model, inputs.first, inputs.second]
    assert main(argv + ["--operating-point", "min_dcf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --operating-point min_dcf:")
    assert "has no calibration" in err


def test_malformed_calibration_is_named_before_scoring(
    inputs, tmp_path, capsys
):
    model = tmp_path / "pretrained"
    shutil.copytree(inputs.model, model)
    (model / "calibration.json").write_text('{"format": "other"}')
    argv = ["verify", "--model", str(model), inputs.first, inputs.second]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "calibration.json" in err and "format" in err


def test_verify_threshold_comes_from_the_model_folder_not_a_recipe_folder(
    inputs, tmp_path, capsys
):
    """An uncalibrated model decides by the EER threshold its own folder
    records (verification.json, written by the verification recipe); the
    metrics.json of a recipe output folder next to it is never read."""
    model = tmp_path / "run" / "pretrained"
    shutil.copytree(inputs.model, model)
    recipe_output = tmp_path / "run" / "verification" / "metrics.json"
    recipe_output.parent.mkdir()
    recipe_output.write_text(
        json.dumps({"EER": 3.9, "EER_threshold": 0.3125, "score_norm": None})
    )
    argv = ["verify", "--model", str(model), inputs.first, inputs.second]
    lines = _verify_lines(argv, capsys)
    assert lines["threshold"] == (
        f"cosine 0.500000 (default; no {model / 'verification.json'})"
    )
    from speechbrain_mrmha.inference.pretrained import write_threshold

    trials = tmp_path / "trials.txt"
    trials.write_text("1 a b\n0 a c\n1 d e\n0 d f\n")
    target, nontarget = torch.tensor([0.9, 0.2]), torch.tensor([0.1, 0.3])
    write_threshold(model, target, nontarget, trials)
    lines = _verify_lines(argv, capsys)
    assert lines["threshold"].startswith("cosine 0.200000 (EER threshold of ")
    assert str(model / "verification.json") in lines["threshold"]


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".npz"])
def test_write_embeddings_formats_round_trip(tmp_path, suffix):
    embeddings = {f"dir/{i}.wav": torch.randn(5) for i in range(3)}
    paths = ["dir/2.wav", "dir/0.wav", "dir/1.wav", "dir/0.wav"]
    out = write_embeddings(paths, embeddings, tmp_path / f"emb{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [f"emb{suffix}"]
    matrix = torch.stack([embeddings[p] for p in paths]).numpy()
    if suffix == ".pt":
        loaded = torch.load(out)
        assert list(loaded) == ["dir/2.wav", "dir/0.wav", "dir/1.wav"]
        assert all(torch.equal(loaded[k], embeddings[k]) for k in embeddings)
    elif suffix == ".npy":
        np.testing.assert_array_equal(np.load(out), matrix)
    else:
        with np.load(out) as data:
            assert data["paths"].tolist() == paths
            np.testing.assert_array_equal(data["embeddings"], matrix)


def test_cli_errors_in_process(tmp_path, inputs, capsys):
    assert (
        main(embed_argv(inputs.model, [inputs.first], tmp_path / "e.csv")) == 2
    )
    assert capsys.readouterr().err.strip() == (
        f"error: --out {tmp_path / 'e.csv'}: unknown format '.csv'; use .pt, .npy or .npz"
    )
    assert (
        main(
            [
                "verify",
                "--model",
                str(tmp_path / "none"),
                inputs.first,
                inputs.second,
            ]
        )
        == 2
    )
    assert (
        f"pretrained model folder {tmp_path / 'none'} does not exist"
        in capsys.readouterr().err
    )
    assert (
        main(
            ["plot", "det", *inputs.scores, "--out", "x.png", "--labels", "one"]
        )
        == 2
    )
    assert "--labels: 1 labels for 2 score files" in capsys.readouterr().err
    incomplete = tmp_path / "incomplete"
    shutil.copytree(inputs.model, incomplete)
    (incomplete / "classifier.ckpt").unlink()
    assert (
        main(
            ["verify", "--model", str(incomplete), inputs.first, inputs.second]
        )
        == 2
    )
    assert "lacks classifier.ckpt" in capsys.readouterr().err


def test_demo_is_dispatched_with_its_arguments(monkeypatch):
    received = []
    fake = types.ModuleType("speechbrain_mrmha.app.demo")
    fake.main = lambda argv: received.append(argv) or 0
    monkeypatch.setitem(sys.modules, "speechbrain_mrmha.app.demo", fake)
    assert main(["demo", "--output", "somewhere", "--epochs", "1"]) == 0
    assert received == [["--output", "somewhere", "--epochs", "1"]]


def test_demo_without_the_recipe_says_so_in_one_line(
    monkeypatch, tmp_path, capsys
):
    """As after a plain (non-editable) pip install: no recipe next to the
    package. One line on stderr, exit code 2, nothing created."""
    from speechbrain_mrmha.app import demo

    monkeypatch.setattr(
        demo, "RECIPE", tmp_path / "missing" / "recipes" / "VoxCeleb1"
    )
    assert main(["demo", "--output", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1
    assert lines[0].startswith(
        "demo: needs a clone of the speechbrain-mrmha repository (the VoxCeleb1 recipe is "
        "not installed with the package); "
    )
    assert str(tmp_path / "missing") in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: errors must come before it."""
    import speechbrain_mrmha.inference.backends as backends
    import speechbrain_mrmha.inference.pretrained as pretrained

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(backends, "load_backend", refuse)
    monkeypatch.setattr(pretrained, "load_encoder", refuse)


def one_error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured
    assert lines[0].startswith("error: ")
    return lines[0]


def test_embed_lists_every_unreadable_or_short_file_before_the_model(
    inputs, tmp_path, no_model, capsys
):
    """Too short files are known from the header: they are listed with the
    unreadable ones in one error, before the model loads."""
    tiny = tmp_path / "tiny.wav"
    soundfile.write(tiny, np.zeros(800, dtype="float32"), 16000)
    files = [inputs.first, inputs.short, inputs.not_audio, str(tiny)]
    out = tmp_path / "e.pt"
    assert main(embed_argv(inputs.model, files, out)) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: 3 files cannot be used: ")
    assert f"{inputs.short}: audio too short (0.10 s" in line
    assert f"{tiny}: audio too short (0.05 s" in line
    assert f"{inputs.not_audio}: cannot read audio header" in line
    assert not out.exists()


def test_non_finite_audio_is_an_error_naming_the_file_not_a_nan_score(
    inputs, tmp_path, capsys
):
    """A float WAV full of NaN used to print 'score: nan' and exit 0."""
    nan = tmp_path / "nan.wav"
    soundfile.write(
        nan, np.full(16000, np.nan, dtype="float32"), 16000, subtype="FLOAT"
    )
    assert (
        main(["verify", "--model", inputs.model, inputs.first, str(nan)]) == 2
    )
    assert f"{nan}: audio has non-finite samples" in one_error_line(capsys)
    out = tmp_path / "e.npy"
    assert main(embed_argv(inputs.model, [inputs.first, str(nan)], out)) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: 1 file cannot be embedded: ")
    assert f"{nan}: audio has non-finite samples" in line
    assert not out.exists()


@pytest.mark.parametrize("device", ["banana", "cuda:0", "cuda:x"])
@pytest.mark.parametrize("command", ["verify", "embed", "attention"])
def test_unknown_or_absent_device_is_one_line_before_the_model(
    inputs, tmp_path, no_model, capsys, command, device
):
    """--device cuda:0 without a GPU used to end in a 31-line traceback."""
    if device == "cuda:0" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    args = {
        "verify": ["verify", inputs.first, inputs.second],
        "embed": ["embed", inputs.first, "--out", str(tmp_path / "e.pt")],
        "attention": [
            "plot",
            "attention",
            "--wav",
            inputs.first,
            "--out",
            str(tmp_path / "a.png"),
        ],
    }[command]
    assert main([*args, "--model", inputs.model, "--device", device]) == 2
    assert one_error_line(capsys).startswith(f"error: device {device!r}")
    assert list(tmp_path.iterdir()) == []
