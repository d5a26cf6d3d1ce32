"""Forward + backward time of ``bnlab.nn.batch_norm`` against torch's native ``F.batch_norm``.

Training mode, float32, weight and bias requiring grad; gradients with ``torch.autograd.grad`` (nothing
accumulates); inputs and upstream gradients preallocated once (fresh 16-32 MiB tensors would page-fault every
repeat); torch threads pinned with ``torch.set_num_threads``; warm-up first, then the two implementations
alternate repeat by repeat (so a noisy neighbour hurts both alike) and the median is reported.

    .venv/bin/python benchmarks/bench_nn_batchnorm.py [--threads 1 2] [--repeats 30] [--warmup 5]

What limits bnlab here: every eager PyTorch op is one pass over memory, and the closed form needs about nine
passes for forward + backward (mean, centre, sum of squares, output; sum(dy), centre, dy*xc with its sum, and two
for dx), against about five fused ones in torch's kernel. On the NCHW case torch's *forward* is slow (about
15 ms of its 21 at one thread) and ours is faster there (about 11 ms), but its backward (about 6.5 ms) is one
fused pass that eager ops cannot match. Timings on a shared 2-core machine move by 30% from run to run, and
with two threads another busy process can stall every parallel op: compare the best-of column as well.

Prints one row per (shape, threads): median native ms, median ours ms and the ratio ours / native (< 1: ours is
faster), then the same ratio from the fastest repeat of each, which is steadier when other processes share the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bnlab.nn import batch_norm

SHAPES = [(256, 1024), (64, 64, 32, 32)]


def make_step(fn: Callable, shape: tuple[int, ...], seed: int = 0) -> Callable[[], None]:
    """One forward + backward of ``fn`` on preallocated float32 inputs."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).requires_grad_()
    weight = (torch.rand(shape[1], generator=gen) + 0.5).requires_grad_()
    bias = torch.randn(shape[1], generator=gen).requires_grad_()
    grad_out = torch.randn(shape, generator=gen)

    def step() -> None:
        out = fn(x, None, None, weight, bias, training=True, momentum=0.1, eps=1e-5)
        torch.autograd.grad(out, (x, weight, bias), grad_out)

    return step


def time_pair(native: Callable[[], None], ours: Callable[[], None], repeats: int,
              warmup: int) -> dict[str, list[float]]:
    """Seconds per repeat of each, measured alternately."""
    for _ in range(warmup):
        native()
        ours()
    times: dict[str, list[float]] = {"native": [], "ours": []}
    for _ in range(repeats):
        for name, step in (("native", native), ("ours", ours)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, float32, training=True, forward + backward (autograd.grad), "
          f"median of {args.repeats}")
    print(f"{'shape':<20} {'threads':>7} {'native ms':>10} {'bnlab ms':>10} {'ours/native':>12} {'(best-of)':>10}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for shape in SHAPES:
            times = time_pair(make_step(F.batch_norm, shape), make_step(batch_norm, shape), args.repeats, args.warmup)
            native, ours = statistics.median(times["native"]), statistics.median(times["ours"])
            best_ratio = min(times["ours"]) / min(times["native"])
            print(f"{str(shape):<20} {threads:>7} {native * 1e3:>10.3f} {ours * 1e3:>10.3f} {ours / native:>12.2f} "
                  f"{best_ratio:>10.2f}")


if __name__ == "__main__":
    main()
