"""The numbers lecture 10 states, computed from the figure-1 runs (the lecture prints them, the tests check them
against their brackets), and the paper's ImageNet table, quoted once.

Nothing here trains: every function reads :class:`~bnlab.experiments.SeedRuns` of
:class:`~bnlab.experiments.figure1.Figure1Config` (shipped with the package for the default grid).
``nets`` is always ``{"no BN": runs, "BN": runs}`` (:func:`bnlab.experiments.figure1.figure1_runs`) and a
sweep ``{"no BN": {(lr, init_std): runs}, "BN": {...}}`` (:func:`bnlab.experiments.figure1.figure1_sweep`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from bnlab._validation import check_float, check_int
from bnlab.experiments import SeedRuns
from bnlab.experiments._runs import mnist
from bnlab.experiments.figure1 import SATURATION

__all__ = [
    "IMAGENET_RECIPE_CHANGES",
    "IMAGENET_TABLE",
    "ImageNetRow",
    "accuracy_at_update",
    "accuracy_gap",
    "first_update_reaching",
    "gap_table",
    "imagenet_table_markdown",
    "layer_gradient_ratios",
    "median_drift",
    "median_movement",
    "movement_table",
    "predicted_saturation",
    "predicted_shrink",
    "speedup",
    "typical_span",
    "unit_range",
    "updates_text",
    "with_scalar",
]


# ----------------------------------------------------------------------------------------- reading the runs


def _record(runs: SeedRuns, update: int | None) -> int:
    """The index of the record of ``update`` (None: the last record) in every seed's arrays."""
    steps = runs.values("steps")[0]
    if update is None:
        return steps.size - 1
    update = check_int(update, "update", minimum=0)
    hits = np.flatnonzero(steps == update)
    if not hits.size:
        raise ValueError(f"update {update} is not a recorded update; recorded: {int(steps[0])}, "
                         f"{int(steps[1])}, ... every {int(steps[1] - steps[0])} up to {int(steps[-1])}")
    return int(hits[0])


def accuracy_at_update(runs: SeedRuns, update: int | None = None) -> np.ndarray:
    """(S,) each seed's test accuracy at the recorded ``update``; None: at the end, ``final_accuracies()``.
    NaN for a seed that diverged before it."""
    if update is None:
        return runs.final_accuracies()
    return runs.values("test_accuracy")[:, _record(runs, update)]


def first_update_reaching(runs: SeedRuns, accuracy: float) -> np.ndarray:
    """(S,) for each seed the first recorded update at which the test accuracy is at least ``accuracy``;
    NaN for a seed that never gets there (the grain is the record spacing: 25 updates in the default runs)."""
    accuracy = check_float(accuracy, "accuracy", 0.0, maximum=1.0)
    steps, curves = runs.values("steps"), runs.values("test_accuracy")
    out = np.full(len(runs.seeds), np.nan)
    for seed, (x, y) in enumerate(zip(steps, curves)):
        reached = np.flatnonzero(np.nan_to_num(y, nan=-1.0) >= accuracy)
        if reached.size:
            out[seed] = x[reached[0]]
    return out


def _check_nets(nets: Mapping[str, SeedRuns]) -> None:
    if not isinstance(nets, Mapping) or set(nets) != {"no BN", "BN"}:
        got = sorted(nets) if isinstance(nets, Mapping) else type(nets).__name__
        raise ValueError(f"nets must be a mapping with the keys 'no BN' and 'BN' (figure1_runs), got {got}")


def updates_text(updates: np.ndarray) -> str:
    """Updates per seed as text, NaN as "never": ``"4,700, 4,900, never"`` (what :func:`first_update_reaching`
    gives for a seed that never gets there)."""
    return ", ".join("never" if not np.isfinite(u) else f"{int(u):,}" for u in np.asarray(updates, dtype=float))


def accuracy_gap(nets: Mapping[str, SeedRuns], update: int | None = None) -> float:
    """BN's seed-mean test accuracy minus the plain net's, at ``update`` (None: the end). NaN if a seed of
    either net has no accuracy there (diverged): a missing seed is never averaged away."""
    _check_nets(nets)
    return float(accuracy_at_update(nets["BN"], update).mean() - accuracy_at_update(nets["no BN"], update).mean())


