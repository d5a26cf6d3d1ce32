r"""Batch norm for PyTorch with a hand-written backward: ``batch_norm`` and ``BatchNormFunction``.

:func:`batch_norm` has the signature and semantics of ``torch.nn.functional.batch_norm``:

* ``training=True``: normalize each channel with its batch mean and **biased** variance (divide by m, where
  m = N * prod(spatial) values share a channel). When running statistics are given they are updated in place
  by :func:`bnlab.running_stats.updated_running_stats`, with the **unbiased** variance (m - 1).
* ``training=False``: normalize with the running statistics; the layer is then one affine map per channel.

Its gradient is not autograd's trace of the forward: :class:`BatchNormFunction` implements the closed form
of lecture 4, the same formula as :func:`bnlab.functional.batchnorm_backward_fused` (the numpy version):

.. math::
    dx = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}\Big(m\,dy - \sum dy - \hat x \sum dy\,\hat x\Big),\qquad
    d\gamma = \sum dy\,\hat x,\qquad d\beta = \sum dy .

Statistics take two passes (the mean, then the mean square of the centred input): the one-pass
E[x^2] - E[x]^2 cancels catastrophically in float32 once |mean| is large compared with the spread.

The code is written to be read next to lecture 6, one tensor operation per step. For backward it saves
``xhat``, ``1/std`` and ``gamma`` (one batch-sized tensor), where autograd tracing the same forward would keep
several batch-sized intermediates. Its 19 tensor operations read and write the batch 28 times per forward +
backward, so on large batches it is a few times slower than torch's fused C++ kernel
(``benchmarks/bench_nn_batchnorm.py`` measures the ratio); on the course's MLP batches, such as (128, 100) in
ghost batch norm, per-call overhead dominates either way.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from bnlab.nn._checks import check_batch_norm_arguments
from bnlab.running_stats import updated_running_stats

__all__ = ["BatchNormFunction", "batch_norm"]


def _reduction_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Every dimension but the channel dimension 1: (0,) for (N, C), (0, 2, 3) for (N, C, H, W)."""
    return (0,) + tuple(range(2, x.dim()))


def _per_channel(vector: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (C,) vector viewed as (1, C, 1, ...), so that it broadcasts against x channel by channel."""
    return vector.view((1, -1) + (1,) * (x.dim() - 2))


class BatchNormFunction(torch.autograd.Function):
    """Batch norm as an ``autograd.Function`` whose backward is the closed-form gradient.

    ``BatchNormFunction.apply(x, running_mean, running_var, weight, bias, training, momentum, eps)``, arguments
    as :func:`batch_norm` (which checks them; ``apply`` does not). Returns the normalized batch, shape of x.
    Gradients flow to x, weight and bias; the running statistics are buffers and get none.
    """

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps):  # noqa: D102
        dims = _reduction_dims(x)
        if training:
            mean = x.mean(dims, keepdim=True)  # (1, C, 1, ...)
            xc = x - mean
            var = xc.square().mean(dims, keepdim=True)  # biased: divide by m
            if running_mean is not None:
                m = x.numel() // x.shape[1]
                new_mean, new_var = updated_running_stats(running_mean, running_var, mean.flatten(),
                                                          var.flatten(), m, momentum)
                running_mean.copy_(new_mean)
                running_var.copy_(new_var)
        else:
            xc, var = x - _per_channel(running_mean, x), _per_channel(running_var, x)
        invstd = torch.rsqrt(var + eps)
        xhat = xc * invstd
        out = xhat if weight is None else xhat * _per_channel(weight, x)
        if bias is not None:
            out = out + _per_channel(bias, x)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.training = training
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):  # noqa: D102
        xhat, invstd, weight = ctx.saved_tensors
        dims = _reduction_dims(dy)
        dbeta = dy.sum(dims)  # (C,)
        dgamma = (dy * xhat).sum(dims)  # (C,)
        scale = invstd if weight is None else _per_channel(weight, dy) * invstd  # gamma / std
        if ctx.training:  # the statistics depend on x: the closed form of lecture 4
            m = dy.numel() // dy.shape[1]
            dx = scale / m * (m * dy - _per_channel(dbeta, dy) - xhat * _per_channel(dgamma, dy))
        else:  # running statistics are constants: a fixed affine map
            dx = scale * dy
        needs = ctx.needs_input_grad
        return (dx if needs[0] else None, None, None, dgamma if needs[3] else None, dbeta if needs[4] else None,
                None, None, None)


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Batch normalization over dimension 1, a drop-in for ``torch.nn.functional.batch_norm``.

    Args:
        x: input, shape (N, C) or (N, C, *spatial), floating point.
        running_mean, running_var: (C,) buffers in x's dtype, or None. Needed when ``training=False``.
            With ``training=True`` they are updated in place (unbiased variance) when given.
        weight, bias: (C,) scale gamma and shift beta, or None (gamma = 1, beta = 0).
        training: normalize with batch statistics (True) or with the running statistics (False).
        momentum: weight of this batch in the running statistics, in [0, 1] (PyTorch's convention).
        eps: added to the variance inside the square root; must be > 0 when ``training=True``.

    Returns:
        The normalized batch, same shape and dtype as ``x``.

    Raises:
        ValueError / TypeError naming the expected and the actual value, before anything is updated; with
        batch statistics, one value per channel raises PyTorch's
        ``Expected more than 1 value per channel when training, got input size torch.Size([1, 3])``.

    The backward is :class:`BatchNormFunction`'s closed form (numpy twin:
    :func:`bnlab.functional.batchnorm_backward_fused`); it is not differentiable twice.
    """
    check_batch_norm_arguments(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return BatchNormFunction.apply(x, running_mean, running_var, weight, bias, bool(training), float(momentum),
                                   float(eps))
