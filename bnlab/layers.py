"""A numpy batch norm layer with PyTorch's semantics.

``BatchNorm`` holds state (parameters, running statistics, the mode) and delegates every computation to
:mod:`bnlab.functional`: there is no second copy of the math here. Its behaviour follows
``torch.nn.BatchNorm1d/2d`` exactly, so the two can be checked against each other step by step:

* training mode normalizes with batch statistics (biased variance) and updates the running statistics
  ``running = (1 - momentum) * running + momentum * batch_stat`` with the **unbiased** batch variance;
* ``momentum=None`` replaces the exponential average by a cumulative one, weighting batch k by 1/k;
* eval mode normalizes with the running statistics and changes nothing;
* ``track_running_stats=False`` keeps no running statistics and uses batch statistics in both modes;
* ``affine=False`` has no weight or bias (gamma = 1, beta = 0).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from bnlab._channels import as_channel, channel_sum
from bnlab._validation import (
    check_batch_input,
    check_eps,
    check_momentum,
    check_more_than_one_value_per_channel,
    check_num_channels,
    check_num_features,
    check_upstream_gradient,
    describe_shape,
    to_numpy,
)
from bnlab.functional import BatchNormCache, _inference_forward, _train_forward, batchnorm_backward_fused
from bnlab.running_stats import newest_batch_weight, updated_running_stats

__all__ = ["BatchNorm"]


class BatchNorm:
    """Batch normalization over axis 1 of (N, C) or (N, C, *spatial) input, like ``torch.nn.BatchNorm1d/2d``.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance inside the square root.
        momentum: weight of the newest batch in the running statistics (PyTorch convention), or None for a
            cumulative average over all batches seen.
        affine: learn a per-channel scale ``weight`` (gamma) and shift ``bias`` (beta).
        track_running_stats: keep ``running_mean``, ``running_var`` and ``num_batches_tracked`` for eval mode.
        dtype: dtype of the parameters and running statistics (float64 by default, float32 to mirror torch's
            default modules). Computations run in the input's dtype.

    Attributes:
        weight, bias: (C,) arrays, or None when ``affine=False``.
        running_mean, running_var: (C,) arrays, or None when ``track_running_stats=False``.
        num_batches_tracked: int, or None when ``track_running_stats=False``.
        grad: after :meth:`backward`, ``{'weight': dL/dgamma, 'bias': dL/dbeta}`` (empty when not affine).
        training: True in training mode.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: type | np.dtype = np.float64,
    ) -> None:
        self.num_features = check_num_features(num_features)
        self.eps = check_eps(eps)
        self.momentum = check_momentum(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.training = True
        self.grad: dict[str, np.ndarray] = {}
        self._saved: tuple[str, Any] | None = None

        self.weight = np.ones(self.num_features, self.dtype) if self.affine else None
        self.bias = np.zeros(self.num_features, self.dtype) if self.affine else None
        self.running_mean: np.ndarray | None = None
        self.running_var: np.ndarray | None = None
        self.num_batches_tracked: int | None = None
        self.reset_running_stats()

    # ------------------------------------------------------------------ modes and state

    def train(self, mode: bool = True) -> BatchNorm:
        """Switch to training mode (or to eval mode with ``mode=False``); returns self, like torch."""
        self.training = bool(mode)
        return self

    def eval(self) -> BatchNorm:
        """Switch to eval mode: normalize with the running statistics and leave them unchanged."""
        return self.train(False)

    def reset_running_stats(self) -> None:
        """running_mean = 0, running_var = 1, num_batches_tracked = 0 (when tracking)."""
        if self.track_running_stats:
            self.running_mean = np.zeros(self.num_features, self.dtype)
            self.running_var = np.ones(self.num_features, self.dtype)
            self.num_batches_tracked = 0

    def reset_parameters(self) -> None:
        """Running statistics reset, weight = 1, bias = 0."""
        self.reset_running_stats()
        if self.affine:
            self.weight = np.ones(self.num_features, self.dtype)
            self.bias = np.zeros(self.num_features, self.dtype)

    # ------------------------------------------------------------------ forward and backward

    def _gamma_beta(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        if self.affine:
            return self.weight.astype(dtype, copy=False), self.bias.astype(dtype, copy=False)
        return np.ones(self.num_features, dtype), np.zeros(self.num_features, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize a batch x of shape (N, C) or (N, C, *spatial); returns an array of the same shape.

        In training mode (or without running statistics) every channel needs more than one value.
        """
        x = check_batch_input(x)  # the layer's one check of its input, before any state changes
        check_num_channels(x.shape, self.num_features, repr(self))
        gamma, beta = self._gamma_beta(x.dtype)

        if self.training or not self.track_running_stats:
            check_more_than_one_value_per_channel(x.shape)
            out, cache = _train_forward(x, gamma, beta, self.eps)
            if self.training and self.track_running_stats:
                self._update_running_stats(cache)
            self._saved = ("batch", cache)
        else:
            out = _inference_forward(x, gamma, beta, self.running_mean, self.running_var, self.eps)
            self._saved = ("running", x)
        return out

    __call__ = forward

    def _update_running_stats(self, cache: BatchNormCache) -> None:
        """Fold one batch's statistics into the running averages (PyTorch's rule, :mod:`bnlab.running_stats`)."""
        self.num_batches_tracked += 1
        mean, var = updated_running_stats(self.running_mean, self.running_var, cache.batch_mean,
                                          cache.batch_var.astype(np.float64), cache.m,
                                          newest_batch_weight(self.momentum, self.num_batches_tracked))
        self.running_mean, self.running_var = mean.astype(self.dtype), var.astype(self.dtype)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Backpropagate dL/dout through the last forward; returns dL/dx and stores ``grad``.

        After a training-mode forward this is the closed-form batch norm backward (batch statistics depend on
        x). After an eval-mode forward the layer was a fixed affine map, so dx = dout * gamma / sqrt(var + eps).
        """
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first: there is nothing to backpropagate through")
        kind, saved = self._saved
        if kind == "batch":
            dx, dgamma, dbeta = batchnorm_backward_fused(dout, saved)
        else:
            x = saved
            dout = check_upstream_gradient(dout, x)
            gamma, _ = self._gamma_beta(x.dtype)
            inv_std = (1.0 / np.sqrt(self.running_var + self.eps)).astype(x.dtype)
            xhat = (x - as_channel(self.running_mean.astype(x.dtype), x.ndim)) * as_channel(inv_std, x.ndim)
            dx = dout * as_channel(gamma * inv_std, x.ndim)
            dgamma, dbeta = channel_sum(dout * xhat), channel_sum(dout)
        self.grad = {"weight": dgamma, "bias": dbeta} if self.affine else {}
        return dx

    # ------------------------------------------------------------------ state dicts

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of the parameters and buffers under torch's keys, in torch's order."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        if self.affine:
            state["weight"] = self.weight.copy()
            state["bias"] = self.bias.copy()
        if self.track_running_stats:
            state["running_mean"] = self.running_mean.copy()
            state["running_var"] = self.running_var.copy()
            state["num_batches_tracked"] = np.array(self.num_batches_tracked, dtype=np.int64)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load parameters and buffers from a state dict of numpy arrays or torch tensors.

        Accepts ``torch.nn.BatchNorm1d/2d(...).state_dict()`` directly. Keys must match exactly (the ones
        :meth:`state_dict` returns); shapes must be (C,).
        """
        expected = list(self.state_dict())
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        if missing or unexpected:
            raise KeyError(f"state_dict keys do not match {self!r}: missing {missing}, unexpected {unexpected}; "
                           f"expected exactly {expected}")
        values = {key: np.array(to_numpy(value)) for key, value in state_dict.items()}
        for key in expected:
            if key == "num_batches_tracked":
                if values[key].size != 1:
                    raise ValueError(f"num_batches_tracked must be a single integer, got shape "
                                     f"{describe_shape(values[key].shape)}")
                continue
            if values[key].shape != (self.num_features,):
                raise ValueError(f"state_dict[{key!r}] must have shape ({self.num_features},), "
                                 f"got {describe_shape(values[key].shape)}")
        for key in expected:
            if key == "num_batches_tracked":
                self.num_batches_tracked = int(values[key].reshape(()))
            else:
                setattr(self, key, values[key].astype(self.dtype).copy())

    def __repr__(self) -> str:
        return (f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats})")

