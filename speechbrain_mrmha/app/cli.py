"""Command line of speechbrain_mrmha: ``python -m speechbrain_mrmha <command>``
(``speechbrain_mrmha/__main__.py`` calls ``main`` here).

Commands (``--help`` on each):

* ``verify --model DIR a.wav b.wav [--threshold T | --operating-point
  eer|min_dcf|bayes]``: cosine score of two files, its calibrated
  log-likelihood ratio (when the folder holds ``calibration.json``) and a
  same / different speaker decision by the model's own threshold.
* ``embed --model DIR FILES... --out FILE``: embeddings of many files,
  batched by length (``extraction.embed_files``); ``.pt`` ({path: tensor}),
  ``.npy`` (one row per file given, in order) or ``.npz`` (``paths`` and
  ``embeddings``, one row per file given).
* ``export --model DIR --format onnx|torchscript --out FILE
  [--features-input]``: one self-contained ONNX or TorchScript file of the
  model, checked against PyTorch before it is written
  (``speechbrain_mrmha.inference.export``).
* ``verify`` and ``embed`` take ``--backend onnxruntime`` with an exported
  ``.onnx`` file as ``--model`` (the pretrained folder with the default
  ``--backend pytorch``); batching, checks and output are the same.
* ``plot attention --model DIR --wav FILE --out PNG [--reference DIR]``,
  ``plot det SCORES... --out PNG``, ``plot hist SCORES --out PNG``.
* ``demo [options]``: the synthetic-corpus demo (``speechbrain_mrmha.app.demo``).

Audio at another sample rate is resampled and stereo is mixed down. Bad
input (unreadable, too short or non-finite audio, a missing model folder, an
unknown or absent ``--device``, ...) prints ``error: <message>`` on stderr
and exits with code 2; every unreadable or too short file is listed in one
error before the model loads.

Authors
 * speechbrain-mrmha developers
"""

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

PROG = "python -m speechbrain_mrmha"
DEFAULT_THRESHOLD = 0.5
SAMPLE_RATE = 16000  # of every model here (Fbank and lengths.HOP_SAMPLES)
EMBEDDING_FORMATS = (".pt", ".npy", ".npz")


def default_threshold(model):
    """The decision threshold ``verify`` uses without ``--threshold``.

    The EER threshold of ``<model>/../verification/metrics.json`` (written by
    ``speaker_verification_cosine.py``) if present and computed on raw cosine
    scores, else 0.5.

    Arguments
    ---------
    model : str or Path
        The pretrained-model folder.

    Returns
    -------
    threshold : float
    source : str
        Where the value came from, for the user.

    Example
    -------
    >>> default_threshold("/nonexistent/pretrained")
    (0.5, 'default; no /nonexistent/verification/metrics.json')
    """
    metrics_file = Path(
        os.path.normpath(Path(model) / ".." / "verification" / "metrics.json")
    )
    if not metrics_file.is_file():
        return DEFAULT_THRESHOLD, f"default; no {metrics_file}"
    try:
        metrics = json.loads(metrics_file.read_text())
    except ValueError as error:
        raise ValueError(f"{metrics_file}: not valid JSON ({error})") from None
    if not isinstance(metrics, dict) or "EER_threshold" not in metrics:
        return (
            DEFAULT_THRESHOLD,
            f"default; {metrics_file} has no EER_threshold",
        )
    if metrics.get("score_norm") is not None:
        return DEFAULT_THRESHOLD, (
            f"default; the EER threshold of {metrics_file} is for "
            f"{metrics['score_norm']} scores, not raw cosine"
        )
    try:
        threshold = float(metrics["EER_threshold"])
    except (TypeError, ValueError):
        raise ValueError(
            f"{metrics_file}: EER_threshold {metrics['EER_threshold']!r} is not a number"
        ) from None
    return threshold, f"EER threshold from {metrics_file}"


