"""Floating-point behaviour of batch norm's statistics (lecture 2): one pass or two, and a float32 accumulator.

* :func:`two_pass_variance` and :func:`one_pass_variance` compute a channel's variance the careful way (centre,
  then square) and the textbook single-pass way (E[x^2] - E[x]^2), in the input's own dtype.
* :func:`torch_kernel_statistics` reads the mean and variance that torch's CPU kernel actually used for a
  float32 batch far from zero, next to ours and the exact ones, so a lecture can show *why* an output is off.
"""

from __future__ import annotations

import numpy as np

from bnlab._channels import reduction_axes, values_per_channel
from bnlab._validation import check_batch_input

__all__ = ["one_pass_variance", "torch_kernel_statistics", "two_pass_variance"]


def two_pass_variance(x: np.ndarray, ddof: int = 0) -> np.ndarray:
    """Per-channel variance of x (N, C, *spatial) in x's dtype: first the mean, then the mean squared deviation.

    Returns shape (C,).
    """
    x = check_batch_input(x)
    axes = reduction_axes(x.ndim)
    mean = x.mean(axis=axes, keepdims=True)
    return ((x - mean) ** 2).sum(axis=axes) / x.dtype.type(values_per_channel(x.shape) - ddof)


def one_pass_variance(x: np.ndarray, ddof: int = 0) -> np.ndarray:
    """Per-channel variance as E[x^2] - E[x]^2 in x's dtype: one pass, but it cancels catastrophically.

    When the mean is large compared with the spread both terms are huge and nearly equal, so their difference
    keeps only the rounding error: in float32 it can even come out negative. Returns shape (C,).
    """
    x = check_batch_input(x)
    axes = reduction_axes(x.ndim)
    m = values_per_channel(x.shape)
    mean = x.mean(axis=axes)
    mean_sq = (x * x).mean(axis=axes)
    return (mean_sq - mean * mean) * x.dtype.type(m / (m - ddof))


def torch_kernel_statistics(rows: int = 1_000_000, offset: float = 1000.0, seed: int = 0) -> dict[str, dict]:
    """Batch statistics of float32 N(offset, 1) data, shape (rows, 1): exact, bnlab's, and torch's CPU kernel's.

    Returns ``{"exact": {...}, "bnlab": {...}, "torch CPU kernel": {...}}``, each with ``mean``, ``var`` (the
    biased variance the forward normalized with) and ``output_std`` (of the normalized batch; 1 is right), all
    as Python floats. torch's values are the ones its kernel saved for backward (``native_batch_norm``), so
    they are what it really used. The output standard deviation is (nearly) sqrt(true var / var used).
    """
    import torch

    from bnlab.functional import batchnorm_forward

    x64 = np.random.default_rng(seed).standard_normal((rows, 1)) + offset
    x = x64.astype(np.float32)
    exact_mean, exact_var = float(x.astype(np.float64).mean()), float(x.astype(np.float64).var())
    ours, cache = batchnorm_forward(x, np.ones(1, np.float32), np.zeros(1, np.float32))
    out, mean, invstd = torch.ops.aten.native_batch_norm(torch.from_numpy(x), None, None, None, None, True,
                                                         0.0, 1e-5)
    return {
        "exact": {"mean": exact_mean, "var": exact_var, "output_std": (exact_var / (exact_var + 1e-5)) ** 0.5},
        "bnlab": {"mean": float(cache.batch_mean[0]), "var": float(cache.batch_var[0]),
                  "output_std": float(ours.astype(np.float64).std())},
        "torch CPU kernel": {"mean": float(mean[0]), "var": float(1.0 / invstd[0].double() ** 2 - 1e-5),
                             "output_std": float(out.double().std())},
    }
