"""Benchmark: embedding extraction through the pretrained interface, CPU.

A paper-size ResNet-34 (channels 64, 128, 256, 512) with MRMHA pooling
(K = 6 heads), untrained, is written with ``write_pretrained``, loaded back
with ``load_encoder`` (SpeechBrain's ``EncoderClassifier``) as the PyTorch
backend (``backends.TorchEncoder``) and run with ``encode_signals``. Measured in the same run, on two sets of utterances
(VoxCeleb-like: 4 s minimum, log-normal, mean about 8 s; short: 1-3 s):

* seconds of audio embedded per second for: one utterance at a time (the
  reference, what calling ``encode_batch`` per file does), batched by length
  (``length_batches``) with the GPU budget (240 s of padded audio) and with
  the CPU budget (``default_batch_seconds("cpu")``), each with contiguous and
  channels-last weights (``load_encoder``'s default, ``use_channels_last``), and bf16 autocast;
* the largest difference between every fp32 case's embeddings and the
  reference's (identical up to float rounding), and the smallest cosine
  similarity for bf16;
* achieved GFLOP/s (FLOPs counted by ``torch.utils.flop_counter``) against a
  dense float32 matmul of the same process; the ratio of the two bounds what
  any batching can gain;
* peak resident memory (``VmHWM`` of a fresh subprocess) and time for one
  long utterance, encoded in windows (``ResNet34.chunk_frames``, the default)
  and in a single pass (``chunk_frames=None``), with the difference between
  the two embeddings;
* at VoxCeleb1 size, the bookkeeping around the model (``length_batches`` of
  153,516 durations, an ``EmbeddingCache`` of the 4,874 Vox1-O files) and the
  projected Vox1-O extraction time at the measured rates.

Usage: python bench/extraction.py [--utterances 32] [--repeats 2]
    [--long-seconds 300] [--threads 2] [--no-bf16] [--device cpu|cuda:N]

On a GPU (``--device cuda:0``, not run by us: no GPU here) the same cases
run there; "batched 240 s" is then the default budget
(``default_batch_seconds``), and memory is the CUDA allocator's peak.
"""

import argparse
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from speechbrain_mrmha.inference.backends import TorchEncoder
from speechbrain_mrmha.inference.extraction import (
    default_batch_seconds,
    encode_signals,
    length_batches,
)
from speechbrain_mrmha.inference.pretrained import (
    load_encoder,
    write_pretrained,
)

SAMPLE_RATE = 16000
CHANNELS = [64, 128, 256, 512]
BLOCKS = [3, 4, 6, 3]
NUM_HEADS = 6
CONFIG = (
    Path(__file__).resolve().parents[1] / "recipes/VoxCeleb1/hparams/mrmha.yaml"
)
GPU_BATCH_SECONDS = default_batch_seconds("cuda")
CPU_BATCH_SECONDS = default_batch_seconds("cpu")


def write_model(folder, name="model", **sizes):
    """Writes an untrained model of the recipe's mrmha.yaml as the
    pretrained folder ``folder/name`` and returns its path: paper size with
    the yaml's own K = 4 unless ``sizes`` override its keys (``num_heads``,
    ``channels``, ``block_counts``, ``emb_dim``). The one model writer of
    the benchmarks (deploy.py and verification_lists.py import it)."""
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.dataio.encoder import CategoricalEncoder

    from speechbrain_mrmha.training.config import model_definition

    overrides = {"data_folder": str(folder), "n_classes": 2, "seed": 0}
    overrides.update(sizes)
    with open(CONFIG) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    labels = CategoricalEncoder()
    labels.update_from_iterable(["spk1", "spk2"])
    return write_pretrained(
        Path(folder) / name,
        model_definition(CONFIG, overrides),
        hparams["embedding_model"].eval(),
        hparams["classifier"],
        labels,
    )


def signal(seconds, seed):
    """A deterministic noise waveform of ``seconds`` at 16 kHz."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * SAMPLE_RATE), generator=generator)


def voxceleb_like(count, seed=0):
    """Durations of ``count`` utterances: log-normal (median 6.5 s, sigma
    0.5), at least 4 s as in VoxCeleb1, at most 30 s."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.exp(
        torch.log(torch.tensor(6.5))
        + 0.5 * torch.randn(count, generator=generator)
    )
    return [round(float(v), 2) for v in values.clamp(4.0, 30.0)]


