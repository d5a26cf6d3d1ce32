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


def compare_ms(functions: dict[str, Callable[[], object]], repeats: int = 10, rounds: int = 3) -> dict[str, float]:
    """Best-of-``rounds`` median ms per function, the functions interleaved round by round.

    Interleaving exposes every function to the same background load, and the best median of a few rounds
    discards rounds that another process disturbed: ratios between the results are what this is for.
    """
    best = {name: float("inf") for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            best[name] = min(best[name], median_ms(fn, repeats, warmup=1))
    return best


def time_batchnorm_implementations(
    shape: tuple[int, ...], repeats: int = 10, seed: int = 0, backward_only: bool = False, rounds: int = 3
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

    return compare_ms({
        "numpy staged": numpy_step(batchnorm_backward),
        "numpy fused": numpy_step(batchnorm_backward_fused),
        "torch native": torch_step,
    }, repeats, rounds)


def time_torch_batch_norms(shape: tuple[int, ...], repeats: int = 10, seed: int = 0, rounds: int = 3) -> dict[str, float]:
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

    return compare_ms({"bnlab.nn (Python, closed form)": step(batch_norm),
                       "torch native (C++)": step(F.batch_norm)}, repeats, rounds)
