"""Batch norm done right, and done in the ways learners often get wrong, for side-by-side demos.

:func:`normalize` computes ``xhat`` per channel (axis 1) with switches for the classic mistakes: eps outside the
square root, the unbiased variance in the training forward, and single-pass statistics. With every switch off
it equals the ``xhat`` of :func:`bnlab.functional.batchnorm_forward`.
"""

from __future__ import annotations

import numpy as np

from bnlab._channels import as_channel, reduction_axes
from bnlab._validation import check_batch_input, check_eps

__all__ = ["backward_with_constant_statistics", "normalize", "one_pass_variance", "output_std_far_from_zero",
           "two_pass_variance"]


def two_pass_variance(x: np.ndarray, ddof: int = 0) -> np.ndarray:
    """Per-channel variance of x (N, C, *spatial) in x's dtype: first the mean, then mean squared deviation.

    Returns shape (C,).
    """
    x = check_batch_input(x)
    axes = reduction_axes(x.ndim)
    m = x.size // x.shape[1]
    mean = x.mean(axis=axes, keepdims=True)
    return ((x - mean) ** 2).sum(axis=axes) / x.dtype.type(m - ddof)


def one_pass_variance(x: np.ndarray, ddof: int = 0) -> np.ndarray:
    """Per-channel variance as E[x^2] - E[x]^2 in x's dtype: one pass, but it cancels catastrophically.

    When the mean is large compared with the spread both terms are huge and nearly equal, so their difference
    keeps only the rounding error: in float32 it can even come out negative. Returns shape (C,).
    """
    x = check_batch_input(x)
    axes = reduction_axes(x.ndim)
    m = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    mean_sq = (x * x).mean(axis=axes)
    return (mean_sq - mean * mean) * x.dtype.type(m / (m - ddof))


def normalize(
    x: np.ndarray,
    eps: float = 1e-5,
    *,
    eps_inside_sqrt: bool = True,
    unbiased: bool = False,
    one_pass: bool = False,
) -> np.ndarray:
    """Per-channel normalized input xhat of x (N, C, *spatial), the right way unless a switch says otherwise.

    Args:
        eps: > 0.
        eps_inside_sqrt: True for ``(x - mu) / sqrt(var + eps)``; False for the mistake ``/ (sqrt(var) + eps)``.
        unbiased: use the m - 1 variance (a mistake in the training forward; right only for running_var).
        one_pass: compute the variance as E[x^2] - E[x]^2 (numerically fragile).

    Returns:
        xhat, shape and dtype of x. A negative one-pass variance gives NaN, as it would in a real layer.
    """
    x = check_batch_input(x)
    eps = check_eps(eps)
    ddof = 1 if unbiased else 0
    var = one_pass_variance(x, ddof) if one_pass else two_pass_variance(x, ddof)
    mean = x.mean(axis=reduction_axes(x.ndim))
    with np.errstate(invalid="ignore"):
        std = np.sqrt(var + eps) if eps_inside_sqrt else np.sqrt(var) + eps
    return (x - as_channel(mean, x.ndim)) / as_channel(std.astype(x.dtype), x.ndim)


def output_std_far_from_zero(rows: int = 1_000_000, offset: float = 1000.0, seed: int = 0) -> dict[str, float]:
    """Output standard deviation of training-mode batch norm on float32 N(offset, 1) data, ours and torch's.

    Both should be 1. Returns ``{"bnlab": std, "torch CPU kernel": std}`` (std measured in float64).
    """
    import torch
    import torch.nn.functional as F

    from bnlab.functional import batchnorm_forward

    x = (np.random.default_rng(seed).standard_normal((rows, 1)) + offset).astype(np.float32)
    ours, _ = batchnorm_forward(x, np.ones(1, np.float32), np.zeros(1, np.float32))
    theirs = F.batch_norm(torch.from_numpy(x), None, None, training=True).numpy()
    return {"bnlab": float(ours.astype(np.float64).std()), "torch CPU kernel": float(theirs.astype(np.float64).std())}


def backward_with_constant_statistics(dout: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A classic wrong backward: treats the batch mean and variance as constants.

    It differentiates only ``out = gamma * (x - mu) * inv + beta`` through its first factor, giving
    ``dx = dout * gamma * inv`` and losing the two branches through mu and var. dgamma and dbeta are right.
    Takes the cache of :func:`bnlab.functional.batchnorm_forward`; returns ``(dx, dgamma, dbeta)``.
    """
    from bnlab.functional import batchnorm_backward_fused

    _, dgamma, dbeta = batchnorm_backward_fused(dout, cache)
    return dout * cache.gamma * cache.inv, dgamma, dbeta
