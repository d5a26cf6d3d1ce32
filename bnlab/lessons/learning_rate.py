"""The numbers lecture 9 states, computed from the learning-rate and weight-decay runs (the lecture prints
them, the tests check them against their brackets). Nothing here trains."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bnlab.experiments import SeedRuns

__all__ = ["learning_rate_border", "median_unit_norm"]


def learning_rate_border(by_lr: Mapping[float, SeedRuns], threshold: float = 0.5) -> tuple[float, float]:
    """``(largest grid rate at which every seed trains, next grid rate)``: the border lies between them.
    A run trains when it does not diverge and ends above ``threshold``. NaN where there is none."""
    rates = sorted(by_lr)
    good = [lr for lr in rates
            if all(math.isfinite(a) and a > threshold for a in by_lr[lr].final_accuracies())]
    if not good:
        return math.nan, rates[0]
    above = [lr for lr in rates if lr > max(good)]
    return max(good), (above[0] if above else math.nan)


def median_unit_norm(runs: SeedRuns, record: int = -1, layers: slice = slice(1, None)) -> float:
    """The median hidden unit's weight norm at ``record``, averaged over ``layers`` (default 2..L: layer 1
    has 784 inputs and its own scale) and seeds. Reads ``unit_weight_norms`` (learning-rate runs, percentiles)
    or ``unit_weight_norm`` (weight-decay runs, medians)."""
    if "unit_weight_norms" in runs.names():
        median = runs.values("unit_weight_norms")[..., 1]  # (S, K, L)
    else:
        median = runs.values("unit_weight_norm")
    return float(np.mean(median[:, record, layers]))
