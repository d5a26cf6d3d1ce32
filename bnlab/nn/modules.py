"""``BatchNorm1d`` and ``BatchNorm2d``: drop-ins for ``torch.nn.BatchNorm1d/2d`` built on :func:`batch_norm`.

One base class, :class:`BatchNormBase`, owns the parameters and buffers, their reset, the mode logic and the
momentum rule; the subclasses only check the number of input dimensions; the module checks its arguments once
(the checks of :func:`bnlab.nn.functional.batch_norm`) and the math is one call to its
:class:`~bnlab.nn.functional.BatchNormFunction`. Parameter and buffer names, shapes, dtypes and state_dict keys are
torch's (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``), so each module
loads the other's state dict.

Modes, as in torch:

* ``training=True``: batch statistics; the running statistics (if tracked) move towards the batch's by
  ``momentum``, or, with ``momentum=None``, become the equal-weight average of all batches so far
  (batch k gets weight 1/k, k = ``num_batches_tracked``).
* ``training=False``: running statistics, nothing changes; with ``track_running_stats=False`` there are none,
  so batch statistics are used in eval mode too.

One deliberate difference: every check runs before any state changes. torch increments
``num_batches_tracked`` first and may then raise (e.g. for a (1, C) batch), leaving a count that includes a
batch that never contributed to the statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from bnlab._validation import check_eps, check_momentum, check_num_channels, check_num_features
from bnlab.nn._checks import check_batch_norm_arguments
from bnlab.nn.functional import BatchNormFunction
from bnlab.running_stats import newest_batch_weight

__all__ = ["BatchNormBase", "BatchNorm1d", "BatchNorm2d"]


class BatchNormBase(nn.Module):
    """State and mode logic shared by :class:`BatchNorm1d`, :class:`BatchNorm2d` and the ghost variants.

    Args:
        num_features: C, the number of channels (dimension 1 of the input).
        eps: added to the variance inside the square root (must be > 0 whenever batch statistics are used).
        momentum: weight of the newest batch in the running statistics, in [0, 1], or None for a
            cumulative average.
        affine: learn a per-channel ``weight`` (gamma, init 1) and ``bias`` (beta, init 0).
        track_running_stats: keep ``running_mean`` (init 0), ``running_var`` (init 1) and
            ``num_batches_tracked`` (init 0) for eval mode.
        device, dtype: where and in which dtype to create parameters and buffers (as torch's factory kwargs).
        bias: keyword-only, as in torch 2.13: with ``affine=True`` and ``bias=False`` only ``weight`` is learnt.

    Subclasses implement :meth:`_check_input_dim`; ghost batch norm also overrides :meth:`_check_batch` and
    :meth:`_normalize`.
    """

    _version = 2  # torch's BatchNorm state-dict version (num_batches_tracked present)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = check_num_features(num_features)
        self.eps = check_eps(eps, allow_zero=True)  # 0 works in eval mode only, as in torch
        self.momentum = check_momentum(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = nn.Parameter(torch.empty(self.num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(self.num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(self.num_features, **factory))
            self.register_buffer("running_var", torch.ones(self.num_features, **factory))
            self.register_buffer("num_batches_tracked",
                                 torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """running_mean = 0, running_var = 1, num_batches_tracked = 0 (when tracked)."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, and set weight = 1, bias = 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _check_batch(self, x: torch.Tensor, use_batch_stats: bool) -> None:
        """Every check on x and the module's state, run before any buffer changes."""
        check_num_channels(tuple(x.shape), self.num_features, f"{type(self).__name__}({self.num_features})")
        check_batch_norm_arguments(x, self.running_mean, self.running_var, self.weight, self.bias,
                                   use_batch_stats, 0.0 if self.momentum is None else self.momentum, self.eps)

    def _normalize(self, x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                   use_batch_stats: bool, momentum: float) -> torch.Tensor:
        """The computation itself: one call of the Function (:meth:`_check_batch` has checked the arguments)."""
        return BatchNormFunction.apply(x, running_mean, running_var, self.weight, self.bias, use_batch_stats,
                                       momentum, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize x of shape (N, C, ...) per channel; returns a tensor of the same shape."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor input, got {type(x).__name__}")
        self._check_input_dim(x)
        use_batch_stats = self.training or self.running_mean is None
        self._check_batch(x, use_batch_stats)

        factor = 0.0
        if self.training and self.track_running_stats:
            # Counted only now, after validation (torch counts before validating, see the module docstring).
            self.num_batches_tracked.add_(1)
            factor = newest_batch_weight(self.momentum, int(self.num_batches_tracked))

        # In training, the buffers are passed only when tracked, so that they get updated; in eval mode they
        # are passed whenever they exist, so that they are used.
        track = not self.training or self.track_running_stats
        return self._normalize(x, self.running_mean if track else None, self.running_var if track else None,
                               use_batch_stats, factor)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Like torch: a state dict from before num_batches_tracked existed (version < 2) loads with a count of 0.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long, device=self.num_batches_tracked.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class BatchNorm1d(BatchNormBase):
    """Batch norm over (N, C) or (N, C, L) input, like ``torch.nn.BatchNorm1d`` (same constructor and state)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class BatchNorm2d(BatchNormBase):
    """Batch norm over (N, C, H, W) input, like ``torch.nn.BatchNorm2d`` (same constructor and state)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