def short_set(count):
    """Durations of ``count`` utterances evenly spread over 1 to 3 s."""
    return [1.0 + 2.0 * i / max(1, count - 1) for i in range(count)]


def synchronize(device):
    """Waits for queued GPU work (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(size, repeats, device="cpu"):
    """Best GFLOP/s of a dense float32 ``size`` x ``size`` matmul."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def resident_kib(field):
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child_long(folder, seconds, threads, chunked, device):
    """Subprocess body: load the encoder, embed one ``seconds`` utterance,
    print memory before the pass and its peak during the pass (on CPU the
    resident set, ``VmHWM`` reset through ``/proc/self/clear_refs``; on a GPU
    the CUDA allocator's peak), time and the embedding as JSON."""
    torch.set_num_threads(threads)
    encoder = TorchEncoder.from_encoder(
        load_encoder(
            folder,
            savedir=Path(folder).parent / f"sb_cache_long{int(chunked)}",
            device=device,
        )
    )
    cuda = torch.device(device).type == "cuda"
    model = encoder.mods.embedding_model
    if not chunked:
        model.chunk_frames = None
    encode_signals(encoder, [signal(2.0, 1)])  # warm-up: allocator, lazy init
    wav = signal(seconds, 2)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) // 1024
    else:
        base = resident_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # peak := current
    start = time.perf_counter()
    embedding = encode_signals(encoder, [wav])[0][
        0
    ]  # returns on the CPU: synchronised
    elapsed = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated(device) // 1024
        if cuda
        else resident_kib("VmHWM")
    )
    print(
        json.dumps(
            {
                "base_kib": base,
                "peak_kib": peak,
                "seconds": elapsed,
                "chunk_frames": model.chunk_frames,
                "embedding": embedding.tolist(),
            }
        )
    )


