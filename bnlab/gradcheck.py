"""Gradient checking that cannot be fooled.

A gradient check compares an analytic backward with centred finite differences of the forward. For batch norm
two shortcuts make a broken backward look right:

* **An all-ones upstream gradient.** With ``dout = 1`` the loss is ``L = sum(gamma * xhat + beta)``. Every
  channel of ``xhat`` sums to zero by construction, so ``L`` does not depend on ``x`` at all and the true
  ``dL/dx`` is exactly zero. A backward that returns zeros agrees with the finite differences, and so do
  real mistakes whose dx vanishes for a constant ``dout``: a missing variance branch (with or without its
  1/m), a missing gamma, a flipped sign (five of the ten in :data:`bnlab.mistakes.BACKWARD_DX_MISTAKES`).
  Random upstream gradients make ``dL/dx`` non-zero and expose every one of them.
* **float32.** With a step ``h = 1e-5`` a centred difference in float32 carries rounding error of order
  ``1e-7 / 1e-5 = 1e-2`` relative to the function values, which swamps the small relative errors that
  distinguish a correct backward from a slightly wrong one; even the best float32 step, about 1e-2, leaves an
  error near 2e-5 (truncation, ~h**2, meets rounding, ~eps/h; lecture 3 measures both). Check in float64,
  where the error is ~1e-10.

:func:`check_forward_backward` applies both lessons, plus a non-trivial gamma (including a zero, so that
missing factors of gamma show) and beta, and inputs whose channels have different means and scales (so that
reductions over the wrong axis show). It checks the backward against the forward, not against reference
values: a forward and backward that agree on a wrong convention (say, the unbiased variance in both) pass it.
Only comparison with reference outputs catches that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnlab._validation import as_float_array, describe_shape

__all__ = ["DEFAULT_TOLERANCE", "rel_error", "numerical_gradient", "GradientCheckReport", "check_forward_backward"]

DEFAULT_TOLERANCE = 1e-6  # largest rel_error check_forward_backward accepts: float64 differences reach ~1e-10

ForwardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, Any]]
BackwardFn = Callable[[np.ndarray, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference relative to the larger of the two arrays' largest magnitudes.

    ``max|a - b| / max(max|a|, max|b|)``; 0.0 when both arrays are all zeros, inf when either holds a NaN or
    an infinity. Measuring against the
    array's scale rather than element by element keeps entries that happen to be near zero from inflating the
    ratio; 1e-7 or less means agreement to float64 finite-difference precision, ~1 means unrelated arrays.

    Raises:
        ValueError: if the shapes differ (broadcasting would hide a wrong shape).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error needs arrays of the same shape, got {describe_shape(a.shape)} "
                         f"and {describe_shape(b.shape)}")
    if a.size == 0:
        return 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")  # a NaN or infinite gradient is never close to anything
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - b)) / scale)


def numerical_gradient(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Centred-difference estimate of dL/dx for the loss ``L(x) = sum(f(x) * dout)``.

    Each entry of ``x`` is nudged by +h and -h in turn (and restored), so ``f`` is evaluated 2 * x.size times:
    use it on small arrays. ``x`` is modified during the call and restored before it returns.

    Args:
        f: maps an array shaped like ``x`` to an array shaped like ``dout``.
        x: point at which to differentiate, any shape, floating point (use float64: see the module docstring).
        dout: upstream gradient dL/df(x).
        h: step.

    Returns:
        Array of x's shape.
    """
    x = as_float_array(x, "x")
    dout = np.asarray(dout)
    grad = np.zeros_like(x)
    flat_x = x.reshape(-1)  # a view: nudging it nudges x
    if not np.shares_memory(flat_x, x):
        raise ValueError("numerical_gradient needs a contiguous x it can nudge in place; pass np.ascontiguousarray(x)")
    flat_grad = grad.reshape(-1)
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + h
        loss_plus = np.sum(f(x) * dout)
        flat_x[i] = original - h
        loss_minus = np.sum(f(x) * dout)
        flat_x[i] = original
        flat_grad[i] = (loss_plus - loss_minus) / (2 * h)
    return grad


@dataclass(frozen=True)
class GradientCheckReport:
    """Outcome of :func:`check_forward_backward`: one relative error per gradient and the verdict."""

    errors: dict[str, float]
    tolerance: float
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and all(err <= self.tolerance for err in self.errors.values())

    def __str__(self) -> str:
        lines = [f"{name}: relative error {err:.1e}" + ("" if err <= self.tolerance else "  <-- too large")
                 for name, err in self.errors.items()]
        lines += self.problems
        verdict = "PASSED" if self.passed else "FAILED"
        return "\n".join(lines + [f"gradient check {verdict} (tolerance {self.tolerance:.0e})"])


def check_forward_backward(
    forward: ForwardFn,
    backward: BackwardFn,
    shape: tuple[int, ...] = (6, 4),
    *,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
) -> GradientCheckReport:
    """Check ``backward`` against finite differences of ``forward`` in a way that cannot be fooled.

    Uses float64, a random upstream gradient, gamma with a zero and negative entries, a non-zero beta, and an
    input whose channels have different means and scales.

    Args:
        forward: ``forward(x, gamma, beta) -> (out, cache)``, e.g. ``bnlab.functional.batchnorm_forward``.
        backward: ``backward(dout, cache) -> (dx, dgamma, dbeta)``.
        shape: input shape (N, C) or (N, C, *spatial); keep it small, each entry costs two forwards.
        seed: for the random input, parameters and upstream gradient.
        tolerance: largest acceptable :func:`rel_error` per gradient.

    Returns:
        A :class:`GradientCheckReport`; ``report.passed`` is the verdict, ``print(report)`` explains it.
    """
    if len(shape) < 2:
        raise ValueError(f"shape must be (N, C) or (N, C, *spatial), got {shape!r}")
    rng = np.random.default_rng(seed)
    num_channels = shape[1]
    channel = (1, num_channels) + (1,) * (len(shape) - 2)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0, channel) + rng.uniform(-4.0, 4.0, channel)
    gamma = rng.uniform(0.5, 2.0, num_channels) * rng.choice([-1.0, 1.0], num_channels)
    gamma[0] = 0.0
    beta = rng.standard_normal(num_channels)
    dout = rng.standard_normal(shape)

    _, cache = forward(x.copy(), gamma.copy(), beta.copy())
    grads = backward(dout.copy(), cache)
    if not isinstance(grads, tuple) or len(grads) != 3:
        return GradientCheckReport({}, tolerance, [f"backward must return (dx, dgamma, dbeta), got {type(grads)}"])

    numeric = {
        "dx": numerical_gradient(lambda v: forward(v, gamma, beta)[0], x.copy(), dout),
        "dgamma": numerical_gradient(lambda v: forward(x, v, beta)[0], gamma.copy(), dout),
        "dbeta": numerical_gradient(lambda v: forward(x, gamma, v)[0], beta.copy(), dout),
    }
    errors: dict[str, float] = {}
    problems: list[str] = []
    for name, analytic in zip(numeric, grads):
        analytic = np.asarray(analytic)
        if analytic.shape != numeric[name].shape:
            problems.append(f"{name} has shape {describe_shape(analytic.shape)}, "
                            f"expected {describe_shape(numeric[name].shape)}")
            continue
        errors[name] = rel_error(analytic, numeric[name])
    return GradientCheckReport(errors, tolerance, problems)