def write_embeddings(paths, embeddings, out):
    """Write the embeddings of ``paths`` atomically; the format follows the
    extension.

    ``.pt``: {path: embedding} (``torch.load``), each path once; ``.npy``: an
    (N, dim) array, one row per entry of ``paths`` in order (repeats
    included); ``.npz``: arrays ``paths`` and ``embeddings`` of those rows.

    Arguments
    ---------
    paths : list of str
        The files as given, possibly repeated.
    embeddings : dict
        File path -> (dim,) tensor, for every path.
    out : str or Path
        Output file ending in .pt, .npy or .npz.

    Returns
    -------
    out : Path

    Example
    -------
    >>> import numpy, tempfile, torch
    >>> out = Path(tempfile.mkdtemp()) / "emb.npz"
    >>> vectors = {"a.wav": torch.ones(3), "b.wav": torch.zeros(3)}
    >>> _ = write_embeddings(["a.wav", "b.wav", "a.wav"], vectors, out)
    >>> numpy.load(out)["embeddings"].shape
    (3, 3)
    """
    import numpy
    import torch

    from speechbrain_mrmha.dataio.audio import atomic_write

    out = check_embedding_path(out)
    with atomic_write(out, "wb") as fout:
        if out.suffix == ".pt":
            torch.save(
                {
                    path: embeddings[path].clone()
                    for path in dict.fromkeys(paths)
                },
                fout,
            )
        else:
            matrix = torch.stack([embeddings[path] for path in paths]).numpy()
            if out.suffix == ".npy":
                numpy.save(fout, matrix)
            else:
                numpy.savez(
                    fout, paths=numpy.array(list(paths)), embeddings=matrix
                )
    return out


def check_embedding_path(out):
    """Raise a clear error unless ``out`` ends in .pt, .npy or .npz.

    Arguments
    ---------
    out : str or Path
        The ``--out`` file of ``embed``.

    Returns
    -------
    out : Path

    Example
    -------
    >>> check_embedding_path("emb.txt")
    Traceback (most recent call last):
    ...
    ValueError: --out emb.txt: unknown format '.txt'; use .pt, .npy or .npz
    """
    suffix = Path(out).suffix
    if suffix not in EMBEDDING_FORMATS:
        raise ValueError(
            f"--out {out}: unknown format {suffix or '(none)'!r}; "
            "use .pt, .npy or .npz"
        )
    return Path(out)


def _load_model(stack, model, device, backend="pytorch"):
    """Load a pretrained folder (read in place: nothing is written), or an
    exported ONNX file into onnxruntime."""
    if backend == "onnxruntime":
        from speechbrain_mrmha.inference.export import OnnxEncoder

        return OnnxEncoder(model)
    from speechbrain_mrmha.inference.pretrained import (
        check_pretrained,
        load_encoder,
    )

    check_pretrained(model)
    return load_encoder(model, device=device)


def _check_backend(args):
    """``--model`` is a folder for pytorch, an exported .onnx file for
    onnxruntime, which runs fp32 on the CPU; wrong pairs fail up front."""
    backend = getattr(args, "backend", "pytorch")
    model = Path(args.model)
    if backend == "onnxruntime":
        if model.is_dir():
            raise ValueError(
                f"--backend onnxruntime takes an exported .onnx file as "
                f"--model ('{PROG} export --model {model} --format onnx "
                "--out FILE'), got the folder " + str(model)
            )
        if args.device != "cpu":
            raise ValueError(
                f"--backend onnxruntime runs on the cpu here, got --device "
                f"{args.device}; use --backend pytorch for {args.device}"
            )
        if args.precision != "fp32":
            raise ValueError(
                f"--backend onnxruntime runs in fp32, got --precision "
                f"{args.precision}"
            )
    elif model.is_file():
        raise ValueError(
            f"--model {model} is a file; the pytorch backend takes a "
            "pretrained folder (for an exported .onnx file add --backend "
            "onnxruntime)"
        )


def _model_calibration(args):
    """The model's calibration: ``<folder>/calibration.json``, or the one an
    exported file recorded from its folder; None when it has none."""
    from speechbrain_mrmha.scoring.calibration import Calibration

    if getattr(args, "backend", "pytorch") != "onnxruntime":
        from speechbrain_mrmha.inference.pretrained import load_calibration

        return load_calibration(args.model)
    from speechbrain_mrmha.inference.export import read_metadata

    text = read_metadata(args.model).get("calibration")
    if text is None:
        return None
    source = f"{args.model} (recorded calibration)"
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{source}: not valid JSON ({error})") from None
    return Calibration.from_dict(data, source=source)


