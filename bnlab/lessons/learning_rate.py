"""The numbers lecture 9 states, computed from the learning-rate and weight-decay runs that ship with the package
(the lecture prints them, ``tests/test_lesson_learning_rate.py`` checks them against the same brackets).

Three functions compute something new, each in well under a second: :func:`first_updates` replays the first
updates of a shipped BN run (same seed, same minibatches) and watches its last hidden layer die,
:func:`gradient_weight_cosines` takes one gradient at initialization to show that a BN unit's gradient is
orthogonal to its weight vector, and :func:`largest_normalized` samples how far a normalized value reaches.
Everything else reads :class:`~bnlab.experiments.SeedRuns`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bnlab.experiments import SeedRuns
from bnlab.experiments._runs import mnist, train_mlp
from bnlab.experiments.learning_rate import TRAINS_THRESHOLD, LearningRateConfig
from bnlab.models import build_mlp

__all__ = [
    "FirstUpdates",
    "border_ratio",
    "divergence_updates",
    
    "effective_lr_at_end",
    "first_updates",
    "gradient_weight_cosines",
    "largest_normalized",
    "last_layer_dead",
    "layer_norms",
    "learning_rate_border",
    "median_unit_norm",
    "norm_growth",
    "one_step_crossing",
    "one_step_separation",
    "weight_decay_effective_lr",
]


# ----------------------------------------------------------------------------------------------------------
# Formatting a list of values (one per seed) with its bracket
# ----------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------
# The stability border
# ----------------------------------------------------------------------------------------------------------


def _trains(runs: SeedRuns, threshold: float) -> bool:
    return all(math.isfinite(a) and a > threshold for a in runs.final_accuracies())


def learning_rate_border(by_lr: Mapping[float, SeedRuns], threshold: float = TRAINS_THRESHOLD
                         ) -> tuple[float, float]:
    """``(largest grid rate at which every seed trains, next grid rate)``: the border lies between them.
    A run trains when it does not diverge and ends above ``threshold``. NaN where there is none."""
    rates = sorted(by_lr)
    good = [lr for lr in rates if _trains(by_lr[lr], threshold)]
    if not good:
        return math.nan, rates[0]
    above = [lr for lr in rates if lr > max(good)]
    return max(good), (above[0] if above else math.nan)


def border_ratio(plain: Mapping[float, SeedRuns], bn: Mapping[float, SeedRuns]) -> tuple[float, float, float]:
    """``(grid ratio, lowest, highest)``: the BN net's largest stable grid rate over the plain net's, and the
    range the ratio of the true borders can take, given that each border lies in [last stable, next rate):
    lowest = BN's last stable / plain's next, highest = BN's next / plain's last stable."""
    plain_ok, plain_next = learning_rate_border(plain)
    bn_ok, bn_next = learning_rate_border(bn)
    return bn_ok / plain_ok, bn_ok / plain_next, bn_next / plain_ok


def divergence_updates(by_lr: Mapping[float, SeedRuns]) -> np.ndarray:
    """The update at which each diverged seed of the sweep blew up, over every rate (sorted; empty if none)."""
    at = np.concatenate([runs.diverged_at() for runs in by_lr.values()])
    return np.sort(at[np.isfinite(at)])


def last_layer_dead(runs: SeedRuns) -> np.ndarray:
    """(S,) per seed, the fraction of the last hidden layer's units that output 0 for every test example at
    the end of training (eval mode); NaN for a seed that diverged."""
    return runs.values("dead_units")[:, -1]


# ----------------------------------------------------------------------------------------------------------
# Weight norms and the effective learning rate
# ----------------------------------------------------------------------------------------------------------


def median_unit_norm(runs: SeedRuns, record: int = -1, layers: slice = slice(1, None)) -> float:
    """The median hidden unit's weight norm at ``record``, averaged over ``layers`` (default 2..L: layer 1
    has 784 inputs and its own scale) and seeds. Reads ``unit_weight_norms`` (learning-rate runs, percentiles)
    or ``unit_weight_norm`` (weight-decay runs, medians)."""
    if "unit_weight_norms" in runs.names():
        median = runs.values("unit_weight_norms")[..., 1]  # (S, K, L)
    else:
        median = runs.values("unit_weight_norm")
    return float(np.mean(median[:, record, layers]))


def layer_norms(runs: SeedRuns, record: int = -1) -> np.ndarray:
    """(L,) the median unit's weight norm of each hidden layer at ``record``, seed mean."""
    return runs.values("unit_weight_norms")[:, record, :, 1].mean(axis=0)