def gap_table(sweep: Mapping[str, Mapping[tuple[float, float], SeedRuns]], update: int | None = None
              ) -> tuple[list[float], list[float], np.ndarray]:
    """``(learning_rates, init_stds, gaps)``: :func:`accuracy_gap` at ``update`` for every (lr, init std) of
    a sweep, ``gaps`` of shape (len(learning_rates), len(init_stds)), NaN where a setting is missing."""
    _check_nets(sweep)
    keys = set(sweep["no BN"]) | set(sweep["BN"])
    lrs, stds = sorted({lr for lr, _ in keys}), sorted({std for _, std in keys})
    gaps = np.full((len(lrs), len(stds)), np.nan)
    for i, lr in enumerate(lrs):
        for j, std in enumerate(stds):
            if (lr, std) in sweep["no BN"] and (lr, std) in sweep["BN"]:
                gaps[i, j] = accuracy_gap({label: sweep[label][(lr, std)] for label in sweep}, update)
    return lrs, stds, gaps


def typical_span(runs: SeedRuns) -> tuple[float, float]:
    """(lowest 15th, highest 85th percentile) of the typical unit's sigmoid input over every record and seed."""
    values = runs.values("unit_percentiles")  # (S, K, 3)
    return float(np.nanmin(values[..., 0])), float(np.nanmax(values[..., 2]))


def unit_range(runs: SeedRuns, update: int | None = 0) -> np.ndarray:
    """(S,) the width (85th minus 15th percentile) of each seed's typical unit's input at ``update`` (default:
    at initialization; None: the last record): how much the unit's input depends on the digit."""
    values = runs.values("unit_percentiles")[:, _record(runs, update)]  # (S, 3)
    return values[:, 2] - values[:, 0]


def median_drift(runs: SeedRuns) -> np.ndarray:
    """(S,) how far each seed's typical unit's median (50th percentile) moved from the first record to the
    last finite one (negative: towards the sigmoid's lower flat end)."""
    medians = runs.values("unit_percentiles")[..., 1]  # (S, K)
    drift = []
    for curve in medians:
        finite = curve[np.isfinite(curve)]
        drift.append(finite[-1] - finite[0] if finite.size else np.nan)
    return np.array(drift)


def median_movement(runs: SeedRuns) -> np.ndarray:
    """(S,) each seed's median over the last hidden layer's units of a unit's movement: the largest distance
    of its 15/50/85th percentiles from where they started (the typical unit's movement, by its definition)."""
    return runs.values("movement_percentiles")[:, 1]


def movement_table(sweep: Mapping[str, Mapping[tuple[float, float], SeedRuns]]
                   ) -> dict[tuple[float, float], tuple[float, float]]:
    """``{(lr, init_std): (no BN, BN)}``: the seed mean of :func:`median_movement` of each net."""
    _check_nets(sweep)
    return {key: (float(median_movement(sweep["no BN"][key]).mean()), float(median_movement(sweep["BN"][key]).mean()))
            for key in sweep["no BN"] if key in sweep["BN"]}


def layer_gradient_ratios(runs: SeedRuns) -> np.ndarray:
    """(S, L) at initialization, each weight layer's gradient norm over the one below it (hidden 2 / hidden 1,
    ..., output / hidden L): how much the backward signal shrinks per layer on its way down."""
    grads = runs.values("grad_norms_init")  # (S, L + 1)
    return grads[:, 1:] / grads[:, :-1]


def predicted_shrink(init_std: float, fan_in: int = 100, slope: float = 0.25) -> float:
    """1 / (sqrt(fan_in) * init_std * slope): the factor by which a sigmoid layer with N(0, init_std^2)
    weights shrinks a small signal (forward) or gradient (backward), with sigmoid' = ``slope`` (1/4 at 0)."""
    init_std = check_float(init_std, "init_std", 0.0, inclusive=False)
    fan_in = check_int(fan_in, "fan_in", minimum=1)
    slope = check_float(slope, "slope", 0.0, inclusive=False)
    return 1.0 / (math.sqrt(fan_in) * init_std * slope)


