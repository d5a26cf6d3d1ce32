"""The one home of bnlab's argument rules: scalars (eps, momentum, counts, choices, seeds) and arrays.

Each check raises ``TypeError`` or ``ValueError`` with a message that names what was expected and what came,
so that a learner who passes the wrong thing sees at once which argument is off and how. Public entry points
(the functional API, the numpy layer, the torch modules, the builders and configs) call these once, at their
boundary; the code behind a boundary trusts what it was given.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

# ------------------------------------------------------------------------------------------------ scalars


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_choice(value: Any, name: str, allowed: Iterable[str]) -> str:
    """``value`` must be one of the strings in ``allowed``."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_int(value: Any, name: str, minimum: int = 1, *, kind: str = "") -> int:
    """``value`` must be an integer (not a bool) and at least ``minimum``.

    ``kind`` replaces the default description "an integer >= minimum" in the error message.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be {kind or f'an integer >= {minimum}'}, got {value!r}")
    return int(value)


def check_index(value: Any, name: str, size: int, context: str = "") -> int:
    """``value`` must index ``size`` items as Python does, counting from the end when negative (-1: the last).

    Returns it as an index in [0, size). ``context`` (e.g. " (the run has 3 hidden layers)") follows the range
    in the error message.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not -size <= value < size:
        raise ValueError(f"{name} must be an integer in [-{size}, {size - 1}]{context}, got {value!r}")
    return int(value) % size


def check_float(value: Any, name: str, minimum: float = 0.0, *, inclusive: bool = True,
                maximum: float = math.inf, maximum_inclusive: bool = True) -> float:
    """``value`` must be a finite real number in the given range (bounds inclusive unless told otherwise)."""
    ok = (_is_real(value) and math.isfinite(value)
          and (value >= minimum if inclusive else value > minimum)
          and (value <= maximum if maximum_inclusive else value < maximum))
    if not ok:
        low = f"{'[' if inclusive else '('}{minimum:g}"
        high = f"{maximum:g}{']' if maximum_inclusive else ')'}" if math.isfinite(maximum) else "inf)"
        raise ValueError(f"{name} must be a finite number in {low}, {high}, got {value!r}")
    return float(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed is a non-negative integer (what ``torch.Generator.manual_seed`` accepts)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def check_eps(eps: Any, *, allow_zero: bool = False, context: str = "") -> float:
    """eps must be a finite real number > 0 (>= 0 with ``allow_zero``); ``context`` says when, in the message.

    With batch statistics eps must be positive: a constant channel has variance 0, and 1/sqrt(0 + eps) is only
    finite for eps > 0. torch's modules accept eps = 0 at construction (usable in eval mode only), hence
    ``allow_zero``.
    """
    if not (_is_real(eps) and math.isfinite(eps) and (eps >= 0 if allow_zero else eps > 0)):
        rule = "a finite number >= 0" if allow_zero else "a positive finite number"
        raise ValueError(f"eps must be {rule}{context} (default 1e-5; it keeps 1/sqrt(var + eps) finite for a "
                         f"constant channel), got eps={eps!r}")
    return float(eps)


def check_momentum(momentum: Any, *, allow_none: bool = True) -> float | None:
    """momentum must be a number in [0, 1] (PyTorch's convention), or None (cumulative average) if allowed."""
    if momentum is None and allow_none:
        return None
    if not (_is_real(momentum) and 0.0 <= momentum <= 1.0):
        none = " or None for a cumulative average" if allow_none else ""
        raise ValueError("momentum must be a number in [0, 1] (PyTorch convention: running = (1 - momentum) * "
                         f"running + momentum * batch_stat){none}, got {momentum!r}")
    return float(momentum)


def check_num_features(num_features: Any) -> int:
    """num_features must be a positive integer (the number of channels C)."""
    return check_int(num_features, "num_features", 1, kind="a positive integer (the channel count C)")


# ------------------------------------------------------------------------------------------------- arrays


def describe_shape(shape: tuple[int, ...]) -> str:
    """Render a shape the way numpy prints it: ``(3,)``, ``(8, 4, 2, 2)``."""
    return str(tuple(int(s) for s in shape))


def to_numpy(value: Any) -> np.ndarray:
    """A numpy view of an array-like; a torch tensor is detached and moved to the CPU first (never tracked)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def as_float_array(value: Any, name: str) -> np.ndarray:
    """Return ``value`` as a float32 or float64 numpy array (no copy when it already is one).

    Raises TypeError for integer, boolean, complex or object data (batch norm on integers would silently
    truncate the normalized values) and for float16 (too coarse for the statistics).
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


def check_channel_vector(value: Any, name: str, num_channels: int) -> np.ndarray:
    """Check a per-channel vector (gamma, beta, running statistics): shape (C,), floating point."""
    value = as_float_array(value, name)
    if value.shape != (num_channels,):
        raise ValueError(
            f"{name} must have shape ({num_channels},), one value per channel of the input, "
            f"got shape {describe_shape(value.shape)}"
        )
    return value


def check_upstream_gradient(dout: Any, x: np.ndarray) -> np.ndarray:
    """dout must be a float array shaped like the forward's input ``x``; returned in x's dtype."""
    dout = check_batch_input(dout, "dout")
    if dout.shape != x.shape:
        raise ValueError(f"dout must have the shape of the forward's input {describe_shape(x.shape)}, "
                         f"got {describe_shape(dout.shape)}")
    return dout.astype(x.dtype, copy=False)


def check_more_than_one_value_per_channel(shape: tuple[int, ...]) -> None:
    """Training-mode batch norm needs at least two values per channel to estimate a variance.

    Same rule and message as PyTorch: (1, C) and (1, C, 1, 1) fail, (1, C, H, W) with H*W > 1 does not.
    ``shape`` may be a tuple or a ``torch.Size`` (the message then reads exactly like torch's).
    """
    values_per_channel = math.prod(shape) // shape[1] if shape[1] else 0
    if values_per_channel <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {shape}")


def check_num_channels(x_shape: tuple[int, ...], num_features: int, owner: str) -> None:
    """The input's dimension 1 must hold exactly ``num_features`` channels."""
    if x_shape[1] != num_features:
        raise ValueError(
            f"{owner} expected input with {num_features} channels in dimension 1, "
            f"got {x_shape[1]} (input shape {describe_shape(x_shape)})"
        )
