"""Argument checks for the torch batch norm: every error says what was expected and what came.

Scalar rules (eps, momentum) and the one-value-per-channel rule are the shared ones of
:mod:`bnlab._validation`; this module adds what only tensors need (dtype, device, shapes of the buffers). The
messages for the two mistakes learners meet most often are PyTorch's own, word for word, so that an error seen
with ``torch.nn.BatchNorm*d`` and one seen with ``bnlab.nn`` read the same:

* ``Expected more than 1 value per channel when training, got input size torch.Size([1, 3])``
* ``expected 2D or 3D input (got 4D input)`` / ``expected 4D input (got 3D input)`` (in :mod:`.modules`)
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab._validation import check_eps, check_momentum, check_more_than_one_value_per_channel, describe_shape


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
        check_more_than_one_value_per_channel(x.size())
        check_eps(eps, context=" when normalizing with batch statistics (training=True)")
        check_momentum(momentum, allow_none=False)
    elif running_mean is None:
        raise ValueError("running_mean and running_var are needed in evaluation mode (training=False), got None; "
                         "pass the running statistics or use training=True for batch statistics")
