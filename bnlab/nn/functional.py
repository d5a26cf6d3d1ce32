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

evaluated as ``dx = a*dy + b*xc + c`` with per-channel coefficients (``xc = x - mean``).

Statistics use two passes: the mean first, then the sum of squares of the centred input ``xc``. The one-pass
E[x^2] - E[x]^2 cancels catastrophically in float32 once |mean| is large compared with the spread.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from bnlab.nn._checks import check_batch_norm_arguments
from bnlab.nn._reductions import channel_dot, channel_rows, channel_sum, channel_sum_of_squares

__all__ = ["BatchNormFunction", "batch_norm"]


def _as_rows(vector: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C, 1), to broadcast against a (N, C, L) batch."""
    return vector.view(1, -1, 1)


@torch.no_grad()
def _update_running_stats(
    running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor, unbiased_var: torch.Tensor,
    momentum: float,
) -> None:
    """running = (1 - momentum) * running + momentum * batch_stat, in place (PyTorch's convention)."""
    running_mean.mul_(1.0 - momentum).add_(mean, alpha=momentum)
    running_var.mul_(1.0 - momentum).add_(unbiased_var, alpha=momentum)


class BatchNormFunction(torch.autograd.Function):
    """Batch norm as an ``autograd.Function`` whose backward is the closed-form gradient.

    ``BatchNormFunction.apply(x, running_mean, running_var, weight, bias, training, momentum, eps)``, arguments
    as :func:`batch_norm` (which checks them; ``apply`` does not). Returns the normalized batch, shape of x.
    Gradients flow to x, weight and bias; the running statistics are buffers and get none.
    """

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps):  # noqa: D102
        rows = channel_rows(x)  # (N, C, L)
        if training:
            m = rows.shape[0] * rows.shape[2]
            mean = channel_sum(rows).div_(m)
            xc = rows - _as_rows(mean)  # saved for backward: the centred input, not x
            sum_sq = channel_sum_of_squares(xc)
            invstd = torch.rsqrt(sum_sq / m + eps)  # biased variance inside: divide by m
            if running_mean is not None:
                _update_running_stats(running_mean, running_var, mean, sum_sq / (m - 1), momentum)
            scale = invstd if weight is None else weight * invstd
            centre = xc
        else:
            invstd = torch.rsqrt(running_var + eps)
            scale = invstd if weight is None else weight * invstd
            centre = rows
            # Fold the running mean into the shift: out = x * scale + (bias - running_mean * scale).
            shift = -running_mean * scale if bias is None else torch.addcmul(bias, running_mean, scale, value=-1)
            bias = shift
            xc = None

        if bias is None:
            out = torch.mul(centre, _as_rows(scale))
        else:
            out = torch.addcmul(_as_rows(bias), centre, _as_rows(scale))

        ctx.training = training
        ctx.has_weight = weight is not None
        if training:
            ctx.save_for_backward(xc, invstd, weight)
        else:
            ctx.save_for_backward(x, invstd, weight, running_mean)
        return out.view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        need_x, need_weight, need_bias = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        dy = channel_rows(grad_out)  # (N, C, L)
        grad_x = grad_weight = grad_bias = None

        if ctx.training:
            xc, invstd, weight = ctx.saved_tensors
            m = dy.shape[0] * dy.shape[2]
            dx = torch.empty_like(dy) if need_x else None
            sum_dy = channel_sum(dy)  # dbeta
            # sum(dy * xhat) = invstd * sum(dy * xc); the product goes into dx's buffer, overwritten below.
            sum_dy_xhat = channel_dot(dy, xc, scratch=dx).mul_(invstd)  # dgamma
            if need_x:
                a = invstd if weight is None else weight * invstd  # gamma / sqrt(var + eps)
                # dx = a * (dy - mean(dy) - xhat * mean(dy * xhat)), with xhat = xc * invstd:
                coef_xc = a * invstd * sum_dy_xhat / (-m)
                shift = a * sum_dy / (-m)
                torch.addcmul(_as_rows(shift), dy, _as_rows(a), out=dx)
                dx.addcmul_(xc, _as_rows(coef_xc))
                grad_x = dx.view(grad_out.shape)
        else:
            x, invstd, weight, running_mean = ctx.saved_tensors
            sum_dy = channel_sum(dy) if need_bias else None
            if need_x:  # a fixed affine map: dx = dy * gamma / sqrt(running_var + eps)
                a = invstd if weight is None else weight * invstd
                grad_x = torch.mul(dy, _as_rows(a)).view(grad_out.shape)
            sum_dy_xhat = None
            if need_weight:  # xhat = (x - running_mean) * invstd
                sum_dy_xhat = channel_dot(dy, channel_rows(x) - _as_rows(running_mean)).mul_(invstd)

        if ctx.has_weight and need_weight:
            grad_weight = sum_dy_xhat
        if need_bias:
            grad_bias = sum_dy
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
        The normalized batch, same shape and dtype as ``x`` (contiguous).

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
