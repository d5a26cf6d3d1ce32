"""Forward + backward time of the numpy batch norm (staged and fused backward) against torch's native kernel.

Run:  .venv/bin/python benchmarks/bench_batchnorm.py      (or `make bench`)

float32, training mode, random upstream gradient, inputs allocated once, medians over repeats. numpy runs on one
core (its element-wise kernels are single-threaded); torch is timed with 1 thread (like for like) and with 2.
Also printed: the backward alone, staged vs fused. Ratios are measured in this one run. ``bnlab.functional`` is the
course's plain reference (one numpy expression per step, no cache blocking or in-place buffers): the closed form
still makes fewer passes over memory than the staged backward, which is lecture 4's lesson.
"""

from __future__ import annotations

from bnlab.timing import pin_threads

pin_threads(1)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bnlab.timing import time_batchnorm_implementations  # noqa: E402

SHAPES = [(256, 1024), (64, 64, 32, 32)]


def main() -> None:
    print(f"numpy {np.__version__}, torch {torch.__version__}, float32, median ms")
    header = (f"{'shape':>18} | {'fwd+bwd: staged':>15} {'fused':>7} {'torch@1':>8} {'torch@2':>8} | "
              f"{'bwd: staged':>11} {'fused':>7} | {'staged/fused':>12} {'bwd s/f':>7} "
              f"{'fused/t@1':>9} {'fused/t@2':>9}")
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        repeats = 30 if np.prod(shape) < 1e6 else 12
        torch.set_num_threads(1)
        one = time_batchnorm_implementations(shape, repeats)
        torch.set_num_threads(2)
        two = time_batchnorm_implementations(shape, repeats)
        staged, fused = one["numpy staged"], one["numpy fused"]
        backward = time_batchnorm_implementations(shape, repeats, backward_only=True)
        bwd_staged, bwd_fused = backward["numpy staged"], backward["numpy fused"]
        print(f"{str(shape):>18} | {staged:15.2f} {fused:7.2f} {one['torch native']:8.2f} "
              f"{two['torch native']:8.2f} | {bwd_staged:11.2f} {bwd_fused:7.2f} | {staged / fused:12.2f} "
              f"{bwd_staged / bwd_fused:7.2f} {fused / one['torch native']:9.2f} {fused / two['torch native']:9.2f}")


if __name__ == "__main__":
    main()
