"""Forward + backward time of the numpy batch norm (staged and fused backward) against torch's native kernel.

Run:  .venv/bin/python benchmarks/bench_batchnorm.py      (or `make bench`)

float32, training mode, random upstream gradient, inputs allocated once. numpy runs on one core (its element-wise
kernels are single-threaded); torch is timed with 1 thread (the like-for-like comparison) and with 2.
Printed as medians and ratios measured in this one run; the course's targets are fused >= 2x faster than staged,
and fused within 2x of torch native.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_ms, pin_threads  # noqa: E402

pin_threads(1)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bnlab.functional import batchnorm_backward, batchnorm_backward_fused, batchnorm_forward  # noqa: E402

SHAPES = [(256, 1024), (64, 64, 32, 32)]


def numpy_step(backward, x, gamma, beta, dout):
    def step():
        _, cache = batchnorm_forward(x, gamma, beta)
        return backward(dout, cache)
    return step


def torch_step(x, gamma, beta, dout):
    xt = torch.from_numpy(x).requires_grad_()
    gt = torch.from_numpy(gamma).requires_grad_()
    bt = torch.from_numpy(beta).requires_grad_()
    dt = torch.from_numpy(dout)

    def step():
        out = F.batch_norm(xt, None, None, gt, bt, training=True)
        return torch.autograd.grad(out, (xt, gt, bt), dt)
    return step


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, torch {torch.__version__}, float32, forward + backward, median ms")
    header = f"{'shape':>18} {'staged':>8} {'fused':>8} {'torch@1':>8} {'torch@2':>8} | " \
             f"{'staged/fused':>12} {'fused/torch@1':>13} {'fused/torch@2':>13}"
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        x = rng.standard_normal(shape).astype(np.float32)
        dout = rng.standard_normal(shape).astype(np.float32)
        gamma = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
        beta = rng.standard_normal(shape[1]).astype(np.float32)
        repeats = 30 if x.size < 1e6 else 12
        staged = median_ms(numpy_step(batchnorm_backward, x, gamma, beta, dout), repeats)
        fused = median_ms(numpy_step(batchnorm_backward_fused, x, gamma, beta, dout), repeats)
        native = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            native[threads] = median_ms(torch_step(x, gamma, beta, dout), repeats)
        print(f"{str(shape):>18} {staged:8.2f} {fused:8.2f} {native[1]:8.2f} {native[2]:8.2f} | "
              f"{staged / fused:12.2f} {fused / native[1]:13.2f} {fused / native[2]:13.2f}")


if __name__ == "__main__":
    main()
