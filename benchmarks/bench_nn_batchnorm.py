"""Forward + backward time of ``bnlab.nn.batch_norm`` against torch's native ``F.batch_norm``.

    .venv/bin/python benchmarks/bench_nn_batchnorm.py [--repeats 20] [--rounds 3]

Training mode, float32, weight and bias requiring grad, gradients by ``torch.autograd.grad`` (nothing
accumulates), inputs preallocated (fresh 16-32 MiB tensors would page-fault every repeat), torch threads pinned
to 1 and then 2. The two implementations are interleaved round by round and each reports its best median
(``bnlab.timing.compare_ms``), so a busy neighbour disturbs both alike.

``bnlab.nn`` is the course's readable reference (lecture 6), not a fast path: every eager PyTorch op reads and
writes whole batches, 28 batch-sized reads and writes per forward + backward (lecture 6 counts them op by op),
against a floor of 8 for any implementation; torch's fused kernel is not at that floor either (lecture 6 times
both against a copy of the same array), so on large batches expect ours to be a few times slower. The (128, 100) MLP batch is the
size that matters for the course (ghost batch norm in lecture 8's live runs): there per-call overhead dominates.
An earlier speed-tuned version (in-place buffers, row-wise norms) was 2-4x faster on the large shapes and no
faster on (128, 100); it was removed because nothing in the course runs large batches through bnlab.nn.
"""

from __future__ import annotations

import argparse

import torch

from bnlab.timing import time_torch_batch_norms

SHAPES = [(128, 100), (256, 1024), (64, 64, 32, 32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, float32, forward + backward, best-of-{args.rounds} median ms")
    print(f"{'shape':>18} {'threads':>7} {'native':>8} {'bnlab.nn':>9} {'ours/native':>11}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for shape in SHAPES:
            ours, native = time_torch_batch_norms(shape, args.repeats, rounds=args.rounds).values()
            print(f"{str(shape):>18} {threads:>7} {native:8.2f} {ours:9.2f} {ours / native:11.2f}")


if __name__ == "__main__":
    main()