def _verify_threshold(args, calibration):
    """The decision rule of ``verify``: (threshold, "cosine" or "llr",
    where it came from). --threshold (cosine), else the model's
    calibration at ``--operating-point``, else the folder's default
    (``default_threshold``, or the one an exported file recorded)."""
    if args.threshold is not None:
        if args.operating_point is not None:
            raise ValueError(
                "--threshold and --operating-point: give one of them"
            )
        return args.threshold, "cosine", "--threshold"
    if calibration is not None:
        point = args.operating_point or "eer"
        if point == "bayes":
            return (
                calibration.decision_threshold(),
                "llr",
                "Bayes decision of the model's calibration at p_target "
                f"{calibration.p_target:g}",
            )
        if point not in calibration.thresholds:
            raise ValueError(
                f"the model's calibration has no {point} threshold"
            )
        entry = calibration.thresholds[point]
        name = {"eer": "EER", "min_dcf": "minDCF"}[point]
        return (
            float(entry["cosine"]),
            "cosine",
            f"{name} point of the model's calibration trials; llr "
            f"{float(entry['llr']):.4f}",
        )
    if args.operating_point is not None:
        raise ValueError(
            f"--operating-point {args.operating_point}: {args.model} has no "
            "calibration (calibration.json is written at the end of training "
            "when calibration speakers are held out)"
        )
    if getattr(args, "backend", "pytorch") != "onnxruntime":
        threshold, source = default_threshold(args.model)
        return threshold, "cosine", source
    from speechbrain_mrmha.inference.export import read_metadata

    metadata = read_metadata(args.model)
    if "threshold" not in metadata:
        return (
            DEFAULT_THRESHOLD,
            "cosine",
            f"default; {args.model} records none",
        )
    return (
        float(metadata["threshold"]),
        "cosine",
        f"{metadata.get('threshold_source', 'recorded')}; recorded in "
        f"{args.model}",
    )


def _check_device(device):
    """A bad or absent device fails before any file or model is read."""
    from speechbrain_mrmha.inference.extraction import check_device

    check_device(device)


def _bad_files(problems):
    """One error listing every file that cannot be used."""
    if problems:
        raise ValueError(
            f"{len(problems)} file{'s' * (len(problems) != 1)} cannot be "
            "used: " + "; ".join(problems)
        )


def _run_verify(args, stack):
    """``verify``: cosine score of two files and a decision."""
    import torch

    from speechbrain_mrmha.dataio.audio import load_audio
    from speechbrain_mrmha.inference.extraction import encode_signals

    _check_device(args.device)
    _check_backend(args)
    calibration = _model_calibration(args)
    threshold, scale, source = _verify_threshold(args, calibration)
    signals, problems = [], []
    for path in (args.first, args.second):
        try:
            signals.append(load_audio(path, SAMPLE_RATE))
        except ValueError as error:  # names the file
            problems.append(str(error))
    _bad_files(problems)
    encoder = _load_model(stack, args.model, args.device, args.backend)
    embeddings, _ = encode_signals(encoder, signals, args.precision)
    _bad_files(
        [
            f"{path}: the model gave a non-finite embedding (precision "
            f"{args.precision})"
            for path, row in zip((args.first, args.second), embeddings)
            if not torch.isfinite(row).all()
        ]
    )
    score = float(
        torch.nn.functional.cosine_similarity(
            embeddings[0], embeddings[1], dim=0
        )
    )
    llr = None
    if calibration is not None:
        durations = torch.tensor([[s.shape[0] / SAMPLE_RATE for s in signals]])
        llr = float(calibration.llr(torch.tensor([score]), durations)[0])
    same = (llr if scale == "llr" else score) > threshold
    print(f"score: {score:.6f} (cosine)")
    if llr is None:
        print(f"llr: none ({args.model} has no calibration)")
    else:
        print(
            f"llr: {llr:.4f} (calibrated log-likelihood ratio, nats; "
            "> 0 favours the same speaker)"
        )
    print(f"threshold: {scale} {threshold:.6f} ({source})")
    print(f"decision: {'same speaker' if same else 'different speakers'}")
    return 0