def long_utterance(folder, seconds, threads, chunked, device):
    """Runs ``child_long`` in a fresh interpreter; returns its JSON result."""
    command = [
        sys.executable,
        __file__,
        "--child-long",
        str(folder),
        "--long-seconds",
        str(seconds),
        "--threads",
        str(threads),
        "--device",
        device,
    ]
    if not chunked:
        command.append("--single-pass")
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(
            f"long-utterance subprocess failed:\n{out.stderr[-2000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_cases(encoders, signals, durations, bf16):
    """name -> (function returning (n, 512) embeddings, encoder key, batches)."""

    def run(encoder, batches, precision="fp32"):
        out = torch.empty(len(signals), 512)
        for batch in batches:
            out[batch] = encode_signals(
                encoder, [signals[i] for i in batch], precision
            )[0]
        return out

    singles = [[i] for i in range(len(signals))]
    gpu = length_batches(durations, GPU_BATCH_SECONDS, 64)
    cpu = length_batches(durations, CPU_BATCH_SECONDS, 64)
    cases = {
        "one-by-one": (
            functools.partial(run, encoders["nchw"], singles),
            singles,
        ),
        f"batched {GPU_BATCH_SECONDS:.0f} s": (
            functools.partial(run, encoders["nchw"], gpu),
            gpu,
        ),
        f"batched {CPU_BATCH_SECONDS:.0f} s": (
            functools.partial(run, encoders["nchw"], cpu),
            cpu,
        ),
        "one-by-one, CL": (
            functools.partial(run, encoders["cl"], singles),
            singles,
        ),
        f"batched {CPU_BATCH_SECONDS:.0f} s, CL": (
            functools.partial(run, encoders["cl"], cpu),
            cpu,
        ),
    }
    if bf16:
        cases[f"batched {CPU_BATCH_SECONDS:.0f} s, CL, bf16"] = (
            functools.partial(run, encoders["cl"], cpu, "bf16"),
            cpu,
        )
    return cases


def measure(name, encoders, durations, repeats, bf16, peak):
    """Times every case on one set of utterances and prints a table.

    Each repeat lengthens every utterance by 3 frames, so no case reuses
    the convolution primitives oneDNN built for an earlier repeat's shapes
    (in real extraction nearly every file has a length of its own)."""
    audio = sum(durations)
    best, results, flops = {}, {}, {}
    for repeat in range(repeats):  # interleaved so load hits every case alike
        lengths = [d + 0.03 * repeat for d in durations]
        signals = [signal(d, 100 + i) for i, d in enumerate(lengths)]
        cases = make_cases(encoders, signals, lengths, bf16)
        for case, (fn, _) in cases.items():
            # the counter only inspects op shapes: its overhead is negligible
            # next to the convolutions, so the timed pass also counts FLOPs
            with FlopCounterMode(display=False) as counter:
                start = time.perf_counter()
                results[case] = fn()
                elapsed = time.perf_counter() - start
            flops[case] = counter.get_total_flops()
            best[case] = min(best.get(case, float("inf")), elapsed)
    reference = results["one-by-one"]
    print(
        f"\n{name}: {len(durations)} utterances {min(durations):.1f}-{max(durations):.1f} s, "
        f"mean {audio / len(durations):.1f} s ({audio:.0f} s audio), best of {repeats}"
    )
    print(
        f"{'case':<26} {'batches':>8} {'s':>7} {'audio s/s':>9} {'GFLOP/s':>8} "
        f"{'vs matmul':>9} {'vs 1-by-1':>9} {'max |diff|':>10}"
    )
    for case, (_, batches) in cases.items():
        rate = flops[case] / best[case] / 1e9
        if "bf16" in case:
            cosine = torch.nn.functional.cosine_similarity(
                results[case], reference
            ).min()
            diff = f"cos {cosine:.4f}"
        else:
            diff = f"{(results[case] - reference).abs().max().item():.1e}"
        print(
            f"{case:<26} {len(batches):>8} {best[case]:7.2f} {audio / best[case]:9.1f} "
            f"{rate:8.1f} {rate / peak:9.2f} {best['one-by-one'] / best[case]:8.2f}x {diff:>10}"
        )
    rate = flops["one-by-one, CL"] / best["one-by-one, CL"] / 1e9
    print(
        f"one-by-one (CL) runs at {rate / peak:.2f} of the matmul rate: no batching can be "
        f"faster than {peak / rate:.2f}x it unless convolutions beat the matmul"
    )
    print(
        f"FLOPs per second of audio (one-by-one): "
        f"{flops['one-by-one'] / audio / 1e9:.2f} GFLOP; embeddings max |value| "
        f"{reference.abs().max().item():.1f}"
    )
    return {case: audio / seconds for case, seconds in best.items()}


def scale(audio_per_second):
    """VoxCeleb1 sizes for the bookkeeping around the model: batching the
    153,516 durations, a cache of the 4,874 Vox1-O test embeddings (put,
    atomic save, load); projects the Vox1-O extraction time."""
    from speechbrain_mrmha.inference.extraction import EmbeddingCache

    durations = voxceleb_like(153_516, seed=1)
    start = time.perf_counter()
    batches = length_batches(durations, CPU_BATCH_SECONDS, 64)
    batching = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as folder:
        cache = EmbeddingCache(Path(folder) / "embeddings.pt", "model")
        start = time.perf_counter()
        for i in range(4_874):
            cache.put(
                hashlib.sha256(str(i).encode()).hexdigest(),  # content keys
                torch.randn(512),
                torch.rand(6),
            )
        cache.save()
        saved = time.perf_counter() - start
        size = (Path(folder) / "embeddings.pt").stat().st_size
        start = time.perf_counter()
        loaded = EmbeddingCache(Path(folder) / "embeddings.pt", "model")
        reload = time.perf_counter() - start
        assert len(loaded.embeddings) == 4_874
    vox1_test_audio = 4_874 * 8.2  # seconds: VoxCeleb1 test, mean 8.2 s
    print(
        f"\nscale: length_batches of 153,516 durations ({CPU_BATCH_SECONDS:.0f} s budget): "
        f"{batching:.2f} s, {len(batches)} batches; cache of 4,874 embeddings + entropies: "
        f"put + atomic save {saved:.2f} s, {size / 2**20:.1f} MiB, load {reload:.2f} s"
    )
    for name, rate in audio_per_second.items():
        print(
            f"  projected Vox1-O extraction (4,874 files, about {vox1_test_audio / 3600:.1f} h "
            f"of audio) at the measured {name} rate {rate:.1f} audio s/s: "
            f"{vox1_test_audio / rate / 60:.0f} min on this machine"
        )


def main():
    """Runs the benchmark and prints numbers and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--utterances", type=int, default=32)
    parser.add_argument(
        "--long-seconds",
        type=float,
        default=300.0,
        help="length of the memory-test utterance; 0 skips it",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--matmul", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-bf16", action="store_true", help="skip the bf16 case"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (default) or cuda:N; memory is then the CUDA allocator's peak",
    )
    parser.add_argument("--child-long", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--single-pass", action="store_true", help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child_long:
        return child_long(
            args.child_long,
            args.long_seconds,
            args.threads,
            not args.single_pass,
            args.device,
        )
    if args.utterances < 2 or args.repeats < 1:
        parser.error("--utterances must be >= 2 and --repeats >= 1")

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench_extraction_")
    folder = write_model(tmp.name, num_heads=NUM_HEADS)
    encoders = {
        "nchw": load_encoder(
            folder,
            savedir=Path(tmp.name) / "sb_cache",
            device=args.device,
            channels_last=False,
        ),
        "cl": load_encoder(
            folder, savedir=Path(tmp.name) / "sb_cl", device=args.device
        ),
    }
    encoders = {
        key: TorchEncoder.from_encoder(encoder)
        for key, encoder in encoders.items()
    }
    for encoder in encoders.values():  # warm-up: allocator, lazy init
        encode_signals(encoder, [signal(2.0, 1)])
    peak = matmul_gflops(args.matmul, repeats=5, device=args.device)
    print(
        f"Extraction, ResNet-34 {CHANNELS} + MRMHA K={NUM_HEADS}, untrained, "
        f"via write_pretrained/load_encoder/encode_signals on {args.device}; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"dense float32 matmul {args.matmul}^2: {peak:.1f} GFLOP/s. CL = channels-last "
        f"weights; batched N s = length-sorted batches of at most N s of padded audio"
    )
    rates = measure(
        "VoxCeleb-like",
        encoders,
        voxceleb_like(args.utterances),
        args.repeats,
        not args.no_bf16,
        peak,
    )
    measure(
        "short",
        encoders,
        short_set(args.utterances),
        args.repeats,
        not args.no_bf16,
        peak,
    )

    if args.long_seconds > 0:
        runs = {
            chunked: long_utterance(
                folder, args.long_seconds, args.threads, chunked, args.device
            )
            for chunked in (True, False)
        }
        diff = torch.tensor(runs[True]["embedding"]) - torch.tensor(
            runs[False]["embedding"]
        )
        memory = (
            "CUDA memory" if torch.device(args.device).type == "cuda" else "RSS"
        )
        print(
            f"\none {args.long_seconds:.0f} s utterance (fresh subprocess each):"
        )
        for chunked, run in runs.items():
            label = (
                f"windows of {run['chunk_frames']} frames"
                if chunked
                else "single pass"
            )
            print(
                f"  {label:<26} {run['seconds']:6.1f} s ({args.long_seconds / run['seconds']:.1f} "
                f"audio s/s), peak {memory} {run['peak_kib'] / 2**20:.2f} GiB: "
                f"{(run['peak_kib'] - run['base_kib']) / 2**20:.2f} GiB above the "
                f"{run['base_kib'] / 2**20:.2f} GiB of the loaded model and input"
            )
        print(
            f"  windows vs single pass: {runs[False]['seconds'] / runs[True]['seconds']:.2f}x "
            f"faster, max |embedding diff| {diff.abs().max().item():.1e}"
        )
    ours = f"batched {CPU_BATCH_SECONDS:.0f} s, CL"
    scale(
        {
            case: rate
            for case, rate in rates.items()
            if case in ("one-by-one", ours) or "bf16" in case
        }
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
