"""Benchmark: onnxruntime against PyTorch on CPU, same model, same inputs,
one run.

The recipe's ``hparams/mrmha.yaml`` model at paper size (ResNet-34 with
channels 64, 128, 256, 512, MRMHA with K = 4 heads), untrained, is written
as a pretrained folder with ``write_pretrained``, loaded as
``backends.TorchEncoder`` (SpeechBrain's ``EncoderClassifier``,
channels-last weights: the PyTorch default) and exported to one ONNX file
with ``export.export_model`` (what ``python -m speechbrain_mrmha export``
does), run as ``backends.OnnxEncoder``. Both backends embed the same
VoxCeleb-like utterances (noise, uniform 4 to 20 s, no length a multiple of
the hop) through the same ``extraction.encode_signals``:

* batch 1: each utterance alone;
* padded: length-sorted batches of ``--batch-size`` utterances, zero-padded.

Reported: utterances and audio seconds per second for each backend, the
ratio onnxruntime / PyTorch, and the smallest cosine between the two
backends' embeddings. Each repeat lengthens every utterance by 3 frames (no
case reuses primitives cached for the shapes of an earlier one); best of
``--repeats`` interleaved repeats.

Long input: one ``--long-seconds`` utterance (default 120 s, beyond
``chunk_frames`` = 2048 frames = 20.47 s) in a fresh subprocess per
backend: PyTorch encodes it in windows, the ONNX graph in one pass. Peak
resident memory above the loaded model (``VmHWM`` reset through
``/proc/self/clear_refs`` just before the pass), time, and the cosine
between the two embeddings.

Usage: python bench/deploy.py [--utterances 24] [--batch-size 4]
    [--repeats 2] [--threads 2] [--long-seconds 120]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from extraction import write_model  # bench/: the one model writer

from speechbrain_mrmha.inference.backends import OnnxEncoder, TorchEncoder
from speechbrain_mrmha.inference.export import export_model
from speechbrain_mrmha.inference.extraction import encode_signals
from speechbrain_mrmha.layers.lengths import HOP_SAMPLES

SAMPLE_RATE = 16000


def utterances(count, seed=0):
    """``count`` noise waveforms of 4 to 20 s (uniform), none a whole
    number of hops."""
    generator = torch.Generator().manual_seed(seed)
    seconds = 4 + 16 * torch.rand(count, generator=generator)
    out = []
    for value in seconds.tolist():
        samples = int(value * SAMPLE_RATE)
        samples += samples % HOP_SAMPLES == 0
        out.append(0.1 * torch.randn(samples, generator=generator))
    return out


def groups(signals, batch_size):
    """Length-sorted batches of ``batch_size`` indexes (1: one by one)."""
    order = sorted(range(len(signals)), key=lambda i: -signals[i].shape[0])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def run_case(encoder, signals, batches):
    """Seconds to embed ``signals`` in ``batches``, and the embeddings in
    the order of ``signals``."""
    rows = [None] * len(signals)
    start = time.perf_counter()
    for batch in batches:
        embeddings, _ = encode_signals(encoder, [signals[i] for i in batch])
        for row, index in enumerate(batch):
            rows[index] = embeddings[row]
    return time.perf_counter() - start, torch.stack(rows)


def resident_kib(field):
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child_long(model, backend, seconds, threads):
    """Subprocess body: one long utterance through one backend; prints peak
    memory above the loaded model, time and the embedding as JSON."""
    torch.set_num_threads(threads)
    if backend == "onnxruntime":
        encoder = OnnxEncoder(model, threads=threads)
    else:
        encoder = TorchEncoder(model)
    encode_signals(encoder, utterances(1, seed=1))  # warm-up
    wav = utterances(1, seed=2)[0]
    wav = torch.cat([wav] * (1 + int(seconds * SAMPLE_RATE) // len(wav)))
    wav = wav[: int(seconds * SAMPLE_RATE) + 7]
    base = resident_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak := current
    start = time.perf_counter()
    embedding = encode_signals(encoder, [wav])[0][0]
    elapsed = time.perf_counter() - start
    peak = resident_kib("VmHWM")
    result = {"above_kib": peak - base, "seconds": elapsed}
    print(json.dumps({**result, "embedding": embedding.tolist()}))


def long_utterance(model, backend, seconds, threads):
    """Runs ``child_long`` in a fresh interpreter; returns its JSON."""
    command = [sys.executable, __file__, "--child-long", str(model), backend]
    command += ["--long-seconds", str(seconds), "--threads", str(threads)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(
            f"long-input subprocess failed:\n{out.stderr[-2000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    """Runs the benchmark and prints a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long-seconds", type=float, default=120.0)
    parser.add_argument("--child-long", nargs=2, default=None)
    args = parser.parse_args()
    if args.child_long is not None:
        child_long(*args.child_long, args.long_seconds, args.threads)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_model(tmp, "pretrained")  # the yaml's own K = 4
        start = time.perf_counter()
        onnx_file = export_model(folder, Path(tmp) / "model.onnx")
        export_seconds = time.perf_counter() - start
        size_mb = onnx_file.stat().st_size / 2**20
        backends = {
            "pytorch": TorchEncoder(folder),
            "onnxruntime": OnnxEncoder(onnx_file, threads=args.threads),
        }
        base = utterances(args.utterances)
        warm = [base[0][: 4 * SAMPLE_RATE + 7]]
        for encoder in backends.values():
            encode_signals(encoder, warm)
        cases = [("batch 1", 1), (f"padded {args.batch_size}", args.batch_size)]
        best, embeddings = {}, {}
        for repeat in range(args.repeats):
            extra = 3 * HOP_SAMPLES * repeat
            signals = [torch.cat([s, s[:extra]]) if extra else s for s in base]
            for case, size in cases:
                batches = groups(signals, size)
                for name, encoder in backends.items():
                    seconds, rows = run_case(encoder, signals, batches)
                    key = (case, name)
                    best[key] = min(best.get(key, float("inf")), seconds)
                    embeddings[key] = rows
        audio = sum(s.shape[0] for s in signals) / SAMPLE_RATE
        long = {}
        if args.long_seconds > 0:
            for name, model in (
                ("pytorch", folder),
                ("onnxruntime", onnx_file),
            ):
                long[name] = long_utterance(
                    model, name, args.long_seconds, args.threads
                )
    print(
        f"paper-size mrmha.yaml (K = 4), ONNX export {export_seconds:.1f} s, "
        f"{size_mb:.0f} MiB; {args.utterances} utterances, {audio:.0f} s of "
        f"audio (last repeat), {args.threads} threads, best of "
        f"{args.repeats}"
    )
    print(
        "| case | backend | s | utterances/s | audio s/s | "
        "onnxruntime / pytorch | min cosine to pytorch |"
    )
    print("|---|---|---|---|---|---|---|")
    for case, _ in cases:
        reference = best[(case, "pytorch")]
        for name in backends:
            seconds = best[(case, name)]
            cosine = torch.nn.functional.cosine_similarity(
                embeddings[(case, name)], embeddings[(case, "pytorch")], dim=1
            ).min()
            print(
                f"| {case} | {name} | {seconds:.2f} | "
                f"{args.utterances / seconds:.2f} | {audio / seconds:.1f} | "
                f"{reference / seconds:.2f}x | {float(cosine):.7f} |"
            )
    if long:
        cosine = torch.nn.functional.cosine_similarity(
            torch.tensor(long["pytorch"]["embedding"]),
            torch.tensor(long["onnxruntime"]["embedding"]),
            dim=0,
        )
        print(
            f"\none {args.long_seconds:.0f} s utterance (cosine between the "
            f"backends {float(cosine):.7f})"
        )
        print("| backend | s | peak memory above the model |")
        print("|---|---|---|")
        for name, how in (
            ("pytorch", "windows of chunk_frames"),
            ("onnxruntime", "one pass"),
        ):
            print(
                f"| {name} ({how}) | {long[name]['seconds']:.2f} | "
                f"{long[name]['above_kib'] / 2**20:.2f} GiB |"
            )


if __name__ == "__main__":
    main()
