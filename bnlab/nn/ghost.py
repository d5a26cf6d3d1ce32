"""Ghost batch norm (Hoffer et al. 2017): normalize with statistics of sub-batches of the SGD batch.

The normalization batch size (NBS) becomes a knob separate from the SGD batch size: an SGD batch of N examples
is split along dimension 0 into N / g consecutive *ghost batches* of g = ``ghost_batch_size`` examples, and each
is normalized with its own mean and biased variance. Lecture 8 uses it to show how BN degrades at small NBS.

Rules (decided here, tested in tests/test_nn_ghost.py):

* Training needs N divisible by g, and more than one value per channel in each ghost batch (g * prod(spatial)
  > 1); anything else raises a ValueError saying what was expected and what came. A batch of exactly g
  examples is ordinary batch norm.
* Running statistics: **one update per forward call** (per SGD step), with the equal-weight average over the
  ghost batches of their means and of their **unbiased** variances (m = g * prod(spatial) values each):
  ``running = (1 - momentum) * running + momentum * mean_over_ghosts(stat)``; ``num_batches_tracked`` grows by
  1. This is Algorithm 2 of Ioffe & Szegedy applied to the normalization batches (E[mu_B], m/(m-1) E[var_B]),
  and keeps momentum's meaning per SGD step, as with ordinary BN. (Looping a ``BatchNorm`` over the ghost
  batches would instead apply N/g updates per step, so the same momentum would forget N/g times faster.)
* Eval mode with running statistics is ordinary batch norm. Whenever batch statistics are used (training, or
  ``track_running_stats=False``), they are ghost-batch statistics.

Implementation: the ghost batches become extra channels. (N, C, L) is viewed as (k, g, C, L), transposed to
(g, k*C, L), and normalized by one :class:`BatchNormFunction` call with weight and bias repeated k times (autograd sums
the repeated gradients back). The running statistics take one :func:`bnlab.running_stats.updated_running_stats`
step with the ghost batches' average mean and average biased variance (its unbiased correction is linear, so
this is the average of the ghost batches' unbiased variances).
"""

from __future__ import annotations

import torch

from bnlab._validation import check_int, describe_shape
from bnlab.nn._checks import check_batch_norm_arguments, check_input_tensor
from bnlab.nn.functional import BatchNormFunction
from bnlab.nn.modules import BatchNorm1d, BatchNorm2d
from bnlab.running_stats import updated_running_stats

__all__ = ["GhostBatchNorm1d", "GhostBatchNorm2d", "ghost_batch_norm"]