def predicted_saturation(init_std: float, x: torch.Tensor | None = None, threshold: float = SATURATION) -> float:
    """The expected fraction of first-hidden-layer inputs z = w . x with |z| > ``threshold`` when every weight
    is drawn from N(0, init_std^2) and the bias is 0: given an example x, z is exactly N(0, init_std^2 ||x||^2),
    so the fraction is the mean over the examples of ``x`` (default: the probe batch, the 1,000 test digits,
    (N, D)) of P(|z| > threshold) = erfc(threshold / (sqrt 2 init_std ||x||))."""
    init_std = check_float(init_std, "init_std", 0.0, inclusive=False)
    threshold = check_float(threshold, "threshold", 0.0, inclusive=False)
    x = mnist().x_test if x is None else x
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a torch tensor of examples, shape (N, D), got {shape}")
    norms = torch.linalg.vector_norm(x.double(), dim=1).numpy()
    return float(np.mean([math.erfc(threshold / (math.sqrt(2.0) * init_std * n)) if n > 0 else 0.0
                          for n in norms]))


def speedup(nets: Mapping[str, SeedRuns], accuracy: float) -> float:
    """How many times more updates the plain net needs than BN to first reach test ``accuracy``: the ratio of
    the seed means of :func:`first_update_reaching`. NaN when a seed of either net never reaches it within
    its run (the ratio is then unknown, at least the run's length over BN's)."""
    _check_nets(nets)
    plain, bn = (first_update_reaching(nets[label], accuracy) for label in ("no BN", "BN"))
    return float(plain.mean() / bn.mean())


def with_scalar(runs: SeedRuns, name: str, values: np.ndarray) -> SeedRuns:
    """The same runs with one more per-seed scalar ``name`` (``values`` (S,)), so a figure can draw a derived
    quantity (an accuracy at an early update) like a recorded one."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(runs.seeds),):
        raise ValueError(f"values must hold one number per seed, shape ({len(runs.seeds)},), got {values.shape}")
    return SeedRuns(seeds=runs.seeds, arrays=tuple({**arrays, name: np.float64(value)}
                                                   for arrays, value in zip(runs.arrays, values)))


# ----------------------------------------------------------------------------------- the paper's ImageNet table


@dataclass(frozen=True)
class ImageNetRow:
    """One row of the paper's single-network ImageNet comparison (Ioffe & Szegedy 2015, Sec. 4.2.2, Fig. 3).

    ``steps_to_inception`` is the number of training steps, in millions, to reach Inception's best validation
    accuracy of 72.2% (None: never reached); ``max_accuracy`` the best accuracy the network reached, in %.
    """

    model: str
    what: str
    steps_to_inception: float | None
    max_accuracy: float


IMAGENET_TABLE = (
    ImageNetRow("Inception", "the baseline, initial learning rate 0.0015", 31.0, 72.2),
    ImageNetRow("BN-Baseline", "Inception with BN before each nonlinearity", 13.3, 72.7),
    ImageNetRow("BN-x5", "Inception with BN and the changes below, initial learning rate x5 (0.0075)", 2.1, 73.0),
    ImageNetRow("BN-x30", "as BN-x5, initial learning rate x30 (0.045)", 2.7, 74.8),
    ImageNetRow("BN-x5-Sigmoid", "as BN-x5, sigmoid instead of ReLU", None, 69.8),
)

# what the paper changed besides adding BN to get the BN-x5 / BN-x30 speed-ups (Sec. 4.2.1)
IMAGENET_RECIPE_CHANGES = (
    "a higher learning rate",
    "dropout removed",
    "L2 weight regularization reduced by a factor of 5",
    "learning rate decay 6 times faster",
    "local response normalization removed",
    "training examples shuffled more thoroughly (within-shard shuffling)",
    "fewer photometric distortions",
)


def imagenet_table_markdown() -> str:
    """The paper's table as a markdown table (display it with ``IPython.display.Markdown``)."""
    lines = ["| model | what it is | steps to 72.2% | max accuracy |", "|---|---|---|---|"]
    for row in IMAGENET_TABLE:
        steps = "never" if row.steps_to_inception is None else f"{row.steps_to_inception:.1f} million"
        lines.append(f"| {row.model} | {row.what} | {steps} | {row.max_accuracy:.1f}% |")
    return "\n".join(lines)
