"""Argument checks shared by every bnlab entry point.

Each check raises ``TypeError`` or ``ValueError`` with a message that names what was expected and what came,
so that a learner who passes the wrong thing sees at once which argument is off and how.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def describe_shape(shape: tuple[int, ...]) -> str:
    """Render a shape the way numpy prints it: ``(3,)``, ``(8, 4, 2, 2)``."""
    return str(tuple(int(s) for s in shape))


def to_numpy(value: Any) -> np.ndarray:
    """A numpy view of an array-like; a torch tensor is detached and moved to the CPU first (never tracked)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def as_float_array(value: Any, name: str) -> np.ndarray:
    """Return ``value`` as a floating-point numpy array (no copy when it already is one).

    Raises TypeError for integer, boolean, complex or object data: batch norm on integers would silently
    truncate the normalized values.
    """
    array = to_numpy(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"{name} must be a floating-point array (float32 or float64), got dtype {array.dtype}; "
            f"convert it first, e.g. {name}.astype(np.float64)"
        )
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {array.dtype}")
    return array


def check_batch_input(x: Any, name: str = "x") -> np.ndarray:
    """Check a batch ``x`` of shape (N, C) or (N, C, *spatial) and return it as a float array."""
    x = as_float_array(x, name)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, C) or (N, C, *spatial) with at least 2 dimensions, "
            f"got shape {describe_shape(x.shape)} ({x.ndim}-D)"
        )
    return x


def check_upstream_gradient(dout: Any, x: np.ndarray) -> np.ndarray:
    """dout must be a float array shaped like the forward's input ``x``; returned in x's dtype."""
    dout = check_batch_input(dout, "dout")
    if dout.shape != x.shape:
        raise ValueError(f"dout must have the shape of the forward's input {describe_shape(x.shape)}, "
                         f"got {describe_shape(dout.shape)}")
    return dout.astype(x.dtype, copy=False)


def check_channel_vector(value: Any, name: str, num_channels: int) -> np.ndarray:
    """Check a per-channel vector (gamma, beta, running statistics): shape (C,), floating point."""
    value = as_float_array(value, name)
    if value.shape != (num_channels,):
        raise ValueError(
            f"{name} must have shape ({num_channels},), one value per channel of the input, "
            f"got shape {describe_shape(value.shape)}"
        )
    return value


def check_more_than_one_value_per_channel(shape: tuple[int, ...]) -> None:
    """Training-mode batch norm needs at least two values per channel to estimate a variance.

    Same rule and message as PyTorch: (1, C) and (1, C, 1, 1) fail, (1, C, H, W) with H*W > 1 does not.
    """
    values_per_channel = math.prod(shape) // shape[1] if shape[1] else 0
    if values_per_channel <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {describe_shape(shape)}"
        )


def check_eps(eps: Any) -> float:
    """eps must be a positive finite real number: it keeps 1/sqrt(var + eps) finite for a constant channel."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive finite number (default 1e-5), got {eps!r}")
    return float(eps)


def check_momentum(momentum: Any) -> float | None:
    """momentum must be None (cumulative average) or a number in [0, 1] (PyTorch's convention)."""
    if momentum is None:
        return None
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
        raise ValueError(
            "momentum must be a number in [0, 1] (PyTorch convention: running = (1 - momentum) * running "
            f"+ momentum * batch_stat) or None for a cumulative average, got {momentum!r}"
        )
    return float(momentum)


def check_num_features(num_features: Any) -> int:
    """num_features must be a positive integer (the number of channels C)."""
    if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) or num_features < 1:
        raise ValueError(f"num_features must be a positive integer (the channel count C), got {num_features!r}")
    return int(num_features)


def check_num_channels(x_shape: tuple[int, ...], num_features: int, owner: str) -> None:
    """The input's dimension 1 must hold exactly ``num_features`` channels."""
    if x_shape[1] != num_features:
        raise ValueError(
            f"{owner} expected input with {num_features} channels in dimension 1, "
            f"got {x_shape[1]} (input shape {describe_shape(x_shape)})"
        )