def _run_embed(args, stack):
    """``embed``: embeddings of many files, batched by length."""
    from speechbrain_mrmha.dataio.audio import audio_seconds
    from speechbrain_mrmha.inference.extraction import (
        EmbeddingCache,
        default_batch_seconds,
        embed_files,
    )

    _check_device(args.device)
    _check_backend(args)
    check_embedding_path(args.out)
    if args.batch_seconds is None:
        args.batch_seconds = default_batch_seconds(args.device)
    if args.batch_seconds <= 0 or args.max_batch_size < 1:
        raise ValueError(
            "--batch-seconds must be > 0 and --max-batch-size >= 1"
        )
    files = {path: path for path in args.files}  # each file once
    # every header up front: unreadable and too short files are listed
    # together, before the model loads
    durations, problems = {}, []
    for path in files:
        try:
            durations[path] = audio_seconds(path, SAMPLE_RATE)
        except ValueError as error:  # names the file
            problems.append(str(error))
    _bad_files(problems)
    encoder = _load_model(stack, args.model, args.device, args.backend)
    embeddings, _ = embed_files(
        encoder,
        files,
        durations,
        EmbeddingCache(None, None),
        batch_seconds=args.batch_seconds,
        max_batch_size=args.max_batch_size,
        sample_rate=SAMPLE_RATE,
        progress=False,
        precision=args.precision,
    )
    out = write_embeddings(args.files, embeddings, args.out)
    dim = next(iter(embeddings.values())).shape[0]
    print(f"{len(args.files)} embeddings of dim {dim} -> {out}")
    return 0


def _run_export(args, stack):
    """``export``: one ONNX or TorchScript file of a pretrained folder."""
    from speechbrain_mrmha.inference.export import export_model
    from speechbrain_mrmha.inference.pretrained import (
        check_pretrained,
        load_calibration,
    )

    check_pretrained(args.model)
    threshold, source = default_threshold(args.model)
    metadata = {"threshold": repr(threshold), "threshold_source": source}
    calibration = load_calibration(args.model)
    if calibration is not None:
        metadata["calibration"] = json.dumps(calibration.to_dict())
    out = export_model(
        args.model,
        args.out,
        format=args.format,
        features_input=args.features_input,
        metadata=metadata,
    )
    inputs = (
        "feats (batch, frames, n_mels) float32 + lengths (batch,) int64 "
        "frame counts"
        if args.features_input
        else "wavs (batch, samples) float32 at 16 kHz + lengths (batch,) "
        "int64 sample counts"
    )
    print(f"{args.format} graph of {args.model} -> {out}")
    print(f"inputs: {inputs}; output: embeddings (batch, emb_dim)")
    return 0


def _run_plot_attention(args, stack):
    """``plot attention``: per-head weights and entropies of one file."""
    from speechbrain_mrmha.app.plotting import (
        _matplotlib,
        plot_attention,
        utterance_attention,
    )
    from speechbrain_mrmha.dataio.audio import load_audio

    _check_device(args.device)
    _matplotlib()  # fail early with the install hint
    signal = load_audio(args.wav, SAMPLE_RATE)
    encoder = _load_model(stack, args.model, args.device)
    weights = utterance_attention(encoder, signal)
    pooling = encoder.mods.embedding_model.pooling
    temperatures = None
    if getattr(pooling, "has_temperatures", False):
        temperatures = [float(t) for t in pooling.temperatures]
    reference, names = None, (type(pooling).__name__, "")
    if args.reference is not None:
        reference_encoder = _load_model(stack, args.reference, args.device)
        reference = utterance_attention(reference_encoder, signal)
        names = (
            names[0],
            type(reference_encoder.mods.embedding_model.pooling).__name__,
        )
        if reference.shape[0] != 1:
            raise ValueError(
                f"--reference {args.reference}: expected a single-head model, "
                f"its pooling has {reference.shape[0]} heads"
            )
    seconds = signal.shape[0] / SAMPLE_RATE
    out = plot_attention(
        weights,
        args.out,
        reference=reference,
        temperatures=temperatures,
        frame_shift=seconds / weights.shape[1],
        labels=names,
        title=args.title or f"attention along time: {Path(args.wav).name}",
    )
    print(
        f"attention of {weights.shape[0]} heads over {weights.shape[1]} frames -> {out}"
    )
    return 0


