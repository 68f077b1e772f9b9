"""Benchmark: cost of the MRMHA pooling (speechbrain_mrmha/layers/pooling.py) on CPU.

Measured in the same run, interleaved round-robin (so load from other
processes hits every candidate alike), median of ``--repeats`` runs after
warm-up, ``torch.set_num_threads(--threads)``:

(a) forward+backward of MRMHA K=4 and K=6 (d = 1024, hidden = d, T = 300,
    batch 32, relative lengths in [0.5, 1]) against SpeechBrain's ECAPA
    ``AttentiveStatisticsPooling(channels=1024, attention_channels=1024)``
    in train mode on the same lengths. SpeechBrain's layer is timed on a
    (batch, channels, time) tensor, its native layout inside ECAPA-TDNN (no
    transpose); a second row adds the ``transpose(1, 2)`` a user holding
    (batch, time, channels) frames would need;
(b) the same MRMHA maths written per head (a ModuleList of K single-head MLP
    scorers and a Python loop over heads, as peer toolkits do), checked equal
    to ours with copied weights before timing. Two more rows: "floor", only
    the three GEMMs of the hidden layer (forward and the two backward
    products) that every implementation must do, and "ours + block-diag
    scores", ours with the score einsum replaced by one GEMM (a candidate
    change to pooling.py, checked equal to ours);
(c) the share of pooling + Linear1/BatchNorm/Linear2 in a paper-size ResNet-34
    forward pass on 3 s of features (300 frames x 40 Mel, batch 8), eval mode
    under ``torch.no_grad()`` and train mode with autograd;
(d) statistics pooling: ours (``MaskedStatisticsPooling``, one masked
    vectorised pass, deterministic) against SpeechBrain's
    ``StatisticsPooling`` (a Python loop over the batch, random noise on the
    means), forward+backward in train mode on the (a) batch, checked equal
    up to SpeechBrain's noise (at most 9e-5) before timing.

Targets: (a) ours within 1.5x of SpeechBrain at K = 4; (b) ours >= 2x faster
than the per-head loop at K = 6; (c) share under 5 %; (d) ours no slower
than SpeechBrain's.

Usage: python bench/pooling.py [--threads 2] [--repeats 7] [--skip-resnet] [--skip-pooling]
       [--skip-statistics]
       python bench/pooling.py --profile      (where the time of ours goes)
"""

import argparse
import functools
import statistics
import time

import torch
from speechbrain.lobes.models.ECAPA_TDNN import AttentiveStatisticsPooling
from speechbrain.nnet.pooling import StatisticsPooling
from torch import nn

from speechbrain_mrmha.layers.pooling import (
    MaskedStatisticsPooling,
    MultiResolutionMultiHeadAttentionPooling,
)

D = 1024


class PerHeadLoopMRMHA(nn.Module):
    """MRMHA as peer toolkits write it: K separate single-head MLP scorers in
    a ModuleList, a Python loop over heads, one masked softmax per head."""

    def __init__(self, input_size, temperatures):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(input_size, input_size),
                nn.Tanh(),
                nn.Linear(input_size, 1),
            )
            for _ in temperatures
        )
        self.temperatures = list(temperatures)

    def forward(self, x, lengths):
        steps = x.shape[1]
        valid = torch.round(lengths * steps).clamp(min=1)
        pad = torch.arange(steps, device=x.device)[None, :] >= valid[:, None]
        x = x.masked_fill(pad[:, :, None], 0.0)
        pooled = []
        for head, temp in zip(self.heads, self.temperatures):
            scores = head(x).squeeze(-1) / temp
            weights = torch.softmax(
                scores.masked_fill(pad, float("-inf")), dim=-1
            )
            pooled.append(torch.bmm(weights[:, None, :], x))
        return torch.cat(pooled, dim=-1)

    @torch.no_grad()
    def copy_from(self, ours):
        """Takes W_i, g_i, V_i, b_i of each head out of our fused module."""
        size = ours.hidden_size
        for i, head in enumerate(self.heads):
            head[0].weight.copy_(ours.hidden.weight[i * size : (i + 1) * size])
            head[0].bias.copy_(ours.hidden.bias[i * size : (i + 1) * size])
            head[2].weight.copy_(ours.score_weight[i][None])
            head[2].bias.copy_(ours.score_bias[i : i + 1])


