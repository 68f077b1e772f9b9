"""Command line of speechbrain_mrmha: ``python -m speechbrain_mrmha <command>``
(``speechbrain_mrmha/__main__.py`` calls ``main`` here).

Commands (``--help`` on each):

* ``verify --model DIR a.wav b.wav [--threshold T | --operating-point
  eer|min_dcf|bayes]``: cosine score of two files, its calibrated
  log-likelihood ratio (when the folder holds ``calibration.json``) and a
  same / different speaker decision by the model's own threshold
  (``SpeakerModel.verify``).
* ``embed --model DIR FILES... --out FILE``: embeddings of many files,
  batched by length (``SpeakerModel.embed_files``); ``.pt`` ({path: tensor}),
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

Loading a model folder runs its ``hyperparams.yaml``: every command that
loads one (``verify``, ``embed``, ``export``, ``plot attention``) refuses a
folder whose yaml calls anything outside the allow-list
(``speechbrain_mrmha.inference.trust``), naming the tag and its line,
before SpeechBrain reads it; ``--trust-folder`` loads it anyway, for a
folder whose author you trust.

The commands parse and print: the work is the model object's
(``speechbrain_mrmha.inference.model.SpeakerModel``). Audio at another
sample rate is resampled and stereo is mixed down. Bad
input (unreadable, too short or non-finite audio, a missing model folder, an
unknown or absent ``--device``, ...) prints ``error: <message>`` on stderr
and exits with code 2; every unreadable or too short file is listed in one
error before the model loads.

Authors
 * speechbrain-mrmha developers
"""

import argparse
import sys
from pathlib import Path

PROG = "python -m speechbrain_mrmha"
SAMPLE_RATE = 16000  # of every model here (Fbank and lengths.HOP_SAMPLES)
EMBEDDING_FORMATS = (".pt", ".npy", ".npz")


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

    from speechbrain_mrmha.dataio.files import atomic_write

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


def _model(args, model=None):
    """The model object of ``--model`` (or ``model``) with the command's
    ``--device``, ``--precision``, ``--backend`` and ``--trust-folder``
    (loaded on first use)."""
    from speechbrain_mrmha.inference.model import SpeakerModel

    return SpeakerModel(
        args.model if model is None else model,
        device=getattr(args, "device", "cpu"),
        precision=getattr(args, "precision", "fp32"),
        backend=getattr(args, "backend", "pytorch"),
        trust_folder=args.trust_folder,
    )


def _run_verify(args):
    """``verify``: cosine score of two files and a decision."""
    result = _model(args).verify(
        args.first,
        args.second,
        operating_point=args.operating_point,
        threshold=args.threshold,
    )
    print(f"score: {result.cosine:.6f} (cosine)")
    if result.llr is None:
        print(f"llr: none ({args.model} has no calibration)")
    else:
        print(
            f"llr: {result.llr:.4f} (calibrated log-likelihood ratio, nats; "
            "> 0 favours the same speaker)"
        )
    print(f"threshold: {result.scale} {result.threshold:.6f} ({result.source})")
    print(
        f"decision: {'same speaker' if result.decision else 'different speakers'}"
    )
    return 0


def _run_embed(args):
    """``embed``: embeddings of many files, batched by length."""
    model = _model(args)  # device and model errors first
    check_embedding_path(args.out)
    if (
        args.batch_seconds is not None and args.batch_seconds <= 0
    ) or args.max_batch_size < 1:
        raise ValueError(
            "--batch-seconds must be > 0 and --max-batch-size >= 1"
        )
    embedded = model.embed_files(
        args.files,
        batch_seconds=args.batch_seconds,
        max_batch_size=args.max_batch_size,
    )
    out = write_embeddings(args.files, embedded.embeddings, args.out)
    dim = next(iter(embedded.embeddings.values())).shape[0]
    print(f"{len(args.files)} embeddings of dim {dim} -> {out}")
    return 0


def _run_export(args):
    """``export``: one ONNX or TorchScript file of a pretrained folder."""
    out = _model(args).export(
        args.out, format=args.format, features_input=args.features_input
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


def _run_plot_attention(args):
    """``plot attention``: per-head weights and entropies of one file."""
    from speechbrain_mrmha.app.plotting import _matplotlib, plot_attention

    model = _model(args)
    _matplotlib()  # fail early with the install hint
    attention = model.attention(args.wav)
    reference, names = None, (attention.pooling, "")
    if args.reference is not None:
        other = _model(args, args.reference).attention(args.wav)
        if other.weights.shape[0] != 1:
            raise ValueError(
                f"--reference {args.reference}: expected a single-head model, "
                f"its pooling has {other.weights.shape[0]} heads"
            )
        reference, names = other.weights, (attention.pooling, other.pooling)
    weights = attention.weights
    out = plot_attention(
        weights,
        args.out,
        reference=reference,
        temperatures=attention.temperatures,
        frame_shift=attention.seconds / weights.shape[1],
        labels=names,
        title=args.title or f"attention along time: {Path(args.wav).name}",
    )
    print(
        f"attention of {weights.shape[0]} heads over {weights.shape[1]} frames -> {out}"
    )
    return 0


def _run_plot_det(args):
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


def _run_plot_hist(args):
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
    _trust_option(parser)


def _trust_option(parser):
    parser.add_argument(
        "--trust-folder",
        action="store_true",
        help="load a model folder whose hyperparams.yaml calls objects "
        "outside the allow-list (it can run any code on this machine): "
        "only for folders whose author you trust",
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
        help="decision threshold on the cosine score, in [-1, 1] (default: the "
        "model's calibration at --operating-point; without one, the EER "
        "threshold its folder records in verification.json, else 0.5)",
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
    _trust_option(export)
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
        return args.run(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
