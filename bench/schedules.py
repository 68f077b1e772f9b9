"""Which learning-rate schedule to make the default: the recipe's own
commands on two corpora of different nature, at a short budget (about 150
optimizer steps, 3 seeds) and a long one (10x, 1 seed), for every
candidate schedule. Prints mean, spread and range of EER and minDCF per
cell, and writes them as JSON and a Markdown table.

Corpora (built if missing; both in the VoxCeleb1 layout):

* ``synthetic``: the demo's corpus (64 speakers, 16 held out, 4 videos x 6
  utterances of 2-4 s), ``python -m speechbrain_mrmha.app.synthetic``;
* ``tts``: espeak-ng and festival voices (48 speakers, 8 held out, 3 videos
  x 8 utterances), ``bench/tts_corpus.py`` (needs ``apt-get install -y
  espeak-ng festival``).

Candidates (``CANDIDATES``, from ``SCHEDULES``): ``warm_exp``, the
warm-up of one epoch + exponential decay to lr_final that was the default;
``constant``, a constant rate; ``hold_decay_20``, ``WarmHoldDecay`` (5 %
warm-up, the peak held, a cosine decay over the last 20 %), the default
since this measurement; and ``reference_loop``, bench/reference_loop.py's
plain PyTorch loop (RAdam at a constant 2e-3) on the ``constant`` cell's
training list. Every run: a tiny ResNet (``--channels=[4,8,16,32]``),
``--batch_size=32 --sentence_len=2.0``, MRMHA K=4 (``mrmha.yaml``), CPU,
one thread per run (``--threads``).

``--grid ablation`` trains ``mrmha_modern.yaml`` with the default schedule
and each modern option removed on its own (``ABLATIONS``: AAM, margin
warm-up, speed perturbation, masks), 2 seeds, short budget.

Run (about 3 min a short run and 25 min a long one per core)::

    python bench/schedules.py --budget short --jobs 2          # 3 seeds
    python bench/schedules.py --budget long --jobs 2           # 1 seed
    python bench/schedules.py --budget short --seeds 1 --schedule reference_loop
    python bench/schedules.py --grid ablation --budget short --seeds 2 --jobs 2

A finished cell is reused (its metrics.json), so an interrupted run goes on
where it stopped, and the last command of a grid prints its whole table.

Authors
 * speechbrain-mrmha developers
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "VoxCeleb1"
DATA = ROOT / "bench" / "_data"
BATCH = 32
CHANNELS = "[4,8,16,32]"
SHORT_STEPS = 150
LONG_FACTOR = 10
WARMUP_FRACTION = 0.05
CORPORA = {
    # name: (speakers, test speakers, files per speaker)
    "synthetic": (64, 16, 24),
    "tts": (48, 8, 24),
}
HOLD_DECAY = """lr_schedule: !name:speechbrain_mrmha.training.schedules.WarmHoldDecay
    lr: !ref <lr>
    lr_final: !ref <lr_final>
    decay_fraction: {decay}
"""
WARM_EXP = """lr_schedule: !name:speechbrain.nnet.schedulers.WarmAndExpDecayLRSchedule
    lr: !ref <lr>
    decay_factor: !ref <lr_final> / <lr>
