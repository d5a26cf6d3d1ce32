r"""Batch normalization in numpy, written to be read next to the course's derivations.

Layout and conventions (the same as ``torch.nn.functional.batch_norm``):

* ``x`` has shape (N, C) or (N, C, *spatial). Each channel c has its own statistics, computed over every axis
  but 1, so a channel pools m = N * prod(spatial) values.
* Training mode normalizes with the batch mean and the **biased** variance (divide by m, Algorithm 1 of
  Ioffe & Szegedy 2015): ``xhat = (x - mu) / sqrt(var + eps)``, ``out = gamma * xhat + beta``.
* Inference mode uses stored running statistics instead (Algorithm 2), which makes the layer one affine map
  per channel.
* gamma and beta are (C,) vectors; they are cast to ``x``'s dtype, and every output has ``x``'s dtype.

Statistics are computed in two passes (mean, then the variance of the centred data), each accumulated in
float64. The textbook one-pass formula E[x^2] - E[x]^2 cancels catastrophically in float32 once the mean is
large compared with the spread, and a long float32 sum drifts; lecture 2 shows both failing.

The forward's intermediate values carry the names used throughout the course: ``mu``, ``xc`` (centred input),
``var``, ``std``, ``inv`` (1/std) and ``xhat``. ``batchnorm_backward`` walks those steps in reverse with the
same names, so the two functions can be read side by side. This module is the course's reference: plain numpy,
one line per step, no speed tricks. Arguments are checked once, by the public functions; the numpy layer
(:mod:`bnlab.layers`) checks its own input and calls the unchecked steps (``_train_forward``,
``_inference_forward``) directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlab._channels import as_channel, channel_sum, reduction_axes, values_per_channel
from bnlab._validation import (
    check_batch_input,
    check_channel_vector,
    check_eps,
    check_int,
    check_more_than_one_value_per_channel,
    check_upstream_gradient,
)

__all__ = [
    "BatchNormCache",
    "GroupNormCache",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_fused",
    "batchnorm_inference",
    "layernorm_forward",
    "layernorm_backward",
    "groupnorm_forward",
    "groupnorm_backward",
]


@dataclass(frozen=True)
class BatchNormCache:
    """Everything the backward passes need from a training-mode forward.

    Per-channel quantities are stored in broadcast shape (1, C, 1, ...), so they combine with the batch
    directly; ``batch_mean`` and ``batch_var`` give them back as (C,) vectors.
    """

    x: np.ndarray  # input, (N, C, *spatial)
    mu: np.ndarray  # batch mean, (1, C, 1, ...)
    xc: np.ndarray  # centred input x - mu, like x
    var: np.ndarray  # biased batch variance mean(xc**2), (1, C, 1, ...)
    std: np.ndarray  # sqrt(var + eps), (1, C, 1, ...)
    inv: np.ndarray  # 1 / std, (1, C, 1, ...)
    xhat: np.ndarray  # normalized input xc * inv, like x
    gamma: np.ndarray  # scale, (1, C, 1, ...)
    eps: float

    @property
    def batch_mean(self) -> np.ndarray:
        """Per-channel batch mean, shape (C,)."""
        return self.mu.reshape(-1)

    @property
    def batch_var(self) -> np.ndarray:
        """Per-channel biased batch variance, shape (C,)."""
        return self.var.reshape(-1)

    @property
    def m(self) -> int:
        """Number of values per channel, N * prod(spatial)."""
        return values_per_channel(self.x.shape)


def _check_arguments(x, gamma, beta, eps) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The public functions' one check: x (N, C, ...) float; gamma, beta (C,) cast to x's dtype; eps > 0."""
    x = check_batch_input(x)
    num_channels = x.shape[1]
    gamma = check_channel_vector(gamma, "gamma", num_channels).astype(x.dtype, copy=False)
    beta = check_channel_vector(beta, "beta", num_channels).astype(x.dtype, copy=False)
    return x, gamma, beta, check_eps(eps)


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode batch norm (Algorithm 1): normalize each channel with its batch statistics.

    Args:
        x: input, shape (N, C) or (N, C, *spatial), float32 or float64. At least 2 values per channel.
        gamma: scale, shape (C,).
        beta: shift, shape (C,).
        eps: added to the variance inside the square root, > 0.

    Returns:
        out: ``gamma * (x - mu) / sqrt(var + eps) + beta``, shape and dtype of ``x``.
        cache: a :class:`BatchNormCache` for :func:`batchnorm_backward` / :func:`batchnorm_backward_fused`.
    """
    x, gamma, beta, eps = _check_arguments(x, gamma, beta, eps)
    check_more_than_one_value_per_channel(x.shape)
    return _train_forward(x, gamma, beta, eps)


def _train_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                   eps: float) -> tuple[np.ndarray, BatchNormCache]:
    """Algorithm 1's seven steps, the body of :func:`batchnorm_forward` once it has checked its arguments.

    gamma and beta arrive as (C,) vectors in x's dtype. Returns the output (x's shape) and a
    :class:`BatchNormCache` holding every intermediate value under the name it has here.
    """
    axes = reduction_axes(x.ndim)  # (0,) for (N, C); (0, 2, 3) for (N, C, H, W)
    gamma, beta = as_channel(gamma, x.ndim), as_channel(beta, x.ndim)  # (1, C, 1, ...): broadcast per channel

    # Step 1: batch mean per channel (summed in float64: a long float32 sum drifts).
    mu = x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype)
    # Step 2: centre the batch.
    xc = x - mu
    # Step 3: biased variance -- divide by m, not m - 1, as in the paper's Algorithm 1.
    var = (xc * xc).mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype)
    # Step 4: standard deviation; eps sits inside the square root.
    std = np.sqrt(var + eps)
    # Step 5: its reciprocal, so that step 6 multiplies instead of divides.
    inv = 1 / std
    # Step 6: normalize.
    xhat = xc * inv
    # Step 7: scale and shift. gamma = std, beta = mu would give back x -- for this batch only.
    out = gamma * xhat + beta

    cache = BatchNormCache(x=x, mu=mu, xc=xc, var=var, std=std, inv=inv, xhat=xhat, gamma=gamma, eps=eps)
    return out, cache


def batchnorm_backward(dout: np.ndarray, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Staged backward: the forward's steps in reverse, one node of the computational graph at a time.

    Every line applies one local derivative (written in the comment) to the gradient flowing in from above.
    A node that feeds two others (``xc`` feeds both ``xhat`` and ``var``; ``x`` feeds both ``xc`` and ``mu``)
    receives the sum of the gradients of both branches. A per-channel value (mu, var, std, inv, gamma, beta)
    was broadcast over the batch in the forward, so its gradient is a sum over the batch.

    Args:
        dout: upstream gradient dL/dout, shape of the forward's input.
        cache: from :func:`batchnorm_forward`.

    Returns:
        dx: dL/dx, shape of x. dgamma, dbeta: dL/dgamma and dL/dbeta, shape (C,).
    """
    x, xc, std, inv, xhat, gamma = cache.x, cache.xc, cache.std, cache.inv, cache.xhat, cache.gamma
    dout = check_upstream_gradient(dout, x)
    axes, m = reduction_axes(x.ndim), cache.m

    # Step 7, out = gamma * xhat + beta.    d out/d beta = 1, d out/d gamma = xhat, d out/d xhat = gamma.
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * gamma
    # Step 6, xhat = xc * inv.              d xhat/d inv = xc (summed: inv is per channel), d xhat/d xc = inv.
    dinv = (dxhat * xc).sum(axis=axes, keepdims=True)
    dxc = dxhat * inv  # first of the two branches into xc
    # Step 5, inv = 1 / std.                d inv/d std = -1 / std**2.
    dstd = -dinv / std**2
    # Step 4, std = sqrt(var + eps).        d std/d var = 1 / (2 * std).
    dvar = dstd / (2 * std)
    # Step 3, var = sum(xc**2) / m.         d var/d xc = 2 * xc / m: the second branch into xc.
    dxc = dxc + (2 / m) * xc * dvar
    # Step 2, xc = x - mu.                  d xc/d x = 1, d xc/d mu = -1 (summed: mu is per channel).
    dmu = -dxc.sum(axis=axes, keepdims=True)
    dx = dxc  # first branch into x
    # Step 1, mu = sum(x) / m.              d mu/d x = 1 / m: the second branch into x.
    dx = dx + dmu / m
    return dx, dgamma, dbeta


