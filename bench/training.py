"""Benchmark: training throughput on CPU (forward + CosAMS loss + backward +
RAdam step) and whether the recipe's data pipeline keeps up.

Models: ResNet-34 + MRMHA (K = 6) at tiny width (8, 16, 32, 64) and paper
width (64, 128, 256, 512), batch ``--batch`` x ``--seconds`` s crops.
Measured in the same run:

* steps per second on random features, per width; bf16 autocast at tiny
  width (and at paper width, alone and with channels_last, with
  ``--paper-bf16``), channels_last at paper width (peer: the float32
  contiguous step of the same width);
* the real pipeline: a small synthetic corpus (``generate_corpus``), prepared
  by the recipe's ``prepare_voxceleb1`` and loaded by its ``dataio_prep``
  (``crop`` reads random wav crops) through SpeechBrain's ``make_dataloader``
  with 0 and 2 workers, then Fbank + InputNormalization as in
  ``compute_forward``; its time per batch against the paper-width step;
* a paper-width step fed by that pipeline (peer: random features);
* optionally (``--compile``) ``torch.compile`` of the tiny model in a
  subprocess under a time limit.

Usage: python bench/training.py [--batch 8] [--seconds 2] [--paper-steps 1]
    [--tiny-steps 5] [--threads 2] [--paper-bf16] [--compile] [--compile-timeout 240]

Every timing is the mean over the given steps after one warm-up step.
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from speechbrain_mrmha.layers.margins import CosAMSLoss, CosineClassifier
from speechbrain_mrmha.layers.pooling import build_pooling
from speechbrain_mrmha.layers.resnet import ResNet34

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb1"
TINY = [8, 16, 32, 64]
PAPER = [64, 128, 256, 512]
SAMPLE_RATE = 16000


class Trainer:
    """One model + classifier + CosAMS + RAdam; ``step(feats, lens, labels)``
    runs forward, loss, backward and the optimiser step."""

    def __init__(self, channels, n_classes, bf16=False, channels_last=False):
        torch.manual_seed(0)
        pooling = functools.partial(build_pooling, name="mrmha", num_heads=6)
        self.model = ResNet34(
            n_mels=40, channels=channels, pooling=pooling, lin_neurons=512
        )
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.classifier = CosineClassifier(512, n_classes)
        self.loss = CosAMSLoss(margin=0.2, scale=30.0)
        params = list(self.model.parameters()) + list(
            self.classifier.parameters()
        )
        self.optimizer = torch.optim.RAdam(params, lr=1e-3, weight_decay=2e-5)
        self.bf16 = bf16
        self.forward = self.model

    def step(self, feats, lens, labels):
        """One training step; returns the loss value."""
        self.optimizer.zero_grad(set_to_none=True)
        context = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if self.bf16
            else nullcontext()
        )
        with context:
            loss = self.loss(self.classifier(self.forward(feats, lens)), labels)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def time_steps(fn, steps, label=None):
    """Mean seconds per call over ``steps`` calls after one warm-up call;
    prints it at once (flushed) when ``label`` is given."""
    fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    seconds = (time.perf_counter() - start) / steps
    if label:
        print(f"  measured {label}: {seconds:.3f} s/step", flush=True)
    return seconds


def random_batch(batch, seconds, n_classes):
    """Random features (batch, frames, 40), full lengths, labels."""
    frames = int(seconds * 100) + 1
    generator = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, frames, 40, generator=generator),
        torch.ones(batch),
        torch.randint(0, n_classes, (batch, 1), generator=generator),
    )


def build_pipeline(root, batch, seconds):
    """Synthetic corpus -> recipe preparation -> ``dataio_prep`` train set,
    and the recipe's feature modules. Returns (dataset, n_classes, features)."""
    sys.path.insert(0, str(RECIPE))
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization
    from train_speaker_embeddings import dataio_prep
    from voxceleb1_prepare import prepare_voxceleb1

    from speechbrain_mrmha.app.synthetic import generate_corpus
    from speechbrain_mrmha.dataio.annotation import read_training_annotations
    from speechbrain_mrmha.training.crops import RandomCrops

    corpus = generate_corpus(
        os.path.join(root, "vox"),
        speakers=6,
        videos=2,
        utterances=4,
        min_duration=seconds + 1.0,
        max_duration=seconds + 3.0,
        num_workers=2,
    )
    prepared = os.path.join(root, "prepared")
    prepare_voxceleb1(
        corpus.wav_folder, prepared, corpus.verification_file, num_workers=1
    )
    rows = read_training_annotations(
        os.path.join(prepared, "train.csv"),
        os.path.join(prepared, "valid.csv"),
        corpus.root,
    )
    crops = RandomCrops(seed=0, sentence_len=seconds, sample_rate=SAMPLE_RATE)
    train, _, labels = dataio_prep({"crops": crops}, *rows)
    fbank = Fbank(n_mels=40)
    norm = InputNormalization(norm_type="sentence", std_norm=False)

    def features(wavs, lens):
        return norm(fbank(wavs), lens)

    return train, len(labels), features


