"""The numbers lecture 9 states, computed from the learning-rate and weight-decay runs that ship with the package
(the lecture prints them, ``tests/test_lesson_learning_rate.py`` checks them against the same brackets).

Five functions compute something new. In well under a second each: :func:`first_updates` replays the first
updates of a shipped BN run (same seed, same minibatches) and watches its last hidden layer die;
:func:`gradient_weight_cosines` and :func:`gradient_scale_ratios` take gradients at initialization to show that
a BN unit's gradient is orthogonal to its weight vector and shrinks as 1/||w||; :func:`largest_normalized`
samples how far a normalized value reaches. In a few seconds: :func:`fixed_norm_runs` trains the BN net with
every hidden unit's weight norm held at its initial value, the control for what the norms' growth does.
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
from bnlab.experiments._runs import map_seeds, mnist, train_mlp
from bnlab.experiments.learning_rate import TRAINS_THRESHOLD, LearningRateConfig, trains
from bnlab.models import build_mlp

__all__ = [
    "FirstUpdates",
    "border_ratio",
    "dead_below_last",
    "divergence_updates",
    "effective_lr",
    "effective_lr_at_end",
    "first_updates",
    "fixed_norm_runs",
    "gradient_scale_ratios",
    "gradient_weight_cosines",
    "largest_normalized",
    "last_layer_dead",
    "layer_effective_lr",
    "layer_norms",
    "learning_rate_border",
    "median_unit_norm",
    "norm_drift",
    "norm_growth",
    "one_step_crossing",
    "one_step_separation",
    "weight_decay_effective_lr",
]


# ----------------------------------------------------------------------------------------------------------
# The stability border
# ----------------------------------------------------------------------------------------------------------


def learning_rate_border(by_lr: Mapping[float, SeedRuns], threshold: float = TRAINS_THRESHOLD
                         ) -> tuple[float, float]:
    """``(largest grid rate at which every seed trains, next grid rate)``: the border lies between them.
    A run trains when it does not diverge and ends above ``threshold``. NaN where there is none."""
    rates = sorted(by_lr)
    good = [lr for lr in rates if trains(by_lr[lr], threshold)]
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


def dead_below_last(runs: SeedRuns) -> np.ndarray:
    """(S,) per seed, the largest fraction of dead units (as in :func:`last_layer_dead`) among the hidden layers
    below the last one; NaN for a seed that diverged."""
    return runs.values("dead_units")[:, :-1].max(axis=1)


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


def effective_lr(runs: SeedRuns, lr: float) -> np.ndarray:
    """(S, K, L) lr / ||w||^2 of each hidden layer's median unit (by weight norm), per seed and record: the
    effective learning rate of a scale-invariant (BN) unit. Only meaningful for BN runs."""
    return lr / runs.values("unit_weight_norms")[..., 1] ** 2


def layer_effective_lr(runs: SeedRuns, lr: float, record: int = -1) -> np.ndarray:
    """(L,) :func:`effective_lr` of each hidden layer at ``record``, seed mean (record 1 is update 50)."""
    return effective_lr(runs, lr)[:, record].mean(axis=0)


def effective_lr_at_end(by_lr: Mapping[float, SeedRuns], layers: slice = slice(0, 1)) -> dict[float, float]:
    """``{lr: effective rate}`` at the end of training: :func:`effective_lr` of each layer's median unit, the
    mean over ``layers`` (default layer 1 alone; ``slice(1, None)`` for layers 2..L) and over seeds. The
    figures of :mod:`bnlab.plots.learning_rate` draw the same quantity."""
    return {lr: float(effective_lr(runs, lr)[:, -1, layers].mean()) for lr, runs in sorted(by_lr.items())}


def _init_batch(norm: str, seed: int, batch_size: int):
    """The sweep's depth-10 ReLU net (He init) built with ``seed``, and ``batch_size`` training examples
    drawn with ``seed``."""
    data = mnist()
    model = build_mlp(depth=10, width=100, activation="relu", norm=norm, init="he", seed=seed)
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(seed))[:batch_size]
    model.train()
    return model, data.x_train[order], data.y_train[order]


def _hidden_gradients(model, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Each hidden weight layer's loss gradient (float64) on one minibatch, one thread."""
    model.zero_grad(set_to_none=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        F.cross_entropy(model(x), y).backward()
    finally:
        torch.set_num_threads(previous)
    return [block.weight_layer.weight.grad.double().clone() for block in model.hidden_layers]


def gradient_weight_cosines(norm: str, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """|cos| of the angle between each hidden unit's weight vector and its loss gradient, one minibatch at
    initialization (depth-10 ReLU, width 100, He init, as the sweep; the minibatch is ``batch_size`` training
    examples drawn with ``seed``). Units whose gradient is exactly 0 (dead at init) are left out.

    With BN a unit's output does not depend on the scale of its weights, so the gradient is orthogonal to
    them: the cosines are rounding errors. Without BN they are not. One forward and backward, one thread."""
    model, x, y = _init_batch(norm, seed, batch_size)
    cosines = []
    for block, g in zip(model.hidden_layers, _hidden_gradients(model, x, y)):
        w = block.weight_layer.weight.detach().double()
        alive = g.norm(dim=1) > 0
        cos = (w * g).sum(dim=1) / (w.norm(dim=1) * g.norm(dim=1))
        cosines.append(cos[alive].abs().numpy())
    return np.concatenate(cosines)


def gradient_scale_ratios(norm: str, seed: int = 0, scale: float = 2.0, batch_size: int = 64) -> np.ndarray:
    """For each hidden unit, ||gradient with its layer's weights multiplied by ``scale``|| / ||gradient at
    init||, the same net and minibatch as :func:`gradient_weight_cosines` (one layer scaled at a time, the
    others at init), computed in float64. Units whose gradient at init is exactly 0 are left out.

    With BN the loss does not change when a layer's weights are scaled, and the gradient scales as 1/scale
    (0.5 for the default 2): it shrinks as 1/||w||. Without BN the scaled layer changes what the net computes,
    and the ratio is whatever that change makes it. Eleven forwards and backwards, one thread."""
    model, x, y = _init_batch(norm, seed, batch_size)
    model, x = model.double(), x.double()  # float32 rounding flips a few ReLUs at 0 and moves the ratio by 1%
    before = _hidden_gradients(model, x, y)
    ratios = []
    for index, block in enumerate(model.hidden_layers):
        weight = block.weight_layer.weight
        with torch.no_grad():
            weight.mul_(scale)
        after = _hidden_gradients(model, x, y)[index]
        with torch.no_grad():
            weight.div_(scale)
        alive = before[index].norm(dim=1) > 0
        ratios.append((after.norm(dim=1)[alive] / before[index].norm(dim=1)[alive]).numpy())
    return np.concatenate(ratios)


# ----------------------------------------------------------------------------------------------------------
# The control: BN with every hidden unit's weight norm held fixed
# ----------------------------------------------------------------------------------------------------------


def fixed_norm_runs(lr: float, seeds: tuple[int, ...] = (0, 1, 2)) -> SeedRuns:
    """The BN runs of the sweep at ``lr`` (same seeds, weights and minibatches), except that before every
    forward each hidden unit's weight vector is rescaled to its norm at initialization. For a BN unit that
    changes nothing the net computes; it only keeps the unit's effective learning rate at lr / ||w_0||^2
    (about lr / 2 under He init) for the whole run, where SGD alone would grow ||w|| and shrink it.

    Recorded as the sweep's runs are (:meth:`LearningRateConfig.measure`: ``unit_weight_norms``,
    ``dead_units``, and the records every experiment keeps). Never cached; the seeds train in parallel
    threads, about 3 s per seed at 600 updates."""
    config = LearningRateConfig(lr=lr, norm="batch")

    def one_seed(seed: int) -> dict[str, np.ndarray]:
        def hold_norms(model) -> None:
            for block in model.hidden_layers:
                layer = block.weight_layer
                initial = layer.weight.detach().norm(dim=1, keepdim=True).clone()

                def rescale(module, args, initial=initial) -> None:
                    with torch.no_grad():
                        module.weight.mul_(initial / module.weight.norm(dim=1, keepdim=True))

                layer.register_forward_pre_hook(rescale)

        result, model = train_mlp(seed=seed, steps=config.steps, batch_size=config.batch_size, lr=lr,
                                  record_every=config.record_every, progress=False, before_training=hold_norms,
                                  depth=config.depth, width=config.width, activation=config.activation,
                                  **config.model_options())
        return {**config.records(result), **config.measure(result, model)}

    seeds = tuple(seeds)
    return SeedRuns(seeds=seeds, arrays=map_seeds(one_seed, seeds))


def norm_drift(runs: SeedRuns) -> float:
    """The largest relative change, over seeds, records and hidden layers, of the median unit's weight norm
    from its value at initialization: 0 up to rounding for :func:`fixed_norm_runs`."""
    median = runs.values("unit_weight_norms")[..., 1]  # (S, K, L)
    return float(np.nanmax(np.abs(median / median[:, :1] - 1)))


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
    trained = [r for lr in shared if trains(by_lr[lr], threshold) for r in ratios[lr]]
    failed = [r for lr in shared if not trains(by_lr[lr], threshold) for r in ratios[lr]]
    return (max(trained) if trained else math.nan), (min(failed) if failed else math.nan)


# ----------------------------------------------------------------------------------------------------------
# Weight decay
# ----------------------------------------------------------------------------------------------------------


def weight_decay_effective_lr(runs: SeedRuns, record: int = -1, layers: slice = slice(1, None)) -> float:
    """lr / ||w||^2 of the median unit at ``record``, averaged over ``layers`` (default 2..L) and seeds."""
    return float(np.mean(runs.values("effective_lr")[:, record, layers]))