def _run_plot_det(args, stack):
    """``plot det``: DET curves of score files."""
    from speechbrain_mrmha.app.plotting import plot_det

    if args.labels is not None and len(args.labels) != len(args.scores):
        raise ValueError(
            f"--labels: {len(args.labels)} labels for {len(args.scores)} score files"
        )
    print(
        f"DET curves -> {plot_det(args.scores, args.out, labels=args.labels)}"
    )
    return 0


def _run_plot_hist(args, stack):
    """``plot hist``: target / non-target score histograms."""
    from speechbrain_mrmha.app.plotting import plot_score_histograms

    out = plot_score_histograms(args.scores, args.out, bins=args.bins)
    print(f"score histograms -> {out}")
    return 0


def _model_options(parser, exported=False):
    parser.add_argument(
        "--model",
        required=True,
        metavar="DIR|FILE" if exported else "DIR",
        help="pretrained-model folder (written by train_speaker_embeddings.py)"
        + (", or with --backend onnxruntime an exported .onnx file" * exported),
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu (default) or cuda:N"
    )


def _backend_option(parser):
    parser.add_argument(
        "--backend",
        choices=["pytorch", "onnxruntime"],
        default="pytorch",
        help="pytorch (default; --model is the pretrained folder) or "
        "onnxruntime (--model is a .onnx file of the export command; cpu, "
        "fp32)",
    )


def _precision_option(parser):
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="fp32 (default), or autocast to bf16 / fp16: faster on GPUs and "
        "on CPUs with AMX (bf16), much slower on other CPUs; embeddings "
        "change slightly",
    )


