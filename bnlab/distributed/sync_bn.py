r"""Synchronized batch norm: statistics over the examples of *every* process, with a hand-written backward.

Each of W processes (ranks) holds a share of the batch, rank k with :math:`n_k` values per channel (its
examples times the spatial positions; :math:`n_k` may differ between ranks, and may be 0). Batch norm on the
concatenated batch needs the mean and the biased variance of all :math:`n = \sum_k n_k` values. Each rank
computes, per channel, its count, sum and sum of squared deviations from its own mean,

.. math::
    n_k, \qquad s_k = \sum_{i \in k} x_i, \qquad M_k = \sum_{i \in k} (x_i - \bar x_k)^2,
    \quad \bar x_k = s_k / n_k ,

writes them into row k of a (W, 2C + 1) table of zeros, and **one all-reduce (sum)** of that table gives every
rank every row. Each rank then combines the rows exactly, with the parallel-variance formula of Chan, Golub &
LeVeque (1979):

.. math::
    \mu = \frac{1}{n}\sum_k s_k, \qquad
    M = \sum_k M_k + \sum_k n_k (\bar x_k - \mu)^2, \qquad \sigma^2 = M / n .

The identity behind it: :math:`\sum_{i\in k}(x_i-\mu)^2 = M_k + n_k(\bar x_k-\mu)^2` (the cross term vanishes
because the deviations from :math:`\bar x_k` sum to 0). Every term is a sum of squares, so nothing cancels:
this is as accurate as two passes over the concatenated batch. (Summing :math:`\sum x^2` over the ranks instead
would be one-pass :math:`E[x^2]-E[x]^2`, which cancels catastrophically in float32 far from zero; a sum of the
:math:`M_k` alone would miss the spread *between* the ranks' means.) Writing each rank's row into its own place
turns the all-reduce into an all-gather; ``torch.nn.SyncBatchNorm`` gathers (mean, 1/std, count) the same way,
with ``all_gather``.

Backward, with :math:`\hat x = (x-\mu)/\sqrt{\sigma^2+\epsilon}`: the closed form of lecture 4 needs two sums over
the **whole** batch, so each rank sums its share and **one all-reduce** of the (2, C) pair adds them up:

.. math::
    dx_i = \frac{\gamma}{n\sqrt{\sigma^2+\epsilon}}\Big(n\,dy_i - \sum_{\text{all}} dy
           - \hat x_i \sum_{\text{all}} dy\,\hat x\Big) .

:math:`d\gamma = \sum dy\,\hat x` and :math:`d\beta = \sum dy` are returned **per rank** (over the rank's own
examples), like every other parameter gradient in data-parallel training: the optimizer's all-reduce of the
parameter gradients (DDP's) adds them, and adding them here as well would count them W times. Summed over the
ranks they are the full batch's.

Running statistics move towards the global mean and the global **unbiased** variance :math:`M/(n-1)`, by
:func:`bnlab.running_stats.updated_running_stats`, like ``torch.nn.BatchNorm``: every rank keeps identical
buffers.

So a synchronized BN layer costs one all-reduce in the forward and one in the backward: two per layer and
training step, each of a few hundred numbers. With ``synchronize=False`` the same code skips both and
normalizes each rank's share by its own statistics ("local" BN, what plain ``nn.BatchNorm`` does under DDP):
the control that :mod:`bnlab.distributed.workers` times against.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from bnlab._validation import check_eps, check_momentum, check_num_channels
from bnlab.nn._checks import check_channel_tensor, check_input_tensor
from bnlab.nn.modules import BatchNormBase
from bnlab.running_stats import updated_running_stats

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction", "convert_to_sync_batchnorm", "sync_batch_norm"]


def _reduction_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Every dimension but the channel dimension 1."""
    return (0,) + tuple(range(2, x.dim()))