def batchnorm_backward_fused(
    dout: np.ndarray, cache: BatchNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Closed-form backward (lecture 4): two per-channel sums, then one expression for dx.

    With per-channel sums over the m values of a channel,

    .. math::
        \frac{\partial L}{\partial x} = \frac{\gamma}{m \sqrt{\sigma^2 + \epsilon}}
            \Big(m\,\delta - \sum \delta - \hat x \sum \delta \hat x\Big),
        \qquad \frac{\partial L}{\partial \gamma} = \sum \delta \hat x,
        \qquad \frac{\partial L}{\partial \beta} = \sum \delta,

    where :math:`\delta` is ``dout``. The two sums are dbeta and dgamma, which the backward needs anyway.

    Args and returns as :func:`batchnorm_backward`.
    """
    x, xhat, inv, gamma = cache.x, cache.xhat, cache.inv, cache.gamma
    dout = check_upstream_gradient(dout, x)
    m = cache.m

    dbeta = channel_sum(dout)
    dgamma = channel_sum(dout * xhat)
    dx = (gamma * inv / m) * (m * dout - as_channel(dbeta, x.ndim) - xhat * as_channel(dgamma, x.ndim))
    return dx, dgamma, dbeta


def batchnorm_inference(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = 1e-5,
) -> np.ndarray:
    """Inference-mode batch norm (Algorithm 2): normalize with stored population statistics.

    The result for one example never depends on the rest of the batch, so a batch of one is fine.
    It is a single affine map per channel: ``out = x * scale + shift`` with
    ``scale = gamma / sqrt(running_var + eps)`` and ``shift = beta - running_mean * scale``.

    Args:
        x: input, shape (N, C) or (N, C, *spatial), float32 or float64.
        gamma, beta, running_mean, running_var: shape (C,); running_var must be non-negative.
        eps: > 0.

    Returns:
        out: shape and dtype of ``x``.
    """
    x, gamma, beta, eps = _check_arguments(x, gamma, beta, eps)
    num_channels = x.shape[1]
    running_mean = check_channel_vector(running_mean, "running_mean", num_channels)
    running_var = check_channel_vector(running_var, "running_var", num_channels)
    if np.any(running_var < 0):
        raise ValueError(f"running_var must be non-negative, got minimum {running_var.min()!r}")
    return _inference_forward(x, gamma, beta, running_mean, running_var, eps)


def _inference_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                       running_var: np.ndarray, eps: float) -> np.ndarray:
    """:func:`batchnorm_inference` on checked arguments."""
    scale = (gamma / np.sqrt(running_var + eps)).astype(x.dtype)
    shift = (beta - running_mean * scale).astype(x.dtype)
    return x * as_channel(scale, x.ndim) + as_channel(shift, x.ndim)


# ----------------------------------------------------------------------------------------------------------
# Layer norm and group norm, for contrast: the same normalization, but over each example's own features.
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupNormCache:
    """What :func:`groupnorm_backward` needs: normalized input, per-(example, group) 1/std, gamma."""

    xhat: np.ndarray  # (N, C, *spatial)
    inv: np.ndarray  # (N, G, 1)
    gamma: np.ndarray  # (1, C, 1, ...)
    num_groups: int


def groupnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, num_groups: int, eps: float = 1e-5
) -> tuple[np.ndarray, GroupNormCache]:
    """Group norm (Wu & He 2018): statistics per example over each group of C/G channels and all positions.

    Matches ``torch.nn.functional.group_norm``. Nothing is shared across the batch, so the output does not
    depend on the batch size and training and inference are the same computation.

    Args:
        x: input, shape (N, C) or (N, C, *spatial), float32 or float64.
        gamma, beta: per-channel scale and shift, shape (C,).
        num_groups: G, a divisor of C.
        eps: > 0.

    Returns:
        out: shape of x. cache: for :func:`groupnorm_backward`.
    """
    x, gamma, beta, eps = _check_arguments(x, gamma, beta, eps)
    num_channels = x.shape[1]
    divisor = f"a positive divisor of the channel count {num_channels}"
    num_groups = check_int(num_groups, "num_groups", 1, kind=divisor)
    if num_channels % num_groups:
        raise ValueError(f"num_groups must be {divisor}, got {num_groups!r}")

    grouped = x.reshape(x.shape[0], num_groups, -1)  # (N, G, C/G * prod(spatial))
    mu = grouped.mean(axis=2, keepdims=True, dtype=np.float64).astype(x.dtype)
    xc = grouped - mu
    var = np.mean(xc * xc, axis=2, keepdims=True)
    inv = 1.0 / np.sqrt(var + x.dtype.type(eps))
    xhat = (xc * inv).reshape(x.shape)
    out = xhat * as_channel(gamma, x.ndim) + as_channel(beta, x.ndim)
    return out, GroupNormCache(xhat=xhat, inv=inv, gamma=as_channel(gamma, x.ndim), num_groups=num_groups)


def groupnorm_backward(dout: np.ndarray, cache: GroupNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form backward of :func:`groupnorm_forward`: the batch norm formula, applied per (example, group).

    Returns:
        dx: shape of x. dgamma, dbeta: shape (C,).
    """
    xhat = cache.xhat
    dout = check_upstream_gradient(dout, xhat)
    dbeta = channel_sum(dout)
    dgamma = channel_sum(dout * xhat)

    grouped_shape = (xhat.shape[0], cache.num_groups, -1)
    dxhat = (dout * cache.gamma).reshape(grouped_shape)
    xhat_g = xhat.reshape(grouped_shape)
    dx = cache.inv * (dxhat - dxhat.mean(axis=2, keepdims=True)
                      - xhat_g * np.mean(dxhat * xhat_g, axis=2, keepdims=True))
    return dx.reshape(xhat.shape), dgamma, dbeta


def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, GroupNormCache]:
    """Layer norm (Ba et al. 2016): statistics per example over all of its features, per-channel gamma/beta.

    This is group norm with a single group. For (N, C) input it equals ``torch.nn.functional.layer_norm(x,
    (C,), gamma, beta)``; for (N, C, *spatial) it equals ``torch.nn.GroupNorm(1, C)``.

    Returns:
        out: shape of x. cache: for :func:`layernorm_backward`.
    """
    return groupnorm_forward(x, gamma, beta, num_groups=1, eps=eps)


def layernorm_backward(dout: np.ndarray, cache: GroupNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of :func:`layernorm_forward`: ``(dx, dgamma, dbeta)``, shapes as the input and (C,)."""
    return groupnorm_backward(dout, cache)
