"""Wall-clock timing used by the benchmarks and by lecture 4's live comparison: warm-up, then a median."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np


def pin_threads(n: int = 1) -> None:
    """Pin BLAS/OpenMP pools; call before numpy or torch is imported (it sets environment variables)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def median_ms(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def time_batchnorm_implementations(shape: tuple[int, ...], repeats: int = 10, seed: int = 0) -> dict[str, float]:
    """Median ms of one float32 forward + backward for the staged and fused numpy versions and torch's kernel.

    Returns ``{"numpy staged": ms, "numpy fused": ms, "torch native": ms}`` measured in this call, with torch
    at whatever thread count is set (``bnlab.notebook.setup`` pins it to 1).
    """
    import torch
    import torch.nn.functional as F

    from bnlab.functional import batchnorm_backward, batchnorm_backward_fused, batchnorm_forward

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    beta = rng.standard_normal(shape[1]).astype(np.float32)

    def numpy_step(backward):
        def step():
            _, cache = batchnorm_forward(x, gamma, beta)
            return backward(dout, cache)
        return step

    xt, gt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, gamma, beta))
    dt = torch.from_numpy(dout)

    def torch_step():
        out = F.batch_norm(xt, None, None, gt, bt, training=True)
        return torch.autograd.grad(out, (xt, gt, bt), dt)

    return {
        "numpy staged": median_ms(numpy_step(batchnorm_backward), repeats),
        "numpy fused": median_ms(numpy_step(batchnorm_backward_fused), repeats),
        "torch native": median_ms(torch_step, repeats),
    }