def loader_time(dataset, batch, workers, batches):
    """Seconds per batch of ``make_dataloader`` (after the first batch, so
    worker start-up is excluded) and the first batch."""
    from speechbrain.dataio.dataloader import make_dataloader

    loader = make_dataloader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
    )
    first, count = None, 0
    while count < batches:  # several epochs if the corpus is small
        iterator = iter(loader)
        if first is None:
            first = next(iterator)
        start = time.perf_counter()
        for _ in iterator:
            count += 1
            if count >= batches:
                break
        if count == 0:
            raise RuntimeError(
                "corpus gives a single batch per epoch; raise its size"
            )
        elapsed = time.perf_counter() - start
    return elapsed / count, first


def compile_child(channels, batch, seconds, steps):
    """Subprocess body: compile time and step time of ``torch.compile``."""
    x, lens, y = random_batch(batch, seconds, 16)
    eager = Trainer(channels, 16)
    eager_time = time_steps(lambda: eager.step(x, lens, y), steps)
    trainer = Trainer(channels, 16)
    trainer.forward = torch.compile(trainer.model)
    start = time.perf_counter()
    trainer.step(x, lens, y)
    first = time.perf_counter() - start
    step = time_steps(lambda: trainer.step(x, lens, y), steps)
    print(json.dumps({"first": first, "step": step, "eager": eager_time}))


