"""The numbers lectures 7-9 state, computed from experiment runs (the lectures print them, the tests check
them against their brackets).

Each function reads :class:`~bnlab.experiments.SeedRuns` (or sweeps of them) and returns plain numbers; none
trains anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bnlab.experiments import SeedRuns

__all__ = [
    "TRAINS",
    "STUCK",
    "depth_border",
    "gradient_ratio",
    "last_layer_similarity",
    "learning_rate_border",
    "median_unit_norm",
    "per_seed",
]

TRAINS = 0.8  # a depth "trains" when every seed ends above this test accuracy ...
STUCK = 0.2   # ... and is "stuck" when every seed ends below this (chance is 0.1) or diverged


def per_seed(runs: SeedRuns, name: str = "final_accuracy", digits: int = 2) -> str:
    """Each seed's value as text, ``"0.89, 0.91, diverged"``."""
    return ", ".join("diverged" if not math.isfinite(v) else f"{v:.{digits}f}" for v in runs.values(name))


def _all(runs: SeedRuns, test) -> bool:
    accuracies = runs.final_accuracies()
    return bool(np.all([test(a) for a in accuracies]))


def depth_border(by_depth: Mapping[int, SeedRuns]) -> tuple[int | None, int | None]:
    """``(last depth at which every seed trains, first depth at which every seed is stuck)`` of a sweep
    ``{depth: runs}``: trains = above :data:`TRAINS`; stuck = below :data:`STUCK` or diverged. None when no
    depth qualifies."""
    depths = sorted(by_depth)
    trained = [d for d in depths if _all(by_depth[d], lambda a: math.isfinite(a) and a > TRAINS)]
    stuck = [d for d in depths if _all(by_depth[d], lambda a: not math.isfinite(a) or a < STUCK)]
    return (max(trained) if trained else None, min(stuck) if stuck else None)


def gradient_ratio(runs: SeedRuns, when: str = "init") -> float:
    """Gradient norm of the first weight layer over the output layer's (seed mean of the per-seed ratio)."""
    grads = runs.values(f"grad_norms_{when}")
    return float(np.mean(grads[:, 0] / grads[:, -1]))


def last_layer_similarity(runs: SeedRuns, when: str = "init") -> float:
    """Mean cosine similarity between test examples at the last hidden layer (seed mean)."""
    return float(np.mean(runs.values(f"similarity_{when}")[:, -1]))


def learning_rate_border(by_lr: Mapping[float, SeedRuns], threshold: float = 0.5) -> tuple[float, float]:
    """``(largest grid rate at which every seed trains, next grid rate)``: the border lies between them.
    A run trains when it does not diverge and ends above ``threshold``. NaN where there is none."""
    rates = sorted(by_lr)
    good = [lr for lr in rates if _all(by_lr[lr], lambda a: math.isfinite(a) and a > threshold)]
    if not good:
        return math.nan, rates[0]
    above = [lr for lr in rates if lr > max(good)]
    return max(good), (above[0] if above else math.nan)


def median_unit_norm(runs: SeedRuns, record: int = -1) -> float:
    """The median hidden unit's weight norm at ``record``, averaged over hidden layers 2..L and seeds (layer 1
    has 784 inputs)."""
    name = "unit_weight_norms" if "unit_weight_norms" in runs.names() else "unit_weight_norm"
    values = runs.values(name)
    median = values[..., 1] if name == "unit_weight_norms" else values  # (S, K, L)
    return float(np.mean(median[:, record, 1:] if median.shape[2] > 1 else median[:, record]))
