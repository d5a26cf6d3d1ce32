"""Checks for the options of bnlab's builders and configs (data, models, training).

Like :mod:`bnlab._validation`, each check raises ``ValueError`` or ``TypeError`` with a message that names the
option, what it accepts and what came, so a typo in a notebook cell points straight at the fix.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def check_choice(value: Any, name: str, allowed: Iterable[str]) -> str:
    """``value`` must be one of the strings in ``allowed``."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` must be an integer (not a bool) and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(value: Any, name: str, minimum: float = 0.0, *, inclusive: bool = True,
                maximum: float = math.inf, maximum_inclusive: bool = True) -> float:
    """``value`` must be a finite real number in the given range (bounds inclusive unless told otherwise)."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
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
