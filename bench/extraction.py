"""Benchmark: embedding extraction through the pretrained interface, CPU.

A paper-size ResNet-34 (channels 64, 128, 256, 512) with MRMHA pooling
(K = 6 heads), untrained, is written with ``write_pretrained``, loaded back
with ``load_encoder`` (SpeechBrain's ``EncoderClassifier``) and run with
``encode_signals``. Measured in the same run:

* seconds of audio embedded per second, batched by length
  (``length_batches`` + ``encode_signals``) against one utterance at a time,
  and the largest difference between the two sets of embeddings;
* achieved GFLOP/s (FLOPs counted by ``torch.utils.flop_counter``) against a
  dense float32 matmul of the same process;
* peak resident memory (``ru_maxrss`` of a fresh subprocess) for one long
  utterance.

Usage: python bench/extraction.py [--utterances 16] [--min-seconds 4]
    [--max-seconds 8] [--long-seconds 300] [--repeats 1] [--threads 2]

FLOPs are counted (2 per multiply-add, conv / matmul ops only) by
``FlopCounterMode`` around the timed passes.
"""

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from speechbrain_mrmha.cosams import CosineClassifier
from speechbrain_mrmha.export import load_encoder, write_pretrained
from speechbrain_mrmha.extraction import encode_signals, length_batches
from speechbrain_mrmha.pooling import build_pooling
from speechbrain_mrmha.resnet import ResNet34

SAMPLE_RATE = 16000
CHANNELS = [64, 128, 256, 512]
BLOCKS = [3, 4, 6, 3]
NUM_HEADS = 6


def write_model(folder):
    """Writes an untrained paper-size ResNet-34 + MRMHA (K = 6) pretrained
    folder and returns its path."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    torch.manual_seed(0)
    pooling = functools.partial(build_pooling, name="mrmha", num_heads=NUM_HEADS)
    model = ResNet34(n_mels=40, channels=CHANNELS, block_counts=BLOCKS,
                     pooling=pooling, lin_neurons=512).eval()
    labels = CategoricalEncoder()
    labels.update_from_iterable(["spk1", "spk2"])
    sizes = dict(n_mels=40, channels=CHANNELS, block_counts=BLOCKS, emb_dim=512, n_classes=2)
    return write_pretrained(Path(folder) / "model", model, CosineClassifier(512, 2), labels, sizes)


def signal(seconds, seed):
    """A deterministic noise waveform of ``seconds`` at 16 kHz."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * SAMPLE_RATE), generator=generator)


def matmul_gflops(size, repeats):
    """Best GFLOP/s of a dense float32 ``size`` x ``size`` matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def child_long(folder, seconds, threads):
    """Subprocess body: load the encoder, embed one ``seconds`` utterance,
    print peak RSS before and after as JSON."""
    torch.set_num_threads(threads)
    encoder = load_encoder(folder, savedir=Path(folder).parent / "sb_cache_long")
    encode_signals(encoder, [signal(2.0, 1)])  # warm-up: allocator, lazy init
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wav = signal(seconds, 2)
    start = time.perf_counter()
    encode_signals(encoder, [wav])
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kib": base, "peak_kib": peak, "seconds": elapsed}))


def long_utterance(folder, seconds, threads):
    """Runs ``child_long`` in a fresh interpreter; returns its JSON result."""
    command = [sys.executable, __file__, "--child-long", str(folder),
               "--long-seconds", str(seconds), "--threads", str(threads)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"long-utterance subprocess failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    """Runs the benchmark and prints numbers and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--min-seconds", type=float, default=4.0)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--batch-seconds", type=float, default=240.0)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--long-seconds", type=float, default=300.0,
                        help="length of the memory-test utterance; 0 skips it")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--matmul", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child-long", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_long:
        return child_long(args.child_long, args.long_seconds, args.threads)
    if not 0 < args.min_seconds <= args.max_seconds:
        parser.error("--min-seconds must be > 0 and <= --max-seconds")

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench_extraction_")
    folder = write_model(tmp.name)
    encoder = load_encoder(folder, savedir=Path(tmp.name) / "sb_cache")

    step = (args.max_seconds - args.min_seconds) / max(1, args.utterances - 1)
    durations = [args.min_seconds + step * i for i in range(args.utterances)]
    signals = [signal(d, 100 + i) for i, d in enumerate(durations)]
    batches = length_batches(durations, args.batch_seconds, args.max_batch_size)
    audio = sum(durations)

    def batched():
        out = torch.empty(len(signals), 512)
        for batch in batches:
            out[batch] = encode_signals(encoder, [signals[i] for i in batch])[0]
        return out

    def single():
        return torch.cat([encode_signals(encoder, [s])[0] for s in signals])

    cases = {"batched": batched, "one-by-one": single}
    encode_signals(encoder, [signal(2.0, 1)])  # warm-up: allocator, lazy init
    best = {name: float("inf") for name in cases}
    results, flops = {}, {}
    for _ in range(args.repeats):  # interleaved so load hits both alike
        for name, fn in cases.items():
            # the counter only inspects op shapes: its overhead is negligible
            # next to the convolutions, so the timed pass also counts FLOPs
            with FlopCounterMode(display=False) as counter:
                start = time.perf_counter()
                results[name] = fn()
                elapsed = time.perf_counter() - start
            flops[name] = counter.get_total_flops()
            best[name] = min(best[name], elapsed)
    diff = (results["batched"] - results["one-by-one"]).abs().max().item()
    scale = results["one-by-one"].abs().max().item()
    peak = matmul_gflops(args.matmul, repeats=5)

    print(f"Extraction, ResNet-34 {CHANNELS} + MRMHA K={NUM_HEADS}, untrained, "
          f"via write_pretrained/load_encoder/encode_signals; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.utterances} utterances {args.min_seconds}-{args.max_seconds} s "
          f"({audio:.1f} s audio), batches {[len(b) for b in batches]}, best of {args.repeats}")
    print(f"dense float32 matmul {args.matmul}^2: {peak:.1f} GFLOP/s")
    print(f"{'case':<12} {'s':>8} {'audio s/s':>10} {'GFLOP':>8} {'GFLOP/s':>8} {'vs matmul':>9}")
    for name in cases:
        rate = flops[name] / best[name] / 1e9
        print(f"{name:<12} {best[name]:8.2f} {audio / best[name]:10.1f} "
              f"{flops[name] / 1e9:8.1f} {rate:8.1f} {rate / peak:9.2f}")
    print(f"batched speed-up over one-by-one: {best['one-by-one'] / best['batched']:.2f}x "
          f"(target >= 1.5x)")
    print(f"FLOPs per second of audio (one-by-one): {flops['one-by-one'] / audio / 1e9:.2f} GFLOP")
    print(f"max |batched - one-by-one| = {diff:.2e} (embedding max |value| {scale:.2f}); "
          f"{'identical within 1e-4' if diff <= 1e-4 else 'DIFFERENT (> 1e-4)'}")

    if args.long_seconds > 0:
        long = long_utterance(folder, args.long_seconds, args.threads)
        print(f"one {args.long_seconds:.0f} s utterance (fresh subprocess): "
              f"{long['seconds']:.1f} s ({args.long_seconds / long['seconds']:.1f} audio s/s), "
              f"peak RSS {long['peak_kib'] / 2**20:.2f} GiB, "
              f"{(long['peak_kib'] - long['base_kib']) / 2**20:.2f} GiB above the loaded model "
              f"({long['base_kib'] / 2**20:.2f} GiB)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