def _per_channel(vector: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(C,) viewed as (1, C, 1, ...), to broadcast against x."""
    return vector.view((1, -1) + (1,) * (x.dim() - 2))


def _group_of(group: Any) -> tuple[Any, int, int]:
    """(group, this rank's index in it, its size); a single process when torch.distributed is not initialized."""
    if group == "local" or not (dist.is_available() and dist.is_initialized()):
        return None, 0, 1
    return group, dist.get_rank(group), dist.get_world_size(group)


class SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm over the batch shares of every rank of a process group (module docstring).

    ``SyncBatchNormFunction.apply(x, running_mean, running_var, weight, bias, momentum, eps, group)``:
    ``group`` a process group (None: the default one) or ``"local"`` (no communication: each rank's own
    statistics). Returns this rank's share, normalized; shape of x. Arguments are checked by
    :func:`sync_batch_norm`, not here.
    """

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, momentum, eps, group):
        group, rank, world = _group_of(group)
        dims = _reduction_dims(x)
        c = x.shape[1]
        count = x.numel() // c  # n_k, the same for every channel
        total = x.sum(dims)  # s_k, (C,)
        own_mean = total / max(count, 1)
        own_m2 = (x - _per_channel(own_mean, x)).square().sum(dims)  # M_k, two-pass on this rank's share
        table = x.new_zeros(world, 2 * c + 1)  # row k: n_k, s_k (C), M_k (C)
        table[rank, 0] = count
        table[rank, 1:c + 1] = total
        table[rank, c + 1:] = own_m2
        if world > 1:
            dist.all_reduce(table, group=group)  # a sum of rows that are zero but one: every rank gets every row
        counts, sums, m2s = table[:, :1], table[:, 1:c + 1], table[:, c + 1:]  # (W, 1), (W, C), (W, C)
        n = round(counts.sum().item())
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {n} value(s) per channel "
                             f"over all {world} process(es) (this one's input size {tuple(x.shape)})")
        mean = sums.sum(0) / n  # (C,)
        # Chan et al.: M = sum_k M_k + sum_k n_k (mean_k - mean)^2 (a rank with n_k = 0 adds nothing)
        means = sums / counts.clamp(min=1)
        m2 = m2s.sum(0) + (counts * (means - mean).square()).sum(0)
        var = m2 / n  # biased: what the forward normalizes with
        if running_mean is not None:
            new_mean, new_var = updated_running_stats(running_mean, running_var, mean, var, n, momentum)
            running_mean.copy_(new_mean)
            running_var.copy_(new_var)
        invstd = torch.rsqrt(var + eps)  # (C,)
        xhat = (x - _per_channel(mean, x)) * _per_channel(invstd, x)
        out = xhat if weight is None else xhat * _per_channel(weight, x)
        if bias is not None:
            out = out + _per_channel(bias, x)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.group, ctx.world, ctx.n = group, world, n
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        xhat, invstd, weight = ctx.saved_tensors
        dims = _reduction_dims(dy)
        dbeta = dy.sum(dims)  # (C,) over this rank's share
        dgamma = (dy * xhat).sum(dims)  # (C,)
        sums = torch.stack([dbeta, dgamma])  # (2, C)
        if ctx.world > 1:
            sums = sums.clone()
            dist.all_reduce(sums, group=ctx.group)  # over the whole batch
        scale = invstd if weight is None else weight * invstd  # gamma / std, (C,)
        n = ctx.n
        dx = _per_channel(scale / n, dy) * (n * dy - _per_channel(sums[0], dy) - xhat * _per_channel(sums[1], dy))
        needs = ctx.needs_input_grad
        return (dx if needs[0] else None, None, None, dgamma if needs[3] else None, dbeta if needs[4] else None,
                None, None, None)


def sync_batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
    group: Any = None,
) -> torch.Tensor:
    """Training-mode batch norm whose statistics cover every rank's share of the batch.

    Args:
        x: this rank's share, (N_k, C) or (N_k, C, *spatial); N_k may differ between ranks (and be 0).
        running_mean, running_var: (C,) buffers updated in place with the global mean and unbiased variance,
            or None.
        weight, bias: (C,) gamma and beta, or None.
        momentum: weight of this batch in the running statistics, in [0, 1]. eps: > 0.
        group: the process group (None: the default group); ``"local"`` uses this rank's statistics alone.
            Without an initialized ``torch.distributed`` it is ordinary batch norm.

    Returns:
        This rank's share normalized with the global statistics, shape of x. Every rank must call it (it is a
        collective). Fewer than 2 values per channel over all ranks raise ValueError on every rank.
    """
    check_input_tensor(x)
    for value, name in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"),
                        (bias, "bias")):
        check_channel_tensor(value, name, x)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be tensors or both be None")
    eps = check_eps(eps, context=" when normalizing with batch statistics")
    momentum = check_momentum(momentum, allow_none=False)
    return SyncBatchNormFunction.apply(x, running_mean, running_var, weight, bias, float(momentum), eps, group)


class SyncBatchNorm(BatchNormBase):
    """Batch norm with statistics over every rank of a process group, a module like ``torch.nn.SyncBatchNorm``.

    Args:
        num_features, eps, momentum, affine, track_running_stats, device, dtype, bias: as
            :class:`bnlab.nn.BatchNorm1d`.
        group: the process group (None: the default one).
        synchronize: False normalizes each rank's share by its own statistics, with the same code and no
            communication (the control "local BN").

    Input (N_k, C) or (N_k, C, *spatial) in training (a rank may hold a single example, or none, as long as the
    ranks together have more than one value per channel). Eval mode uses the running statistics, which are
    identical on every rank, and communicates nothing; without running statistics (``track_running_stats=False``)
    it uses each rank's own batch statistics, as ``torch.nn.SyncBatchNorm`` does.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, group: Any = None, synchronize: bool = True, device=None,
                 dtype=None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.group = group
        self.synchronize = bool(synchronize)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def _check_batch(self, x: torch.Tensor, use_batch_stats: bool) -> None:
        if not use_batch_stats:
            super()._check_batch(x, use_batch_stats)
            return
        # a rank's share may have a single value per channel: the count that matters is the global one,
        # checked inside the Function after the all-reduce (on every rank alike)
        check_input_tensor(x)
        check_num_channels(tuple(x.shape), self.num_features, f"{type(self).__name__}({self.num_features})")
        for value, name in ((self.running_mean, "running_mean"), (self.running_var, "running_var"),
                            (self.weight, "weight"), (self.bias, "bias")):
            check_channel_tensor(value, name, x)
        check_eps(self.eps, context=" when normalizing with batch statistics (training)")

    def _normalize(self, x, running_mean, running_var, use_batch_stats, momentum):
        if not use_batch_stats:
            return super()._normalize(x, running_mean, running_var, use_batch_stats, momentum)
        # like torch's SyncBatchNorm: only training synchronizes; eval mode without running statistics uses
        # each rank's own batch statistics (an eval call on one rank alone must not wait for the others)
        group = self.group if self.synchronize and self.training else "local"
        return SyncBatchNormFunction.apply(x, running_mean, running_var, self.weight, self.bias, momentum,
                                           self.eps, group)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, synchronize={self.synchronize}"


def convert_to_sync_batchnorm(model: torch.nn.Module, synchronize: bool = True, group: Any = None
                              ) -> torch.nn.Module:
    """Replace every ``torch.nn.BatchNorm1d/2d/3d`` and bnlab batch norm in ``model`` by a :class:`SyncBatchNorm`
    with the same settings, parameters and buffers (in place; returns ``model``), like torch's
    ``nn.SyncBatchNorm.convert_sync_batchnorm``."""
    from bnlab.nn import is_batchnorm

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert_to_sync_batchnorm expects a torch.nn.Module, got {type(model).__name__}")
    for name, child in list(model.named_children()):
        if is_batchnorm(child) and not isinstance(child, SyncBatchNorm):
            reference = child.weight if child.weight is not None else child.running_mean
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats, group=group, synchronize=synchronize,
                                 dtype=None if reference is None else reference.dtype,
                                 bias=child.bias is not None or not child.affine)
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            setattr(model, name, sync)
        else:
            convert_to_sync_batchnorm(child, synchronize, group)
    return model