def norm_growth(runs: SeedRuns, record: int = 1, layer: int = 0) -> float:
    """How many times smaller ``layer``'s effective learning rate lr/||w||^2 is at ``record`` than at
    initialization: (||w|| at record / ||w|| at init)^2 of the median unit, seed mean of the per-seed factor.
    Record 1 of the learning-rate runs is update 50."""
    median = runs.values("unit_weight_norms")[:, :, layer, 1]  # (S, K)
    return float(np.mean((median[:, record] / median[:, 0]) ** 2))


def effective_lr_at_end(by_lr: Mapping[float, SeedRuns], layers: slice = slice(0, 1)) -> dict[float, float]:
    """``{lr: lr / ||w||^2}`` at the end of training for the median unit of ``layers`` (default layer 1;
    ``slice(1, None)`` for layers 2..L, the median over those layers), seed mean. Only meaningful for BN runs."""
    out = {}
    for lr, runs in sorted(by_lr.items()):
        median = runs.values("unit_weight_norms")[:, -1, layers, 1]  # (S, layers)
        out[lr] = float(np.mean(np.median(lr / median ** 2, axis=1)))
    return out


def gradient_weight_cosines(norm: str, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """|cos| of the angle between each hidden unit's weight vector and its loss gradient, one minibatch at
    initialization (depth-10 ReLU, width 100, He init, as the sweep; the minibatch is ``batch_size`` training
    examples drawn with ``seed``). Units whose gradient is exactly 0 (dead at init) are left out.

    With BN a unit's output does not depend on the scale of its weights, so the gradient is orthogonal to
    them: the cosines are rounding errors. Without BN they are not. One forward and backward, one thread."""
    data = mnist()
    model = build_mlp(depth=10, width=100, activation="relu", norm=norm, init="he", seed=seed)
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(seed))[:batch_size]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        F.cross_entropy(model(data.x_train[order]), data.y_train[order]).backward()
    finally:
        torch.set_num_threads(previous)
    cosines = []
    for block in model.hidden_layers:
        w, g = block.weight_layer.weight.detach().double(), block.weight_layer.weight.grad.double()
        alive = g.norm(dim=1) > 0
        cos = (w * g).sum(dim=1) / (w.norm(dim=1) * g.norm(dim=1))
        cosines.append(cos[alive].abs().numpy())
    return np.concatenate(cosines)


# ----------------------------------------------------------------------------------------------------------
# The first updates at a large learning rate: how the last hidden layer dies
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstUpdates:
    """The first ``U`` updates of the BN sweep's runs at ``lr`` (the shipped runs' seeds and minibatches).

    Attributes:
        lr, seeds: the setting.
        dead: (S, U) column u - 1: the fraction of the last hidden layer's units whose ReLU input is <= 0 for
            every example of update u's minibatch, in that update's forward (so with the parameters left by
            update u - 1; such a unit passes no gradient back in update u).
        beta, gamma: (S, U) column u - 1: the median over the last hidden layer's units of BN's shift beta and
            of |gamma|, after update u.
        bound_dead: (S, U) column u - 1: the fraction of those units with beta + |gamma| sqrt(m - 1) <= 0 after
            update u: dead for *every* possible minibatch of m examples from then on (a normalized value never
            exceeds sqrt(m - 1) in size).
    """

    lr: float
    seeds: tuple[int, ...]
    dead: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    bound_dead: np.ndarray