def check_ghost_batch(x: torch.Tensor, ghost_batch_size: int) -> None:
    """x's batch must split into ghost batches of ``ghost_batch_size`` with > 1 value per channel each."""
    batch = x.shape[0]
    if batch % ghost_batch_size:
        raise ValueError(f"ghost batch norm needs a batch size divisible by ghost_batch_size={ghost_batch_size}, "
                         f"got batch size {batch} (input shape {describe_shape(x.shape)})")
    values_per_channel = ghost_batch_size * (x.numel() // max(batch * x.shape[1], 1))
    if values_per_channel <= 1:
        raise ValueError(f"ghost batch norm needs more than 1 value per channel in each ghost batch of "
                         f"{ghost_batch_size} examples, got {values_per_channel} "
                         f"(input shape {describe_shape(x.shape)}); use ghost_batch_size >= 2")


def _check_ghost_batch_size(ghost_batch_size: object) -> int:
    return check_int(ghost_batch_size, "ghost_batch_size", 1,
                     kind="a positive integer (examples per normalization batch)")


def ghost_batch_norm(
    x: torch.Tensor,
    ghost_batch_size: int,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Training-mode batch norm with statistics per ghost batch of ``ghost_batch_size`` consecutive examples.

    Args:
        x: (N, C) or (N, C, *spatial) with N divisible by ``ghost_batch_size``.
        ghost_batch_size: g, examples per normalization batch.
        running_mean, running_var: (C,) buffers updated in place once (see the module docstring), or None.
        weight, bias: (C,) or None. momentum: in [0, 1]. eps: > 0.

    Returns:
        Tensor of x's shape: each ghost batch ``x[j*g:(j+1)*g]`` normalized with its own statistics.
    """
    ghost_batch_size = _check_ghost_batch_size(ghost_batch_size)
    check_input_tensor(x)
    check_batch_norm_arguments(x, running_mean, running_var, weight, bias, True, momentum, eps)
    check_ghost_batch(x, ghost_batch_size)
    return _ghost_batch_norm(x, ghost_batch_size, running_mean, running_var, weight, bias, float(momentum),
                             float(eps))


def _ghost_batch_norm(x: torch.Tensor, ghost_batch_size: int, running_mean: torch.Tensor | None,
                      running_var: torch.Tensor | None, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      momentum: float, eps: float) -> torch.Tensor:
    """:func:`ghost_batch_norm` on checked arguments (the modules check at their own boundary)."""
    num_ghosts = x.shape[0] // ghost_batch_size
    if num_ghosts == 1:
        return BatchNormFunction.apply(x, running_mean, running_var, weight, bias, True, momentum, eps)

    c = x.shape[1]
    rows = x.reshape(num_ghosts, ghost_batch_size, c, -1)
    # Ghost batch j's channel i becomes channel j*C + i of a batch of g examples.
    as_channels = rows.transpose(0, 1).reshape(ghost_batch_size, num_ghosts * c, -1)
    repeated_weight = None if weight is None else weight.repeat(num_ghosts)
    repeated_bias = None if bias is None else bias.repeat(num_ghosts)

    out = BatchNormFunction.apply(as_channels, None, None, repeated_weight, repeated_bias, True, momentum, eps)
    if running_mean is not None:
        with torch.no_grad():
            ghosts = x.detach().reshape(num_ghosts, ghost_batch_size, c, -1)  # (k, g, C, L)
            means, biased_vars = ghosts.mean((1, 3)), ghosts.var((1, 3), correction=0)  # (k, C) each
            new_mean, new_var = updated_running_stats(running_mean, running_var, means.mean(0),
                                                      biased_vars.mean(0), ghosts[0, :, 0].numel(), momentum)
            running_mean.copy_(new_mean)
            running_var.copy_(new_var)
    return out.reshape(ghost_batch_size, num_ghosts, c, -1).transpose(0, 1).reshape(x.shape)


class _GhostBatchNormMixin:
    """Ghost-batch behaviour layered over :class:`~bnlab.nn.modules.BatchNormBase` (see the module docstring)."""

    ghost_batch_size: int

    def _check_batch(self, x: torch.Tensor, use_batch_stats: bool) -> None:
        super()._check_batch(x, use_batch_stats)
        if use_batch_stats:
            check_ghost_batch(x, self.ghost_batch_size)

    def _normalize(self, x, running_mean, running_var, use_batch_stats, momentum):
        if not use_batch_stats:
            return super()._normalize(x, running_mean, running_var, use_batch_stats, momentum)
        return _ghost_batch_norm(x, self.ghost_batch_size, running_mean, running_var, self.weight, self.bias,
                                 momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"


class GhostBatchNorm1d(_GhostBatchNormMixin, BatchNorm1d):
    """Ghost batch norm over (N, C) or (N, C, L) input; state and eval mode as :class:`BatchNorm1d`.

    Args:
        num_features: C. ghost_batch_size: examples per normalization batch (N must be a multiple of it in
        training). eps, momentum, affine, track_running_stats, device, dtype, bias: as :class:`BatchNorm1d`.
    """

    def __init__(self, num_features: int, ghost_batch_size: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.ghost_batch_size = _check_ghost_batch_size(ghost_batch_size)


class GhostBatchNorm2d(_GhostBatchNormMixin, BatchNorm2d):
    """Ghost batch norm over (N, C, H, W) input; state and eval mode as :class:`BatchNorm2d`.

    Args as :class:`GhostBatchNorm1d`.
    """

    def __init__(self, num_features: int, ghost_batch_size: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.ghost_batch_size = _check_ghost_batch_size(ghost_batch_size)
