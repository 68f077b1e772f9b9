"""Paper vs modern configuration, MRMHA vs attentive statistics, and the
plain PyTorch reference loop, on the demo's synthetic corpus, over seeds:
the table of recipes/VoxCeleb1/README.md ("Results on the demo corpus").

    python bench/demo_configs.py --output results/demo_configs            # all runs, then the table
    python bench/demo_configs.py --output results/demo_configs --runs mrmha:1 reference:1
    python bench/demo_configs.py --output results/demo_configs --table    # the table of finished runs

Every run trains with the demo's sizes (ResNet widths 8-64, 128-d
embedding, 1.5 s crops, batch 16, 20 epochs, margin 0.1) on the demo corpus
(64 speakers, 16 held out for the trials), then scores its trials with
``speaker_verification_cosine.py``. Runs are independent and resumable:
a finished one (its metrics.json exists) is skipped, so several processes
with disjoint ``--runs`` share the work. About 5-8 min per run on 2 CPU
cores. The corpus and the annotation CSVs are made once and shared by all
runs (``--skip_prep=True``), so every run sees the same speakers.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from speechbrain_mrmha.app.demo import expand_overrides

ROOT = Path(__file__).resolve().parents[1]
SIZES = [
    "--channels=[8,16,32,64]",
    "--emb_dim=128",
    "--sentence_len=1.5",
    "--batch_size=16",
    "--number_of_epochs=20",
    "--margin=0.1",
    "--num_workers=0",
    "--device=cpu",
]
# the options mrmha_modern.yaml turns on, read from the recipe's yamls
# (the demo's modern_options), for another pooling
MODERN = "mrmha_modern.yaml"
CONFIGS = {
    # name: (label, yaml or None for the reference loop, extra overrides)
    "reference": (
        "plain PyTorch loop, MRMHA K=6, RAdam constant 2e-3",
        None,
        [],
    ),
    "mrmha": ("paper: MRMHA K=6", "mrmha.yaml", ["--num_heads=6"]),
    "attentive_statistics": (
        "paper: attentive statistics",
        "attentive_statistics.yaml",
        [],
    ),
    "mrmha_modern": ("modern: MRMHA K=6", "mrmha_modern.yaml", []),
    "attentive_statistics_modern": (
        "modern: attentive statistics",
        "attentive_statistics.yaml",
        [MODERN],
    ),
}
SEEDS = (1, 2, 3)


def parse_args(argv):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="results/demo_configs")
    parser.add_argument(
        "--runs",
        nargs="*",
        help="NAME:SEED runs to do (default: every config x seeds 1, 2, 3)",
    )
    parser.add_argument(
        "--recipe",
        default=str(ROOT / "recipes" / "VoxCeleb1"),
        help="recipe folder (a frozen copy keeps a long grid on one version)",
    )
    parser.add_argument(
        "--table", action="store_true", help="only print the table"
    )
    return parser.parse_args(argv)


def data(output, recipe):
    """The demo corpus and its annotation CSVs, made once."""
    from speechbrain_mrmha.app.synthetic import generate_corpus

    corpus = generate_corpus(
        output / "corpus",
        speakers=64,
        videos=4,
        utterances=6,
        test_speakers=16,
        min_duration=2.0,
        max_duration=4.0,
        seed=1,
        num_workers=2,
    ).root
    prepared = output / "prepared"
    if not (prepared / "train.csv").is_file():
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from voxceleb1_prepare import prepare_voxceleb1; "
                "prepare_voxceleb1(data_folder=sys.argv[1], save_folder=sys.argv[2], "
                "verification_file=sys.argv[1] + '/meta/veri_test2.txt', seed=1986)",
                corpus,
                prepared,
            ],
            cwd=recipe,
            check=True,
        )
    return corpus, prepared


def run_one(name, seed, output, recipe):
    """Train and score one (config, seed); returns its metrics.json path."""
    label, yaml_file, extra = CONFIGS[name]
    extra = expand_overrides(extra, Path(recipe) / "hparams")
    corpus, prepared = data(output, recipe)
    folder = output / f"{name}_seed{seed}"
    metrics = (
        folder / "metrics.json"
        if yaml_file is None
        else folder / "verification" / "metrics.json"
    )
    if metrics.is_file():
        return metrics
    log = open(output / f"{name}_seed{seed}.log", "a")
    if yaml_file is None:
        command = [
            sys.executable,
            ROOT / "bench" / "reference_loop.py",
            f"--data-folder={corpus}",
            f"--train-annotation={prepared / 'train.csv'}",
            f"--output={folder}",
            f"--config={Path(recipe) / 'hparams' / 'mrmha.yaml'}",
            f"--seed={seed}",
        ]
        subprocess.run(
            list(map(str, command)), stdout=log, stderr=log, check=True
        )
        return metrics
    train = [
        sys.executable,
        Path(recipe) / "train_speaker_embeddings.py",
        Path(recipe) / "hparams" / yaml_file,
        f"--data_folder={corpus}",
        f"--output_folder={folder}",
        "--skip_prep=True",
        f"--train_annotation={prepared / 'train.csv'}",
        f"--valid_annotation={prepared / 'valid.csv'}",
        f"--seed={seed}",
        *SIZES,
        *extra,
    ]
    score = [
        sys.executable,
        Path(recipe) / "speaker_verification_cosine.py",
        Path(recipe) / "hparams" / "verification.yaml",
        f"--data_folder={corpus}",
        f"--pretrained_path={folder / 'pretrained'}",
        f"--output_folder={folder / 'verification'}",
        "--device=cpu",
    ]
    for command in (train, score):
        subprocess.run(
            list(map(str, command)),
            stdout=log,
            stderr=log,
            check=True,
            cwd=recipe,
        )
    return metrics


def spread(values, digits):
    """mean +- std (min-max) of a list of numbers."""
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (one seed)"
    std = statistics.stdev(values)
    return (
        f"{mean:.{digits}f} +- {std:.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def table(output):
    """Markdown table of the finished runs, one row per config."""
    lines = [
        "| configuration | seeds | EER % mean +- std (min-max) | minDCF mean +- std (min-max) | per seed EER |",
        "|---|---|---|---|---|",
    ]
    for name, (label, yaml_file, _) in CONFIGS.items():
        found = []
        for seed in SEEDS:
            folder = output / f"{name}_seed{seed}"
            path = (
                folder / "metrics.json"
                if yaml_file is None
                else folder / "verification" / "metrics.json"
            )
            if path.is_file():
                found.append((seed, json.loads(path.read_text())))
        if not found:
            continue
        eers = [m["EER"] for _, m in found]
        dcfs = [m["minDCF"] for _, m in found]
        per_seed = ", ".join(f"{s}: {m['EER']:.2f}" for s, m in found)
        lines.append(
            f"| {label} | {len(found)} | {spread(eers, 2)} | {spread(dcfs, 3)} | {per_seed} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Run the requested runs (all by default), then print the table."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    output = Path(args.output).resolve()
    args.recipe = str(Path(args.recipe).resolve())
    output.mkdir(parents=True, exist_ok=True)
    if not args.table:
        runs = args.runs or [f"{n}:{s}" for s in SEEDS for n in CONFIGS]
        for run in runs:
            name, _, seed = run.partition(":")
            print(f"run {name} seed {seed} ...", flush=True)
            run_one(name, int(seed), output, args.recipe)
    print(table(output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
