"""The demo: on a synthetic VoxCeleb1-layout corpus, train MRMHA (K = 6) and
the attentive-statistics baseline with a small ResNet on the CPU, in one
training configuration of the recipe (``--config``: the paper's, or the
modern one of hparams/mrmha_modern.yaml), score the trials, draw the
figures and print a comparison table.

Run from a clone of the repository (it drives the VoxCeleb1 recipe, which
is not installed with the package):
    python -m speechbrain_mrmha demo --output demo_output
A rerun reuses the corpus, finished trainings and cached embeddings.

Authors
 * speechbrain-mrmha developers
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb1"
MODERN = "mrmha_modern.yaml"  # its training options, on another pooling
CONFIGS = {
    # config: (description, ((folder, label, yaml, overrides), ...)); an
    # overrides entry MODERN stands for modern_options()
    "paper": (
        "the paper's training (CosAMS, no augmentation), "
        "hparams/mrmha.yaml --num_heads=6 vs hparams/attentive_statistics.yaml",
        (
            ("mrmha", "MRMHA K=6", "mrmha.yaml", ("--num_heads=6",)),
            (
                "attentive_statistics",
                "attentive statistics",
                "attentive_statistics.yaml",
                (),
            ),
        ),
    ),
    "modern": (
        "the modern training (AAM with margin warm-up; speed perturbation "
        "and masks are off by measurement), hparams/mrmha_modern.yaml vs "
        "hparams/attentive_statistics.yaml with the same options",
        (
            ("mrmha_modern", "MRMHA K=6", "mrmha_modern.yaml", ()),
            (
                "attentive_statistics_modern",
                "attentive statistics",
                "attentive_statistics.yaml",
                (MODERN,),
            ),
        ),
    ),
}
DEFAULT_CONFIG = "paper"  # measured best on the demo corpus (recipe README)


def parse_args(argv):
    """Command-line options of the demo."""
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_mrmha demo",
        description="Train MRMHA and attentive statistics pooling on a synthetic "
        "corpus, score its trials and draw figures (about 15 minutes on 2 CPU cores).",
    )
    parser.add_argument("--output", default="demo_output", help="output folder")
    parser.add_argument(
        "--speakers", type=int, default=64, help="speakers in the corpus"
    )
    parser.add_argument(
        "--test-speakers", type=int, default=16, help="held-out speakers"
    )
    parser.add_argument(
        "--videos", type=int, default=4, help="videos per speaker"
    )
    parser.add_argument(
        "--utterances", type=int, default=6, help="utterances per video"
    )
    parser.add_argument(
        "--epochs", type=int, default=20, help="training epochs per model"
    )
    parser.add_argument(
        "--channels", default="[8,16,32,64]", help="ResNet stage widths"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--sentence-len", type=float, default=1.5, help="crop, seconds"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--config",
        choices=sorted(CONFIGS),
        default=DEFAULT_CONFIG,
        help=f"training configuration of both models (default {DEFAULT_CONFIG})",
    )
    return parser.parse_args(argv)


def modern_options(hparams_folder=RECIPE / "hparams"):
    """The training options of hparams/mrmha_modern.yaml as overrides for
    another configuration: what it sets other than hparams/mrmha.yaml,
    read from the two files, less what changes the model (heads, class
    count). The yaml is the one list of the modern options.

    Arguments
    ---------
    hparams_folder : Path
        The recipe's hparams folder.

    Returns
    -------
    overrides : tuple of str
        ``--key=value`` arguments.

    Example
    -------
    >>> "--loss=aam" in modern_options()  # needs the repository's recipe
    True
    """
    from speechbrain_mrmha.training.config import training_options

    options = training_options(
        Path(hparams_folder) / "mrmha.yaml",
        Path(hparams_folder) / MODERN,
        {"data_folder": "data_folder"},  # the placeholder; no file is read
    )
    return tuple(f"--{key}={value}" for key, value in options.items())


def expand_overrides(extra, hparams_folder=RECIPE / "hparams"):
    """The overrides of a model of ``CONFIGS``, with ``MODERN`` replaced
    by ``modern_options``.

    Arguments
    ---------
    extra : tuple of str
        Overrides, possibly with ``MODERN``.
    hparams_folder : Path
        The recipe's hparams folder.

    Returns
    -------
    overrides : list of str

    Example
    -------
    >>> expand_overrides(("--num_heads=6",))
    ['--num_heads=6']
    >>> "--loss=aam" in expand_overrides((MODERN,))
    True
    """
    return [
        *(modern_options(hparams_folder) if MODERN in extra else ()),
        *(option for option in extra if option != MODERN),
    ]


def run(command, log):
    """Run one step, its output shown and kept in ``log``; stop on failure."""
    print("$ " + " ".join(str(part) for part in command), flush=True)
    with open(log, "a") as fout:
        process = subprocess.Popen(
            [str(part) for part in command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        for line in process.stdout:
            sys.stdout.write(line)
            fout.write(line)
        if process.wait() != 0:
            raise SystemExit(
                f"demo: step failed (exit {process.returncode}); see {log}"
            )


def train_and_score(name, yaml_file, extra, corpus, args, output):
    """Train one configuration with the recipe and score the corpus trials."""
    folder = output / name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "demo_log.txt"
    run(
        [
            sys.executable,
            RECIPE / "train_speaker_embeddings.py",
            RECIPE / "hparams" / yaml_file,
            f"--data_folder={corpus}",
            f"--output_folder={folder}",
            f"--channels={args.channels}",
            f"--number_of_epochs={args.epochs}",
            f"--batch_size={args.batch_size}",
            f"--sentence_len={args.sentence_len}",
            "--num_workers=0",
            "--device=cpu",
            f"--seed={args.seed}",
            "--emb_dim=128",
            "--margin=0.1",
            *expand_overrides(extra),
        ],
        log,
    )
    run(
        [
            sys.executable,
            RECIPE / "speaker_verification_cosine.py",
            RECIPE / "hparams" / "verification.yaml",
            f"--data_folder={corpus}",
            f"--pretrained_path={folder / 'pretrained'}",
            f"--output_folder={folder / 'verification'}",
            "--device=cpu",
        ],
        log,
    )
    return json.loads((folder / "verification" / "metrics.json").read_text())


def figures(corpus, output, models):
    """Attention (MRMHA vs single head), DET curves, score histograms."""
    from speechbrain_mrmha.app.plotting import (
        plot_attention,
        plot_det,
        plot_score_histograms,
    )
    from speechbrain_mrmha.dataio.trials import read_trials
    from speechbrain_mrmha.inference.model import SpeakerModel

    figure_folder = output / "figures"
    figure_folder.mkdir(exist_ok=True)
    first = read_trials(Path(corpus) / "meta" / "veri_test2.txt")[0].enrol
    wav = Path(corpus) / "wav" / first
    (mrmha, *_), (baseline, *_) = models
    attention = {
        name: SpeakerModel(output / name / "pretrained").attention(wav).weights
        for name in (mrmha, baseline)
    }
    paths = [
        plot_attention(
            attention[mrmha],
            figure_folder / "attention.png",
            reference=attention[baseline],
            title=f"attention along time: {first}",
        ),
        plot_det(
            [
                output / name / "verification" / "scores.txt"
                for name, *_ in models
            ],
            figure_folder / "det.png",
            labels=[label for _, label, *_ in models],
        ),
        plot_score_histograms(
            output / mrmha / "verification" / "scores.txt",
            figure_folder / "scores_mrmha.png",
        ),
    ]
    return paths


def recipe_missing():
    """The one-line error when the recipe is not next to the package (an
    installed wheel), else None.

    Returns
    -------
    message : str or None

    Example
    -------
    >>> recipe_missing() is None or recipe_missing().startswith("demo: needs a clone")
    True
    """
    if (RECIPE / "train_speaker_embeddings.py").is_file():
        return None
    return (
        "demo: needs a clone of the speechbrain-mrmha repository (the VoxCeleb1 recipe "
        f"is not installed with the package); no recipe at {RECIPE}: clone the "
        "repository, pip install -e it and run the demo from there"
    )


def main(argv=None):
    """Run the whole demo.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    code : int
        0, or 2 (one line on stderr) when the recipe is not there.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    problem = recipe_missing()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    from speechbrain_mrmha.app.synthetic import generate_corpus

    start = time.monotonic()
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] synthetic corpus ({args.speakers} speakers) ...", flush=True)
    corpus = generate_corpus(
        output / "corpus",
        speakers=args.speakers,
        videos=args.videos,
        utterances=args.utterances,
        test_speakers=args.test_speakers,
        min_duration=2.0,
        max_duration=4.0,
        seed=args.seed,
        num_workers=2,
    ).root
    description, models = CONFIGS[args.config]
    results = {}
    for step, (name, label, yaml_file, extra) in enumerate(models, start=2):
        print(f"[{step}/4] train + score: {label}", flush=True)
        results[name] = train_and_score(
            name, yaml_file, extra, corpus, args, output
        )
    print("[4/4] figures ...", flush=True)
    paths = figures(corpus, output, models)

    first = models[0][0]
    print(
        f"\nResults on the synthetic corpus ({args.test_speakers} held-out speakers, "
        f"{results[first]['n_trials']} trials; synthetic data, not VoxCeleb1).\n"
        f"Compared: MRMHA K=6 vs attentive statistics pooling, both with "
        f"{description} ({args.epochs} epochs, seed {args.seed}; one seed: "
        "differences of a few EER points are within run-to-run noise, see "
        "the recipe README for 3 seeds).\n"
    )
    print(
        "| pooling | EER % | minDCF (p=0.01) | actDCF (p=0.01) | Cllr "
        "calibrated / raw cosine | mean attention entropy per head (nats) |"
    )
    print("|---|---|---|---|---|---|")
    for name, label, *_ in models:
        metrics = results[name]
        entropy = (
            ", ".join(f"{e:.2f}" for e in metrics.get("entropy_per_head", []))
            or "-"
        )
        print(
            f"| {label} | {metrics['EER']:.2f} | {metrics['minDCF']:.3f} | "
            f"{metrics['actDCF']:.3f} | {metrics['Cllr']:.3f} / "
            f"{metrics['Cllr_raw_cosine']:.3f} | {entropy} |"
        )
    print(
        "\nactDCF and Cllr judge calibrated log-likelihood ratios; the "
        "calibration is fitted at the end of training on held-out training "
        "speakers, never on these trials. Calibration used:"
    )
    for name, label, *_ in models:
        print(f"  {label}: {results[name]['calibration']}")
    print("\nPretrained folders:")
    for name, *_ in models:
        print(f"  {output / name / 'pretrained'}")
    print("Figures:")
    for path in paths:
        print(f"  {path}")
    print("\nLoad one from Python:\n")
    print("  from speechbrain.inference.speaker import EncoderClassifier")
    print(
        f"  encoder = EncoderClassifier.from_hparams(source='{output / first / 'pretrained'}', savedir='/tmp/mrmha')"
    )
    print(
        "  embedding = encoder.encode_batch(encoder.load_audio('some.wav').unsqueeze(0))"
    )
    print(f"\nDemo finished in {(time.monotonic() - start) / 60:.1f} minutes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