"""
SCHEDULES = {
    # name: (description, yaml block replacing lr_schedule or None,
    #        warm-up as a fraction of the run or None for the yaml's own)
    "warm_exp": (
        "warm-up 1 epoch, exponential decay to lr_final (the old default)",
        WARM_EXP,
        None,
    ),
    "constant": ("constant lr, no warm-up", HOLD_DECAY.format(decay=0.0), 0.0),
    "hold_decay_20": (
        "warm-up 5 %, hold, cosine decay over the last 20 %",
        HOLD_DECAY.format(decay=0.2),
        WARMUP_FRACTION,
    ),
    "warm_cosine": (
        "warm-up 5 %, cosine decay over the whole run",
        HOLD_DECAY.format(decay=1.0),
        WARMUP_FRACTION,
    ),
}


CANDIDATES = ["warm_exp", "constant", "hold_decay_20"]
DEFAULT = "hold_decay_20"  # the recipe's default since the measurement


def corpus_folder(name):
    """The corpus, built when missing."""
    folder = DATA / name
    speakers, test, per_speaker = CORPORA[name]
    if name == "synthetic":
        command = [
            sys.executable,
            "-m",
            "speechbrain_mrmha.app.synthetic",
            str(folder),
            f"--speakers={speakers}",
            f"--test-speakers={test}",
            "--videos=4",
            f"--utterances={per_speaker // 4}",
            "--min-duration=2.0",
            "--max-duration=4.0",
            "--seed=1",
        ]
    else:
        command = [
            sys.executable,
            str(ROOT / "bench" / "tts_corpus.py"),
            str(folder),
            f"--speakers={speakers}",
            f"--test-speakers={test}",
            "--videos=3",
            f"--utterances={per_speaker // 3}",
        ]
    subprocess.run(command, check=True, cwd=ROOT)
    return folder


def epochs_for(name, steps):
    """Epochs that give about ``steps`` optimizer steps: the training
    speakers minus the calibration ones (at least 5), minus 2 validation
    utterances each, in batches of BATCH (drop_last)."""
    speakers, test, per_speaker = CORPORA[name]
    train = speakers - test - max(5, round(0.02 * (speakers - test)))
    per_epoch = train * (per_speaker - 2) // BATCH
    return max(1, round(steps / per_epoch)), per_epoch


ABLATIONS = {
    # name: overrides of mrmha_modern.yaml removing one modern option
    "modern": [],
    "no_aam": ["--loss=cosams"],
    "no_margin_warmup": [
        "--margin_warmup_start_fraction=0",
        "--margin_warmup_end_fraction=0",
    ],
    "no_speed_perturb": ["--speed_perturb=False"],
    "no_masks": ["--spec_augment=False"],
    # both options that hurt in the 2-seed ablation, off together
    "no_masks_no_speed_perturb": [
        "--spec_augment=False",
        "--speed_perturb=False",
    ],
}


def variant_yaml(schedule, folder, config="mrmha.yaml"):
    """``config`` with the schedule's lr_schedule entry."""
    text = (RECIPE / "hparams" / config).read_text()
    block = SCHEDULES[schedule][1]
    if block is not None:
        text, count = re.subn(
            r"^lr_schedule: .*\n(?:    .*\n)*", block, text, flags=re.M
        )
        assert count == 1, f"{config} has no lr_schedule entry"
    path = folder / "hparams.yaml"
    path.write_text(text)
    return path


def run(command, log, threads):
    """One subprocess with ``threads`` torch threads, output to ``log``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["MKL_NUM_THREADS"] = str(threads)
    subprocess.run(
        command,
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=RECIPE,
        env=env,
    )


_LOCKS = {}
_GUARD = threading.Lock()


def run_cell(corpus, schedule, budget, seed, output, threads=1, grid=None):
    """One cell, never trained twice at once (see ``_run_cell``)."""
    with _GUARD:
        lock = _LOCKS.setdefault(
            (corpus, schedule, budget, seed, grid), threading.Lock()
        )
    with lock:
        return _run_cell(corpus, schedule, budget, seed, output, threads, grid)


def _run_cell(corpus, schedule, budget, seed, output, threads, grid):
    """Train and score one cell; returns its metrics (reused if done).

    ``schedule`` is a SCHEDULES name, ``reference_loop`` (the plain PyTorch
    loop of bench/reference_loop.py on the ``constant`` cell's training
    list), or with ``grid="ablation"`` an ABLATIONS name trained from
    mrmha_modern.yaml with the DEFAULT schedule.
    """
    name = schedule if grid is None else f"ablation/{schedule}"
    folder = output / budget / corpus / name / f"seed{seed}"
    metrics = folder / "verification" / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())
    steps = SHORT_STEPS * (LONG_FACTOR if budget == "long" else 1)
    epochs, _ = epochs_for(corpus, steps)
    data = corpus_folder(corpus)
    if schedule == "reference_loop":
        base = output / budget / corpus / "constant" / f"seed{seed}"
        run_cell(corpus, "constant", budget, seed, output, threads)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "bench_log.txt", "a") as log:
            run(
                [
                    sys.executable,
                    str(ROOT / "bench" / "reference_loop.py"),
                    f"--data-folder={data}",
                    f"--train-annotation={base / 'train/prepared/train.csv'}",
                    f"--output={folder / 'verification'}",
                    f"--epochs={epochs}",
                    f"--batch-size={BATCH}",
                    "--sentence-len=2.0",
                    f"--channels={CHANNELS}",
                    "--emb-dim=512",
                    "--margin=0.2",
                    f"--seed={seed}",
                ],
                log,
                threads,
            )
        return json.loads(metrics.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    if grid == "ablation":
        config, extra = "mrmha_modern.yaml", list(ABLATIONS[schedule])
        schedule = DEFAULT
    else:
        config, extra = "mrmha.yaml", []
    warmup = SCHEDULES[schedule][2]
    if warmup is None:  # the old default: one epoch
        warmup = 1.0 / epochs
    extra.append(f"--lr_warmup_fraction={warmup}")
    common = [f"--data_folder={data}", "--device=cpu"]
    with open(folder / "bench_log.txt", "a") as log:
        run(
            [
                sys.executable,
                str(RECIPE / "train_speaker_embeddings.py"),
                str(variant_yaml(schedule, folder, config)),
                *common,
                f"--output_folder={folder / 'train'}",
                f"--channels={CHANNELS}",
                f"--batch_size={BATCH}",
                "--sentence_len=2.0",
                f"--number_of_epochs={epochs}",
                "--num_workers=0",
                f"--seed={seed}",
                *extra,
            ],
            log,
            threads,
        )
        run(
            [
                sys.executable,
                str(RECIPE / "speaker_verification_cosine.py"),
                str(RECIPE / "hparams" / "verification.yaml"),
                *common,
                f"--pretrained_path={folder / 'train' / 'pretrained'}",
                f"--output_folder={folder / 'verification'}",
            ],
            log,
            threads,
        )
    return json.loads(metrics.read_text())


def summary(values):
    """mean, sample std (0 for one value), min and max."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), std, min(values), max(values)


