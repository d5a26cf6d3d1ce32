"""The numbers lecture 7 states, computed from the depth runs (the lecture prints them, the tests check them
against their brackets). Nothing here trains."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bnlab.experiments import SeedRuns

__all__ = ["STUCK", "TRAINS", "backward_growth", "depth_border", "gradient_ratio", "last_layer_similarities",
           "last_layer_similarity"]

TRAINS = 0.8  # a depth "trains" when every seed ends above this test accuracy ...
STUCK = 0.2   # ... and is "stuck" when every seed ends below this (chance is 0.1) or diverged


def _every_seed(runs: SeedRuns, test) -> bool:
    return bool(all(test(a) for a in runs.final_accuracies()))


def depth_border(by_depth: Mapping[int, SeedRuns]) -> tuple[int | None, int | None]:
    """``(last depth at which every seed trains, first depth at which every seed is stuck)`` of a sweep
    ``{depth: runs}``: trains = above :data:`TRAINS`; stuck = below :data:`STUCK` or diverged. None when no
    depth qualifies."""
    depths = sorted(by_depth)
    trained = [d for d in depths if _every_seed(by_depth[d], lambda a: math.isfinite(a) and a > TRAINS)]
    stuck = [d for d in depths if _every_seed(by_depth[d], lambda a: not math.isfinite(a) or a < STUCK)]
    return (max(trained) if trained else None, min(stuck) if stuck else None)


def gradient_ratio(runs: SeedRuns, when: str = "init") -> float:
    """Gradient norm of the first weight layer over the output layer's (seed mean of the per-seed ratio)."""
    grads = runs.values(f"grad_norms_{when}")
    return float(np.mean(grads[:, 0] / grads[:, -1]))


def last_layer_similarities(runs: SeedRuns, when: str = "init") -> np.ndarray:
    """(S,) each seed's mean cosine similarity between test examples at the last hidden layer (NaN after
    training for a seed that diverged)."""
    return runs.values(f"similarity_{when}")[:, -1]


def last_layer_similarity(runs: SeedRuns, when: str = "init") -> float:
    """The seed mean of :func:`last_layer_similarities`."""
    return float(np.mean(last_layer_similarities(runs, when)))


def backward_growth(runs: SeedRuns, when: str = "init") -> float:
    """Geometric-mean factor by which the gradient norm grows per layer going backward through the hidden
    layers 2..L (from the last hidden layer to layer 2; layer 1 is left out: its 784-dimensional input makes
    its gradient larger for another reason), seed mean of the per-seed factor. Needs depth >= 3."""
    grads = runs.values(f"grad_norms_{when}")  # (S, L + 1), output layer last
    layers = grads.shape[1] - 1
    if layers < 3:
        raise ValueError(f"backward_growth needs at least 3 hidden layers, got {layers}")
    return float(np.mean((grads[:, 1] / grads[:, layers - 1]) ** (1.0 / (layers - 2))))
