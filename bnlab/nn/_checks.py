"""Argument checks for the torch batch norm: every error says what was expected and what came.

The messages for the two mistakes learners meet most often are PyTorch's own, word for word, so that
an error seen with ``torch.nn.BatchNorm*d`` and one seen with ``bnlab.nn`` read the same:

* ``Expected more than 1 value per channel when training, got input size torch.Size([1, 3])``
* ``expected 2D or 3D input (got 4D input)`` / ``expected 4D input (got 3D input)`` (in :mod:`.modules`)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from bnlab._validation import describe_shape


def check_input_tensor(x: Any) -> None:
    """x must be a floating-point tensor of shape (N, C) or (N, C, *spatial)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"batch norm expects a torch.Tensor input, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"batch norm expects a floating-point input (e.g. float32 or float64), got dtype {x.dtype}; "
                        f"convert it first, e.g. x.float()")
    if x.dim() < 2:
        raise ValueError(f"batch norm expects input of shape (N, C) or (N, C, *spatial) with at least 2 dimensions, "
                         f"got shape {describe_shape(x.shape)} ({x.dim()}-D)")


def check_channel_tensor(value: torch.Tensor | None, name: str, x: torch.Tensor) -> None:
    """A per-channel tensor (weight, bias, running statistics) must be None or (C,) in x's dtype and device."""
    if value is None:
        return
    num_channels = x.shape[1]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({num_channels},) or None, got {type(value).__name__}")
    if value.shape != (num_channels,):
        raise ValueError(f"{name} must have one value per channel of the input: expected shape ({num_channels},) "
                         f"for an input with {num_channels} channels (shape {describe_shape(x.shape)}), "
                         f"got shape {describe_shape(value.shape)}")
    if value.dtype != x.dtype:
        raise TypeError(f"{name} must have the input's dtype {x.dtype}, got {value.dtype}; "
                        f"convert the module or the input, e.g. module.to(x.dtype)")
    if value.device != x.device:
        raise ValueError(f"{name} must be on the input's device {x.device}, got {value.device}")


def check_more_than_one_value_per_channel(x: torch.Tensor) -> None:
    """Batch statistics need at least two values per channel (PyTorch's rule and message)."""
    values_per_channel = x.numel() // x.shape[1] if x.shape[1] else 0
    if values_per_channel <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")


def check_training_eps(eps: Any) -> None:
    """With batch statistics eps must be positive: a constant channel has variance 0 and 1/sqrt(0 + eps)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"batch norm eps must be a positive finite number when normalizing with batch statistics "
                         f"(training=True), because a constant channel has variance 0; got eps={eps!r}")


def check_eps_value(eps: Any) -> float:
    """eps for a module: a finite number >= 0 (0 is only usable in eval mode, as in PyTorch)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0 (default 1e-5), got {eps!r}")
    return float(eps)


def check_momentum_value(momentum: Any) -> float:
    """momentum for :func:`~bnlab.nn.batch_norm`: a number in [0, 1] (None is handled by the modules)."""
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
        raise ValueError("momentum must be a number in [0, 1] (running = (1 - momentum) * running + momentum * "
                         f"batch_stat); the cumulative average (momentum=None) is a module option; got {momentum!r}")
    return float(momentum)


def check_batch_norm_arguments(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> None:
    """Every check :func:`~bnlab.nn.batch_norm` needs, run before anything is computed or updated."""
    check_input_tensor(x)
    for value, name in ((running_mean, "running_mean"), (running_var, "running_var"),
                        (weight, "weight"), (bias, "bias")):
        check_channel_tensor(value, name, x)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be tensors or both be None, got "
                         f"running_mean={'None' if running_mean is None else 'a tensor'} and "
                         f"running_var={'None' if running_var is None else 'a tensor'}")
    if training:
        check_more_than_one_value_per_channel(x)
        check_training_eps(eps)
        check_momentum_value(momentum)
    elif running_mean is None:
        raise ValueError("running_mean and running_var are needed in evaluation mode (training=False), got None; "
                         "pass the running statistics or use training=True for batch statistics")