def main(argv=None):
    """Command line of the schedule benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="results/schedules")
    parser.add_argument("--budget", choices=["short", "long", "both"])
    parser.add_argument("--corpus", choices=sorted(CORPORA), action="append")
    parser.add_argument(
        "--schedule",
        choices=[*SCHEDULES, "reference_loop", *ABLATIONS],
        action="append",
        help="default: CANDIDATES and reference_loop, or all ABLATIONS",
    )
    parser.add_argument("--grid", choices=["schedules", "ablation"])
    parser.add_argument("--seeds", type=int, default=3, help="short budget")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="per run")
    args = parser.parse_args(argv)
    output = Path(args.output).resolve()
    budgets = (
        ["short", "long"] if args.budget in (None, "both") else [args.budget]
    )
    grid = None if args.grid in (None, "schedules") else args.grid
    default = [*CANDIDATES, "reference_loop"] if grid is None else ABLATIONS
    cells = [
        (corpus, schedule, budget, seed)
        for budget in budgets
        for corpus in args.corpus or sorted(CORPORA)
        for schedule in args.schedule or list(default)
        for seed in range(1, (args.seeds if budget == "short" else 1) + 1)
    ]
    # the reference loop reads the constant cell's list: after the others
    cells.sort(key=lambda c: c[1] == "reference_loop")
    for corpus in {c[0] for c in cells}:
        corpus_folder(corpus)  # once, before parallel runs
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(
            pool.map(
                lambda c: (c, run_cell(*c, output, args.threads, grid)), cells
            )
        )
    table = {}
    for (corpus, schedule, budget, seed), metrics in done:
        cell = table.setdefault(f"{budget}/{corpus}/{schedule}", {})
        cell.setdefault("EER", []).append(metrics["EER"])
        cell.setdefault("minDCF", []).append(metrics["minDCF"])
        cell.setdefault("seeds", []).append(seed)
    lines = [
        "| budget | corpus | schedule | steps | EER % mean ± std (min-max) "
        "| minDCF mean ± std |",
        "|---|---|---|---|---|---|",
    ]
    for key, cell in table.items():
        budget, corpus, schedule = key.split("/")
        schedule = schedule if grid is None else f"{schedule} (ablation)"
        steps = SHORT_STEPS * (LONG_FACTOR if budget == "long" else 1)
        epochs, per_epoch = epochs_for(corpus, steps)
        eer = summary(cell["EER"])
        dcf = summary(cell["minDCF"])
        lines.append(
            f"| {budget} | {corpus} | {schedule} | {epochs * per_epoch} | "
            f"{eer[0]:.2f} ± {eer[1]:.2f} ({eer[2]:.2f}-{eer[3]:.2f}) | "
            f"{dcf[0]:.3f} ± {dcf[1]:.3f} |"
        )
        cell["summary"] = {"EER": eer, "minDCF": dcf}
    print("\n".join(lines))
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps(table, indent=1))
    (output / "summary.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