def largest_normalized(m: int = 64, batches: int = 20_000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, 5th percentile, 95th percentile)`` over ``batches`` minibatches of ``m`` standard normal values
    of the largest value after normalizing the minibatch (mean 0, biased variance 1): how far a normalized
    input typically reaches, against the bound sqrt(m - 1) that no minibatch can exceed. About 50 ms."""
    x = np.random.default_rng(seed).standard_normal((batches, m))
    largest = ((x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)).max(axis=1)
    return float(largest.mean()), float(np.percentile(largest, 5)), float(np.percentile(largest, 95))


def _replay(config: LearningRateConfig, seed: int, updates: int) -> dict[str, list[float]]:
    """One seed of :func:`first_updates`: the last hidden layer after each of the first ``updates`` updates."""
    m = config.batch_size
    rows: dict[str, list[float]] = {key: [] for key in ("dead", "beta", "gamma", "bound_dead")}
    seen: dict = {}

    def capture(module, inputs, output) -> None:
        if module.training:  # the update's forward (evaluations run in eval mode)
            seen["input"] = inputs[0].detach()

    def before(model) -> None:
        seen["model"] = model
        seen["hook"] = model.hidden_layers[-1].activation.register_forward_hook(capture)

    def on_step(update: int) -> None:
        norm = seen["model"].hidden_layers[-1].norm_layer
        gamma, beta = norm.weight.detach(), norm.bias.detach()
        rows["dead"].append(float((seen["input"] <= 0).all(dim=0).double().mean()))
        rows["beta"].append(float(beta.median()))
        rows["gamma"].append(float(gamma.abs().median()))
        rows["bound_dead"].append(float((beta + gamma.abs() * math.sqrt(m - 1) <= 0).double().mean()))

    try:
        train_mlp(seed=seed, steps=updates, batch_size=m, lr=config.lr, record_every=updates, progress=False,
                  before_training=before, on_step=on_step, depth=config.depth, width=config.width,
                  activation=config.activation, **config.model_options())
    finally:
        if "hook" in seen:
            seen["hook"].remove()
    return rows


def first_updates(lr: float, updates: int = 20, seeds: tuple[int, ...] = (0, 1, 2)) -> FirstUpdates:
    """Replay the first ``updates`` updates of the shipped BN run at ``lr`` for each seed (same weights, same
    minibatches) and record the last hidden layer (see :class:`FirstUpdates`). About 0.1 s per seed for 20
    updates."""
    config = LearningRateConfig(lr=lr, norm="batch")
    per_seed = [_replay(config, seed, updates) for seed in seeds]
    return FirstUpdates(lr=lr, seeds=tuple(seeds),
                        **{key: np.array([rows[key] for rows in per_seed]) for key in per_seed[0]})


# ----------------------------------------------------------------------------------------------------------
# The loss after one step from initialization
# ----------------------------------------------------------------------------------------------------------


def one_step_crossing(ratios: Mapping[float, Sequence[float]]) -> tuple[float, float]:
    """``(largest rate at which every seed's one-step loss ratio is below 1, smallest rate above it at which
    every seed's is above 1)``: where one step from initialization starts to make the loss worse."""
    rates = sorted(ratios)
    below = [lr for lr in rates if max(ratios[lr]) < 1]
    last = max(below) if below else -math.inf
    above = [lr for lr in rates if lr > last and min(ratios[lr]) > 1]
    return (last if below else math.nan), (min(above) if above else math.nan)


def one_step_separation(ratios: Mapping[float, Sequence[float]], by_lr: Mapping[float, SeedRuns],
                        threshold: float = TRAINS_THRESHOLD) -> tuple[float, float]:
    """``(largest one-step ratio among the rates at which every seed trains, smallest among the rates at which
    some seed fails)``, over the rates both mappings share. The first below the second: the one-step ratio
    at initialization separates the rates that train from those that fail."""
    shared = sorted(set(ratios) & set(by_lr))
    trained = [r for lr in shared if _trains(by_lr[lr], threshold) for r in ratios[lr]]
    failed = [r for lr in shared if not _trains(by_lr[lr], threshold) for r in ratios[lr]]
    return (max(trained) if trained else math.nan), (min(failed) if failed else math.nan)


# ----------------------------------------------------------------------------------------------------------
# Weight decay
# ----------------------------------------------------------------------------------------------------------


def weight_decay_effective_lr(runs: SeedRuns, record: int = -1, layers: slice = slice(1, None)) -> float:
    """lr / ||w||^2 of the median unit at ``record``, averaged over ``layers`` (default 2..L) and seeds."""
    return float(np.mean(runs.values("effective_lr")[:, record, layers]))
