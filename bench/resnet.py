"""Benchmark: cost of the per-convolution length masking of ResNet34 and of
the channels_last memory format, at paper width, eval mode, CPU.

Peers measured in the same run: the same model with ``lengths=None`` (no
mask built or applied) and the same model in the default contiguous format.

Usage: python bench/resnet.py [--batch 8] [--frames 200] [--repeats 3]
"""

import argparse
import time

import torch

from speechbrain_mrmha.layers.resnet import ResNet34


def best_times(cases, repeats):
    """Best wall-clock time per case; the cases are interleaved round by
    round (after one warm-up each) so that load from other processes hits
    every case alike."""
    for fn in cases.values():
        fn()
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main():
    """Runs the benchmark and prints times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = ResNet34().eval()
    feats = torch.randn(args.batch, args.frames, 40)
    lengths = torch.linspace(0.5, 1.0, args.batch)
    fast = ResNet34().eval()
    fast.load_state_dict(model.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    cases = {
        "contiguous, lengths=None": lambda: model(feats),
        "contiguous, masked lengths": lambda: model(feats, lengths),
        "channels_last, lengths=None": lambda: fast(feats),
        "channels_last, masked lengths": lambda: fast(feats, lengths),
    }
    with torch.no_grad():
        results = best_times(cases, args.repeats)
    base = results["contiguous, lengths=None"]
    print(
        f"ResNet34 paper width, batch {args.batch} x {args.frames} frames x "
        f"40 mels, eval, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    for name, seconds in results.items():
        print(
            f"{name:32s} {seconds * 1000:8.1f} ms  ratio {seconds / base:.3f}"
        )


if __name__ == "__main__":
    main()