def build_parser():
    """The argparse parser of every command.

    Example
    -------
    >>> build_parser().parse_args(["plot", "det", "s.txt", "--out", "d.png"]).out
    'd.png'
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="speechbrain-mrmha: speaker verification, embeddings and "
        "figures with a pretrained MRMHA model folder ('COMMAND --help' for each).",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )

    verify = commands.add_parser(
        "verify",
        help="score two audio files (cosine) and decide same / different speaker",
        description="Cosine score of the embeddings of two audio files and a decision: same "
        "speaker when the score is above the threshold.",
    )
    _model_options(verify, exported=True)
    verify.add_argument("first", metavar="a.wav")
    verify.add_argument("second", metavar="b.wav")
    verify.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold on the cosine score (default: the "
        "model's calibration at --operating-point; without one, "
        "EER_threshold of DIR/../verification/metrics.json if present, "
        "else 0.5)",
    )
    verify.add_argument(
        "--operating-point",
        choices=("eer", "min_dcf", "bayes"),
        default=None,
        help="with a calibrated model: decide at the cosine threshold of the "
        "EER (default) or minDCF point of its calibration trials, or by the "
        "Bayes rule llr > log((1 - p) / p) at its p_target",
    )
    _precision_option(verify)
    _backend_option(verify)
    verify.set_defaults(run=_run_verify)

    embed = commands.add_parser(
        "embed",
        help="embeddings of many audio files",
        description="Embed audio files in batches of similar length and save them: .pt "
        "({path: tensor}), .npy ((N, dim), one row per file given, in order) or .npz (paths, "
        "embeddings).",
    )
    _model_options(embed, exported=True)
    embed.add_argument("files", nargs="+", metavar="FILE")
    embed.add_argument(
        "--out", required=True, help="output file (.pt, .npy or .npz)"
    )
    embed.add_argument(
        "--batch-seconds",
        type=float,
        default=None,
        help="padded audio per batch, seconds (default 12 on a CPU, 240 on "
        "a GPU)",
    )
    embed.add_argument(
        "--max-batch-size",
        type=int,
        default=64,
        help="most files per batch (default 64)",
    )
    _precision_option(embed)
    _backend_option(embed)
    embed.set_defaults(run=_run_embed)

    export = commands.add_parser(
        "export",
        help="export a pretrained folder to one ONNX or TorchScript file",
        description="Export the model of a pretrained folder to one "
        "self-contained file, checked against PyTorch before it is written. "
        "Inputs: wavs (batch, samples) float32 at 16 kHz and lengths (batch,) "
        "int64 sample counts; with --features-input, Fbank features (batch, "
        "frames, n_mels) and int64 frame counts. Output: embeddings (batch, "
        "emb_dim). Batch and time are dynamic; any length is encoded in one "
        "pass (equal to PyTorch's windows of chunk_frames up to float "
        "rounding). ONNX needs onnx, onnxscript and onnxruntime: pip install "
        "speechbrain-mrmha[export].",
    )
    export.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="pretrained-model folder (written by train_speaker_embeddings.py)",
    )
    export.add_argument(
        "--format",
        choices=["onnx", "torchscript"],
        default="onnx",
        help="onnx (default; torch's dynamo exporter) or torchscript (traced)",
    )
    export.add_argument(
        "--out", required=True, metavar="FILE", help="the file to write"
    )
    export.add_argument(
        "--features-input",
        action="store_true",
        help="take Fbank features and frame counts instead of waveforms",
    )
    export.set_defaults(run=_run_export)

    plot = commands.add_parser(
        "plot",
        help="figures: attention, DET curves, score histograms",
        description="Draw a figure (matplotlib needed).",
    )
    figures = plot.add_subparsers(
        dest="figure", required=True, metavar="FIGURE"
    )
    attention = figures.add_parser(
        "attention",
        help="attention weights and entropy of each head along one file",
        description="Attention weights of each head along time for one file, each head's "
        "entropy in the legend (the paper's Fig. 2).",
    )
    _model_options(attention)
    attention.add_argument("--wav", required=True, help="audio file")
    attention.add_argument(
        "--out", required=True, help="output figure (.png, .pdf, .svg)"
    )
    attention.add_argument(
        "--reference",
        metavar="DIR",
        default=None,
        help="a single-head (self-attentive) model folder to draw below",
    )
    attention.add_argument("--title", default=None)
    attention.set_defaults(run=_run_plot_attention)
    det = figures.add_parser(
        "det",
        help="DET curves of score files with their EER",
        description="DET curves of score files (lines 'enrol test score label').",
    )
    det.add_argument("scores", nargs="+", metavar="SCORES")
    det.add_argument("--out", required=True, help="output figure")
    det.add_argument(
        "--labels", nargs="+", default=None, help="one legend name per file"
    )
    det.set_defaults(run=_run_plot_det)
    hist = figures.add_parser(
        "hist",
        help="target / non-target score histograms",
        description="Histograms of target and non-target scores of a score file.",
    )
    hist.add_argument("scores", metavar="SCORES")
    hist.add_argument("--out", required=True, help="output figure")
    hist.add_argument("--bins", type=int, default=50)
    hist.set_defaults(run=_run_plot_hist)

    commands.add_parser(
        "demo",
        add_help=False,
        help="train and compare MRMHA on a synthetic corpus ('demo --help' for options)",
    )
    return parser


def _one_line(error):
    """A multi-line message on one line ("N files ...:" then one per line)."""
    text = ""
    for line in str(error).splitlines():
        line = line.strip()
        if line:
            text += (" " if text.endswith(":") else "; ") * bool(text) + line
    return text


def main(argv=None):
    """Run a command; returns the exit code (2 on bad input).

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    code : int

    Example
    -------
    >>> main(["plot", "hist", "/nonexistent/scores.txt", "--out", "h.png"])
    2
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "demo":
        import importlib

        # lazily: the demo drives the recipe and is only needed here
        return importlib.import_module("speechbrain_mrmha.app.demo").main(
            argv[1:]
        )
    args = build_parser().parse_args(argv)
    try:
        with contextlib.ExitStack() as stack:
            return args.run(args, stack)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