class BlockDiagonalScoresMRMHA(MultiResolutionMultiHeadAttentionPooling):
    """Ours with one change proposed for ``AttentionPooling.scores`` (the
    "mlp" scorer): s = tanh(W h + g) @ blockdiag(V_1..V_K) + b as one GEMM on
    the contiguous (batch*time, K*l) hidden tensor, instead of the einsum
    "btkl,kl->bkt" that torch runs as a permute copy + batched mat-vec."""

    def scores(self, x):
        batch, time, _ = x.shape
        hidden = torch.tanh(
            nn.functional.linear(
                x, self.hidden.weight.float(), self.hidden.bias.float()
            )
        )
        heads = self.num_heads
        eye = torch.eye(heads, dtype=hidden.dtype, device=hidden.device)
        block = (
            self.score_weight.float()[:, :, None] * eye[:, None, :]
        ).reshape(-1, heads)
        scores = (
            torch.addmm(
                self.score_bias.float(), hidden.reshape(batch * time, -1), block
            )
            .reshape(batch, time, heads)
            .transpose(1, 2)
        )
        return scores / self.temperatures.float()[None, :, None]


def hidden_gemms(frames, weight):
    """The work no implementation of the MLP scorers can skip: W h forward,
    and the two backward products (grad of W, grad of the frames)."""
    hidden = frames @ weight.t()
    grad = torch.ones_like(hidden)
    grad.t() @ frames
    grad @ weight


def forward_backward(module, x, lengths):
    """One training step of the pooling alone: forward, sum, backward."""
    module.zero_grad(set_to_none=True)
    x.grad = None
    module(x, lengths).sum().backward()


def interleaved_medians(candidates, repeats, warmup=2):
    """Median seconds per candidate; candidates run round-robin."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def pooling_benchmark(args):
    """(a) and (b): forward+backward of the poolings alone."""
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.frames, D, requires_grad=True)
    x_sb = x.detach().transpose(1, 2).contiguous().requires_grad_(True)
    lengths = torch.linspace(0.5, 1.0, args.batch)
    speechbrain = AttentiveStatisticsPooling(
        channels=D, attention_channels=D
    ).train()

    def speechbrain_transposed():
        speechbrain.zero_grad(set_to_none=True)
        x.grad = None
        speechbrain(x.transpose(1, 2), lengths).sum().backward()

    candidates = {
        "SpeechBrain ASP (B,C,T)": functools.partial(
            forward_backward, speechbrain, x_sb, lengths
        ),
        "SpeechBrain ASP + transpose": speechbrain_transposed,
    }
    for heads in (4, 6):
        ours = MultiResolutionMultiHeadAttentionPooling(
            input_size=D, num_heads=heads
        )
        loop = PerHeadLoopMRMHA(D, ours.temperatures.tolist())
        loop.copy_from(ours)
        with torch.no_grad():
            gap = (loop(x, lengths) - ours(x, lengths)).abs().max().item()
        if gap > 1e-4:
            raise RuntimeError(
                f"per-head loop differs from ours at K={heads}: {gap}"
            )
        print(f"per-head loop equals ours at K={heads}: max |diff| = {gap:.2e}")
        fixed = BlockDiagonalScoresMRMHA(input_size=D, num_heads=heads)
        fixed.load_state_dict(ours.state_dict())
        with torch.no_grad():
            gap = (fixed(x, lengths) - ours(x, lengths)).abs().max().item()
        if gap > 1e-4:
            raise RuntimeError(
                f"block-diagonal scores differ from ours at K={heads}: {gap}"
            )
        candidates[f"ours MRMHA K={heads}"] = functools.partial(
            forward_backward, ours, x, lengths
        )
        candidates[f"floor: 3 hidden GEMMs K={heads}"] = functools.partial(
            hidden_gemms, x.detach().reshape(-1, D), ours.hidden.weight.detach()
        )
        candidates[f"ours + block-diag scores K={heads}"] = functools.partial(
            forward_backward, fixed, x, lengths
        )
        candidates[f"per-head loop K={heads}"] = functools.partial(
            forward_backward, loop, x, lengths
        )
    return interleaved_medians(candidates, args.repeats)


def statistics_benchmark(args):
    """(d): forward+backward of the two statistics poolings."""
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.frames, D, requires_grad=True)
    lengths = torch.linspace(0.5, 1.0, args.batch)
    ours = MaskedStatisticsPooling(input_size=D).train()
    theirs = StatisticsPooling().train()
    with torch.no_grad():
        gap = (ours(x, lengths) - theirs(x, lengths)).abs().max().item()
    if gap > 9e-5 + 1e-6:
        raise RuntimeError(
            f"statistics poolings differ beyond the noise: {gap}"
        )
    print(f"statistics poolings equal up to SpeechBrain's noise: {gap:.2e}")
    return interleaved_medians(
        {
            "SpeechBrain StatisticsPooling": functools.partial(
                forward_backward, theirs, x, lengths
            ),
            "ours MaskedStatisticsPooling": functools.partial(
                forward_backward, ours, x, lengths
            ),
        },
        args.repeats,
    )


def resnet_benchmark(args, heads):
    """(c): pooling + embedding head inside a paper-size ResNet-34 forward."""
    from speechbrain_mrmha.layers.resnet import ResNet34

    torch.manual_seed(0)
    model = ResNet34(
        pooling=functools.partial(
            MultiResolutionMultiHeadAttentionPooling, num_heads=heads
        )
    )
    feats = torch.randn(args.resnet_batch, args.frames, 40)
    lengths = torch.linspace(0.6, 1.0, args.resnet_batch)

    def head(frames, frame_lengths):
        pooled = model.pooling(frames, frame_lengths).squeeze(1)
        return model.linear2(torch.relu(model.norm(model.linear1(pooled))))

    results = {}
    for mode in ("eval", "train"):
        model.train(mode == "train")
        grad = torch.enable_grad() if mode == "train" else torch.no_grad()
        with grad:
            frames, frame_lengths = model.frames(feats, lengths)
            frames = frames.detach().requires_grad_(mode == "train")
            times = interleaved_medians(
                {
                    "full": lambda: model(feats, lengths),
                    "head": lambda f=frames, n=frame_lengths: head(f, n),
                },
                max(3, args.repeats // 3),
                warmup=1,
            )
        results[mode] = (times["full"], times["head"], frames.shape)
    return results


def profile_ours(args):
    """Operator tables of ours and of the block-diagonal fix (K = 6),
    forward+backward."""
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.frames, D, requires_grad=True)
    lengths = torch.linspace(0.5, 1.0, args.batch)
    for cls in (
        MultiResolutionMultiHeadAttentionPooling,
        BlockDiagonalScoresMRMHA,
    ):
        module = cls(input_size=D, num_heads=6)
        forward_backward(module, x, lengths)
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]
        ) as prof:
            for _ in range(3):
                forward_backward(module, x, lengths)
        print(f"\n{cls.__name__}, 3 x forward+backward")
        print(
            prof.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=10
            )
        )


def main():
    """Runs the benchmark and prints times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--resnet-batch", type=int, default=8)
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--skip-pooling", action="store_true")
    parser.add_argument("--skip-statistics", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved runs after warm-up"
    )
    if args.profile:
        profile_ours(args)
        return

    if not args.skip_pooling:
        report_pooling(args)
    if not args.skip_statistics:
        report_statistics(args)
    if not args.skip_resnet:
        report_resnet(args)


