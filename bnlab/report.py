"""How a lecture prints a checked number: stable text for an error, with the bracket it must fall in.

A checked cell (``# NBVAL_CHECK_OUTPUT``) must print the same text on every machine, so an error that is set by
rounding (2e-16 here, 1.5e-15 with another thread count) must not be printed digit for digit:

* :func:`error_text` gives ``"below 1e-14"`` under a floor, the next power of ten above a small value
  (``"< 1e-10"`` for 5e-11 or 6e-11), and three significant digits for errors of order one (``"0.37"``);
* :func:`within` adds the bracket the value is checked against: ``"below 1e-14 (< 1e-12)"``, and says so
  loudly when the value is outside it;
* :func:`each_within` prints several values (per seed, per layer) and the bracket each must fall in;
* :func:`seed_values` lists an experiment's per-seed values (``"0.89, 0.91, diverged"``);
* :func:`bracketed` prints a measured quantity of order one (an accuracy, a ratio) with its bracket:
  ``"0.931 (> 0.85)"``, ``"18 (in [10, 30])"``.
"""

from __future__ import annotations

import math
from typing import Any

from bnlab._validation import check_float

__all__ = ["bracketed", "each_within", "error_text", "seed_values", "within"]


def _as_float(value: Any) -> float:
    """A Python float from a float, a numpy scalar or a one-element torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().item()
    return float(value)


def error_text(value: Any, floor: float = 1e-14) -> str:
    """|value| as text that does not flip with the last bits of a computation.

    Below ``floor``: ``"below 1e-14"`` (an exact 0 too). Below 1e-3: the next power of ten above it,
    ``"< 1e-10"``. Otherwise three significant digits, ``"0.37"``, ``"2"``, ``"1.09e+04"``; NaN and inf as such.
    """
    value = abs(_as_float(value))
    floor = check_float(floor, "floor", 0.0, inclusive=False)
    if not math.isfinite(value):
        return str(value)
    if value < floor:
        return f"below {floor:.0e}"
    if value < 1e-3:
        return f"< 1e{math.floor(math.log10(value)) + 1:+03d}"
    return f"{value:.3g}"


def within(value: Any, bound: float, floor: float = 1e-14) -> str:
    """:func:`error_text` of ``value`` followed by its bracket: ``"below 1e-14 (< 1e-12)"``.

    A value that is not below ``bound`` (NaN included) reads ``"0.37 (OUTSIDE the bracket < 1e-12)"``.
    """
    bound = check_float(bound, "bound", 0.0, inclusive=False)
    shown = error_text(value, floor)
    inside = abs(_as_float(value)) < bound
    return f"{shown} (< {bound:.0e})" if inside else f"{shown} (OUTSIDE the bracket < {bound:.0e})"


def _bracket(low: float | None, high: float | None) -> tuple[str, Any]:
    """The bracket's text and its test: ``"> 0.85"``, ``"< 0.2"`` or ``"in [10, 30]"`` (exclusive alone,
    inclusive as a range)."""
    if low is None and high is None:
        raise ValueError("a bracket needs low, high or both")
    if low is not None and high is not None:
        return f"in [{low:.3g}, {high:.3g}]", lambda v: low <= v <= high
    if low is not None:
        return f"> {low:.3g}", lambda v: v > low
    return f"< {high:.3g}", lambda v: v < high


def bracketed(value: Any, low: float | None = None, high: float | None = None, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits and the bracket it is checked against, e.g.
    ``"0.931 (> 0.85)"``, ``"0.1 (< 0.2)"`` or ``"18 (in [10, 30])"`` (bounds exclusive below/above,
    inclusive for a range). A value outside reads ``"0.5 (OUTSIDE the bracket > 0.85)"``; NaN is outside.
    """
    bracket, inside = _bracket(low, high)
    value = _as_float(value)
    shown = f"{value:.{int(digits)}g}" if math.isfinite(value) else str(value)
    return f"{shown} ({bracket})" if inside(value) else f"{shown} (OUTSIDE the bracket {bracket})"


def each_within(values: Any, low: float | None = None, high: float | None = None, digits: int = 2) -> str:
    """Several values (one per seed, or per layer) and the bracket each must fall in, ``digits`` decimals:
    ``"0.86, 0.86, 0.86 (each < 0.88)"``, ``"0.89, 0.91 (each in [0.85, 0.95])"``; a NaN (a diverged seed)
    reads ``diverged`` and is outside: ``"0.9, diverged (OUTSIDE the bracket: each > 0.5)"``."""
    bracket, inside = _bracket(low, high)
    values = [_as_float(v) for v in (values.ravel() if hasattr(values, "ravel") else values)]
    shown = ", ".join(f"{v:.{int(digits)}f}" if math.isfinite(v) else "diverged" for v in values)
    ok = all(math.isfinite(v) and inside(v) for v in values)
    return f"{shown} (each {bracket})" if ok else f"{shown} (OUTSIDE the bracket: each {bracket})"


def seed_values(runs: Any, name: str = "final_accuracy", digits: int = 2) -> str:
    """Each seed's value of a scalar ``name`` of :class:`~bnlab.experiments.SeedRuns`, ``"0.89, 0.91,
    diverged"`` (a NaN is a seed that diverged)."""
    return ", ".join("diverged" if not math.isfinite(v) else f"{v:.{digits}f}" for v in runs.values(name))