def try_compile(batch, seconds, steps, timeout, threads):
    """Runs ``compile_child`` at tiny width under ``timeout`` seconds."""
    command = [
        sys.executable,
        __file__,
        "--compile-child",
        "--batch",
        str(batch),
        "--seconds",
        str(seconds),
        "--tiny-steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"did not finish within {timeout} s"
    if out.returncode != 0:
        return "failed: " + out.stderr.strip().splitlines()[-1][:300]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return (
        f"first step (compiling) {result['first']:.1f} s, then {result['step'] * 1e3:.0f} ms "
        f"per step vs eager {result['eager'] * 1e3:.0f} ms "
        f"({result['eager'] / result['step']:.2f}x)"
    )


def main():
    """Runs the benchmark and prints numbers and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--paper-steps", type=int, default=1)
    parser.add_argument(
        "--paper-bf16",
        action="store_true",
        help="also time bf16 autocast at paper width (slow without native bf16)",
    )
    parser.add_argument("--tiny-steps", type=int, default=5)
    parser.add_argument("--loader-batches", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--compile", action="store_true", help="also try torch.compile"
    )
    parser.add_argument("--compile-timeout", type=float, default=240.0)
    parser.add_argument(
        "--compile-child", action="store_true", help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compile_child:
        return compile_child(TINY, args.batch, args.seconds, args.tiny_steps)

    tmp = tempfile.TemporaryDirectory(prefix="bench_training_")
    dataset, n_classes, features = build_pipeline(
        tmp.name, args.batch, args.seconds
    )
    x, lens, y = random_batch(args.batch, args.seconds, n_classes)
    rows = []  # (what, seconds per step, reference name)

    tiny = Trainer(TINY, n_classes)
    rows.append(
        (
            "tiny fp32, random feats",
            time_steps(
                lambda: tiny.step(x, lens, y), args.tiny_steps, "tiny fp32"
            ),
            None,
        )
    )
    tiny16 = Trainer(TINY, n_classes, bf16=True)
    rows.append(
        (
            "tiny bf16 autocast, random feats",
            time_steps(
                lambda: tiny16.step(x, lens, y), args.tiny_steps, "tiny bf16"
            ),
            "tiny fp32, random feats",
        )
    )
    paper = {
        "paper fp32, random feats": Trainer(PAPER, n_classes),
        "paper channels_last, random feats": Trainer(
            PAPER, n_classes, channels_last=True
        ),
    }
    if (
        args.paper_bf16
    ):  # fast with AMX, about 8x slower than float32 without native bf16
        paper["paper bf16 autocast, random feats"] = Trainer(
            PAPER, n_classes, bf16=True
        )
        paper["paper bf16 + channels_last, random feats"] = Trainer(
            PAPER, n_classes, bf16=True, channels_last=True
        )
    for name, trainer in paper.items():
        rows.append(
            (
                name,
                time_steps(
                    functools.partial(trainer.step, x, lens, y),
                    args.paper_steps,
                    name,
                ),
                "paper fp32, random feats",
            )
        )

    per_batch, first = {}, None
    for workers in (0, 2):
        per_batch[workers], first = loader_time(
            dataset, args.batch, workers, args.loader_batches
        )
    wavs, wav_lens = first.sig
    labels, _ = first.spk_id_encoded
    feat_time = time_steps(lambda: features(wavs, wav_lens), 5)

    from speechbrain.dataio.dataloader import make_dataloader

    def epoch():
        return iter(
            make_dataloader(
                dataset,
                batch_size=args.batch,
                shuffle=True,
                num_workers=0,
                drop_last=True,
            )
        )

    loader = epoch()
    real = paper["paper fp32, random feats"]

    def real_step():
        nonlocal loader
        batch = next(loader, None)
        if batch is None:
            loader = epoch()
            batch = next(loader)
        sig, sig_lens = batch.sig
        real.step(features(sig, sig_lens), sig_lens, batch.spk_id_encoded[0])

    rows.append(
        (
            "paper fp32, real pipeline (workers 0)",
            time_steps(real_step, args.paper_steps, "real pipeline"),
            "paper fp32, random feats",
        )
    )

    times = {name: t for name, t, _ in rows}
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"Training throughput, ResNet-34 + MRMHA K=6, batch {args.batch} x {args.seconds} s, "
        f"CosAMS + RAdam, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load}"
    )
    print(f"{'what':<40} {'s/step':>8} {'steps/s':>8} {'ratio':>7}")
    for name, seconds, ref in rows:
        ratio = f"{times[ref] / seconds:7.2f}" if ref else "      -"
        print(f"{name:<40} {seconds:8.3f} {1 / seconds:8.2f} {ratio}")
    print(
        "ratio = reference time / this time (> 1 is faster than the reference)"
    )
    step = times["paper fp32, random feats"]
    for workers, seconds in per_batch.items():
        total = seconds + feat_time
        print(
            f"pipeline, {workers} workers: load {seconds * 1e3:.1f} ms + Fbank/norm "
            f"{feat_time * 1e3:.1f} ms = {total * 1e3:.1f} ms per batch; "
            f"paper step / pipeline = {step / total:.1f}x (target >= 3x); "
            f"tiny step / pipeline = {times['tiny fp32, random feats'] / total:.1f}x"
        )
    if args.compile:
        print(
            "torch.compile (tiny width, subprocess): "
            + try_compile(
                args.batch,
                args.seconds,
                args.tiny_steps,
                args.compile_timeout,
                args.threads,
            )
        )
    else:
        print("torch.compile: not tried (pass --compile)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
