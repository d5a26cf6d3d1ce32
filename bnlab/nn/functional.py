r"""Batch norm for PyTorch with a hand-written backward: ``batch_norm`` and ``BatchNormFunction``.

:func:`batch_norm` has the signature and semantics of ``torch.nn.functional.batch_norm``:

* ``training=True``: normalize each channel with its batch mean and **biased** variance (divide by m, where
  m = N * prod(spatial) values share a channel). When running statistics are given they are updated in place,
  ``running = (1 - momentum) * running + momentum * batch_stat``, with the **unbiased** variance (m - 1).
* ``training=False``: normalize with the running statistics; the layer is then one affine map per channel.

Its gradient is not autograd's trace of the forward: :class:`BatchNormFunction` implements the closed form
of lecture 4, the same formula as :func:`bnlab.functional.batchnorm_backward_fused` (the numpy version):

.. math::
    dx = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}\Big(m\,dy - \sum dy - \hat x \sum dy\,\hat x\Big),\qquad
    d\gamma = \sum dy\,\hat x,\qquad d\beta = \sum dy,

evaluated as ``dx = scale*dy + coef*x + shift`` with per-channel coefficients
(``scale = gamma / sqrt(var + eps)``): two passes over the batch once the two sums are known.

Statistics use two passes: the mean first, then the sum of squares of the centred input ``xc = x - mean``. The
one-pass E[x^2] - E[x]^2 cancels catastrophically in float32 once |mean| is large compared with the spread.

Memory: like torch, only x and per-channel vectors are saved for backward (``xc`` is recomputed there into
dx's buffer), and each direction allocates one batch-sized tensor, its result. On the course machines a
fresh batch-sized tensor page-faults on first touch at about the cost of a pass over it, so temporaries are
avoided: ``xc`` lives in the output's buffer during the forward, and in dx's during the backward.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from bnlab.nn._checks import check_batch_norm_arguments
from bnlab.nn._reductions import (
    as_channel,
    channel_layout,
    channel_shape,
    channel_sum,
    channel_sum_of_squares_,
)

__all__ = ["BatchNormFunction", "batch_norm"]


@torch.no_grad()
def _update_running_stats(
    running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor, unbiased_var: torch.Tensor,
    momentum: float,
) -> None:
    """running = (1 - momentum) * running + momentum * batch_stat, in place (PyTorch's convention)."""
    running_mean.mul_(1.0 - momentum).add_(mean.view(-1), alpha=momentum)
    running_var.mul_(1.0 - momentum).add_(unbiased_var.view(-1), alpha=momentum)


class BatchNormFunction(torch.autograd.Function):
    """Batch norm as an ``autograd.Function`` whose backward is the closed-form gradient.

    ``BatchNormFunction.apply(x, running_mean, running_var, weight, bias, training, momentum, eps)``, arguments
    as :func:`batch_norm` (which checks them; ``apply`` does not). Returns the normalized batch, shape of x.
    Gradients flow to x, weight and bias; the running statistics are buffers and get none.

    Inside, x is used as (N, C) or as a (N, C, L) view, and every per-channel quantity keeps shape (1, C) or
    (1, C, 1) so it broadcasts directly (see :mod:`bnlab.nn._reductions`). Names follow the numpy course code:
    ``xc`` (centred input), ``invstd`` = 1 / sqrt(var + eps), ``scale`` = gamma * invstd.
    """

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps):  # noqa: D102
        rows, dims = channel_layout(x)
        shape = channel_shape(rows)
        out = torch.empty_like(rows)
        if training:
            m = rows.numel() // rows.shape[1]  # values per channel
            mean = channel_sum(rows, dims).div_(m)  # pass 1
            xc = torch.sub(rows, mean, out=out)  # pass 2: the centred input, in out's buffer for now
            # Pass 3, the second pass of the variance: long rows keep xc, short ones square it in place.
            sum_sq, xc_kept = channel_sum_of_squares_(xc, dims)
            var = sum_sq.div_(m)  # biased: divide by m
            if running_mean is not None:
                _update_running_stats(running_mean, running_var, mean, var * (m / (m - 1)), momentum)  # unbiased
            invstd = var.add_(eps).rsqrt_()
        else:
            mean = as_channel(running_mean, shape)
            invstd = torch.rsqrt(as_channel(running_var, shape) + eps)
            xc_kept = False
        scale = invstd if weight is None else as_channel(weight, shape) * invstd

        # Last pass: out = xc * scale + bias, or, when xc is gone, x * scale + (bias - mean * scale).
        if xc_kept:
            if bias is None:
                xc.mul_(scale)
            else:
                torch.addcmul(as_channel(bias, shape), xc, scale, out=out)
        else:
            shift = torch.mul(mean, scale).neg_() if bias is None else torch.addcmul(as_channel(bias, shape), mean,
                                                                                        scale, value=-1)
            torch.addcmul(shift, rows, scale, out=out)

        ctx.save_for_backward(x, mean, invstd, scale)
        ctx.training = training
        return out if out.shape == x.shape else out.view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        need_x, need_weight, need_bias = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        x, mean, invstd, scale = ctx.saved_tensors
        rows, dims = channel_layout(x)
        dy, _ = channel_layout(grad_out)
        grad_x = grad_weight = grad_bias = None
        # The batch statistics depend on x (training) or they are constants (eval: a fixed affine map).
        through_statistics = ctx.training and need_x

        sum_dy = channel_sum(dy, dims) if (need_bias or through_statistics) else None  # = dbeta
        sum_dy_xhat = None
        if need_weight or through_statistics:  # = dgamma = invstd * sum(dy * (x - mean))
            dx = torch.empty_like(dy)
            xc = torch.sub(rows, mean, out=dx)
            sum_dy_xhat = channel_sum(xc.mul_(dy), dims).mul_(invstd)
        if through_statistics:
            # dx = scale * (dy - sum(dy)/m - xhat * sum(dy*xhat)/m), xhat = (x - mean) * invstd, evaluated as
            # dx = scale*dy + coef*x + shift (dx's buffer held the products; it is overwritten now).
            neg_scale_over_m = torch.mul(scale, -1.0 / (dy.numel() // dy.shape[1]))
            coef = torch.mul(sum_dy_xhat, invstd).mul_(neg_scale_over_m)
            shift = torch.mul(sum_dy, neg_scale_over_m).sub_(coef * mean)
            torch.addcmul(shift, dy, scale, out=dx)
            dx.addcmul_(rows, coef)
            grad_x = dx.view(grad_out.shape)
        elif need_x:
            grad_x = torch.mul(dy, scale).view(grad_out.shape)

        if need_weight:
            grad_weight = sum_dy_xhat.view(-1) if sum_dy_xhat.dim() > 1 else sum_dy_xhat
        if need_bias:
            grad_bias = sum_dy.view(-1) if sum_dy.dim() > 1 else sum_dy
        return grad_x, None, None, grad_weight, grad_bias, None, None, None


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
        The normalized batch, same shape and dtype as ``x``. Inputs with spatial dimensions come back
        contiguous in (N, C, *spatial) order, also for channels_last input (torch keeps channels_last).

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