def report_pooling(args):
    """Prints (a) and (b)."""
    times = pooling_benchmark(args)
    print(
        f"\nforward+backward, batch {args.batch} x {args.frames} frames x d={D}, hidden={D}"
    )
    for name, seconds in times.items():
        print(f"  {name:30s} {seconds * 1000:9.1f} ms")
    sb = times["SpeechBrain ASP (B,C,T)"]
    sb_t = times["SpeechBrain ASP + transpose"]
    for heads in (4, 6):
        ours = times[f"ours MRMHA K={heads}"]
        loop = times[f"per-head loop K={heads}"]
        floor = times[f"floor: 3 hidden GEMMs K={heads}"]
        print(
            f"  K={heads}: ours / SpeechBrain ASP = {ours / sb:.2f} "
            f"(with transpose {ours / sb_t:.2f}); per-head loop / ours = {loop / ours:.2f}; "
            f"ours / GEMM floor = {ours / floor:.2f}, loop / GEMM floor = {loop / floor:.2f}"
        )
    print(
        f"  targets: ours/SB at K=4 <= 1.5 -> {times['ours MRMHA K=4'] / sb:.2f}; "
        f"loop/ours at K=6 >= 2 -> {times['per-head loop K=6'] / times['ours MRMHA K=6']:.2f}"
    )


def report_statistics(args):
    """Prints (d)."""
    times = statistics_benchmark(args)
    print(
        f"\nstatistics pooling forward+backward, batch {args.batch} x "
        f"{args.frames} frames x d={D}"
    )
    for name, seconds in times.items():
        print(f"  {name:30s} {seconds * 1000:9.1f} ms")
    ratio = (
        times["ours MaskedStatisticsPooling"]
        / times["SpeechBrain StatisticsPooling"]
    )
    print(f"  target: ours / SpeechBrain <= 1 -> {ratio:.2f}")


def report_resnet(args):
    """Prints (c)."""
    for heads in (4, 6):
        results = resnet_benchmark(args, heads)
        for mode, (full, head, shape) in results.items():
            print(
                f"\nResNet-34 + MRMHA K={heads}, {mode}, batch {args.resnet_batch} x "
                f"{args.frames} frames x 40 Mel -> pooled frames {tuple(shape)}:\n"
                f"  full forward {full * 1000:8.1f} ms, pooling + Linear1/BN/Linear2 "
                f"{head * 1000:6.2f} ms, share {100 * head / full:.2f} % (target < 5 %)"
            )


if __name__ == "__main__":
    main()
