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


def time_batchnorm_implementations(
    shape: tuple[int, ...], repeats: int = 10, seed: int = 0, backward_only: bool = False
) -> dict[str, float]:
    """Median ms of float32 training-mode batch norm: numpy staged, numpy fused, and torch's native kernel.

    With ``backward_only`` the forward runs once outside the timed region and only the backward is timed
    (torch's via ``autograd.grad`` on a retained graph); otherwise each timed call is forward + backward.
    Returns ``{"numpy staged": ms, "numpy fused": ms, "torch native": ms}``, torch at whatever thread count is
    set (``bnlab.notebook.setup`` pins it to 1).
    """
    import torch
    import torch.nn.functional as F

    from bnlab.functional import batchnorm_backward, batchnorm_backward_fused, batchnorm_forward

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    beta = rng.standard_normal(shape[1]).astype(np.float32)
    xt, gt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, gamma, beta))
    dt = torch.from_numpy(dout)
    _, cache = batchnorm_forward(x, gamma, beta)
    graph = F.batch_norm(xt, None, None, gt, bt, training=True)

    def numpy_step(backward):
        if backward_only:
            return lambda: backward(dout, cache)
        return lambda: backward(dout, batchnorm_forward(x, gamma, beta)[1])

    def torch_step():
        out = graph if backward_only else F.batch_norm(xt, None, None, gt, bt, training=True)
        return torch.autograd.grad(out, (xt, gt, bt), dt, retain_graph=backward_only)

    return {
        "numpy staged": median_ms(numpy_step(batchnorm_backward), repeats),
        "numpy fused": median_ms(numpy_step(batchnorm_backward_fused), repeats),
        "torch native": median_ms(torch_step, repeats),
    }


def time_torch_batch_norms(shape: tuple[int, ...], repeats: int = 10, seed: int = 0) -> dict[str, float]:
    """Median ms of one float32 training-mode forward + backward: ``bnlab.nn.batch_norm`` vs torch's kernel.

    Returns ``{"bnlab.nn (Python, closed form)": ms, "torch native (C++)": ms}`` at the current thread count.
    """
    import torch
    import torch.nn.functional as F

    from bnlab.nn import batch_norm

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator).requires_grad_()
    weight = (torch.rand(shape[1], generator=generator) + 0.5).requires_grad_()
    bias = torch.randn(shape[1], generator=generator).requires_grad_()
    upstream = torch.randn(shape, generator=generator)

    def step(function):
        def run():
            out = function(x, None, None, weight, bias, training=True)
            return torch.autograd.grad(out, (x, weight, bias), upstream)
        return run

    return {"bnlab.nn (Python, closed form)": median_ms(step(batch_norm), repeats),
            "torch native (C++)": median_ms(step(F.batch_norm), repeats)}
