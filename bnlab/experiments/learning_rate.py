"""Lecture 9: learning rates. The largest stable learning rate with and without batch norm, the loss after one
step at initialization, and weight decay turning into a larger effective learning rate under batch norm.

Reference (bn-facts): a depth-10 ReLU MLP with He init, 600 steps: without BN training diverges above lr 0.3,
with BN it trains up to 3 (about 10x). At initialization one step of lr 0.1 multiplies the loss of a depth-10
plain net by ~20 (by ~2e7 at lr 1); with BN the loss barely moves. With BN, a layer's output does not depend
on the scale of its weight, its gradient shrinks as 1/||W||, and the effective learning rate is lr/||W||^2:
weight decay shrinks ||W|| and so *raises* the effective learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from bnlab._validation import check_choice, check_float, check_int
from bnlab.experiments._runs import (
    SeedRuns,
    check_seeds,
    check_training_fields,
    final_accuracy,
    mnist,
    pad,
    run_seeds,
    seed_run_params,
    train_mlp,
)
from bnlab.models import build_mlp

__all__ = [
    "trains",
    "GRID_LEARNING_RATES",
    "GRID_WEIGHT_DECAYS",
    "LearningRateConfig",
    "OneStepConfig",
    "TRAINS_THRESHOLD",
    "WeightDecayConfig",
    "learning_rate_experiment",
    "learning_rate_grid",
    "learning_rate_sweep",
    "max_stable_learning_rate",
    "one_step_loss_ratio",
    "one_step_sweep",
    "weight_decay_experiment",
    "weight_decay_grid",
    "weight_decay_sweep",
]

LR_EXPERIMENT = "learning_rate"
WD_EXPERIMENT = "weight_decay"
LR_NORMS = ("none", "batch")
# log-spaced, four per decade, from 0.01 to 10 (so 0.3 ~ 10^-0.5 and 3 ~ 10^0.5 are grid points)
GRID_LEARNING_RATES = tuple(float(f"{10 ** (k / 4):.4g}") for k in range(-8, 5))
GRID_WEIGHT_DECAYS = (0.0, 5e-4, 2e-3, 5e-3)
TRAINS_THRESHOLD = 0.5  # a run "trains" when it does not diverge and ends above this test accuracy


@dataclass(frozen=True)
class LearningRateConfig:
    """One point of the learning-rate sweep: a depth-``depth`` MLP trained at ``lr``, once per seed."""

    lr: float = 0.1
    norm: str = "none"
    depth: int = 10
    width: int = 100
    activation: str = "relu"
    init: str = "he"
    batch_size: int = 64
    steps: int = 600
    record_every: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        check_choice(self.norm, "norm", LR_NORMS)
        check_int(self.width, "width", minimum=2)
        check_choice(self.activation, "activation", ("sigmoid", "tanh", "relu"))
        check_choice(self.init, "init", ("default", "he"))
        check_training_fields(self)

    def run_params(self, seed: int) -> dict:
        return seed_run_params(self, seed)


def run_lr_seed(config: LearningRateConfig, seed: int, progress: bool) -> dict[str, np.ndarray]:
    result, _ = train_mlp(seed=seed, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                          record_every=config.record_every, progress=progress, depth=config.depth,
                          width=config.width, activation=config.activation, norm=config.norm, init=config.init)
    steps = np.array(result.config.recorded_steps(), dtype=np.float64)
    return {
        "steps": steps,
        "test_accuracy": pad(result.test_accuracy, steps.size),
        "train_loss": pad(result.train_loss_avg, steps.size),
        "final_accuracy": np.float64(final_accuracy(result)),
        "diverged": np.float64(result.diverged),
        "diverged_at": np.float64(result.diverged_at if result.diverged else np.nan),
    }


def learning_rate_experiment(config: LearningRateConfig = LearningRateConfig(), *, progress: bool | None = None,
                             cached_only: bool = False) -> SeedRuns:
    """Train ``config`` once per seed (or read the cache). Per seed: ``steps``, ``test_accuracy``,
    ``train_loss`` (K,) (NaN after a divergence), ``final_accuracy`` () (NaN if diverged), ``diverged`` (),
    ``diverged_at`` () (the update that blew up, NaN if none).
    """
    if not isinstance(config, LearningRateConfig):
        raise TypeError(f"learning_rate_experiment takes a LearningRateConfig, got {type(config).__name__}")
    return run_seeds(LR_EXPERIMENT, config, run_lr_seed, progress, cached_only)


def trains(runs: SeedRuns, threshold: float = TRAINS_THRESHOLD) -> bool:
    """True when every seed finished without diverging and above ``threshold`` test accuracy."""
    accuracy = runs.values("final_accuracy")
    return bool(np.all(np.isfinite(accuracy)) and np.all(accuracy > threshold))


def max_stable_learning_rate(results: dict[float, SeedRuns], threshold: float = TRAINS_THRESHOLD) -> float:
    """The largest learning rate of a sweep ``{lr: runs}`` at which every seed trains (see :func:`trains`);
    NaN when none does."""
    stable = [lr for lr, runs in results.items() if trains(runs, threshold)]
    return max(stable) if stable else math.nan


def learning_rate_grid(base: LearningRateConfig = LearningRateConfig()) -> list[LearningRateConfig]:
    return [replace(base, lr=lr, norm=norm) for norm in LR_NORMS for lr in GRID_LEARNING_RATES]


# ----------------------------------------------------------------------------------------------------------
# The loss after one step, at initialization
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneStepConfig:
    """One SGD step from initialization on one minibatch of the MNIST subset.

    ``init``/``init_std`` as in :func:`bnlab.models.build_mlp`; the loss ratio is very sensitive to them
    (a plain Gaussian of std 0.15 in every layer blows up where He init does not).
    """

    lr: float = 0.1
    norm: str = "none"
    depth: int = 10
    width: int = 100
    activation: str = "relu"
    init: str = "he"
    init_std: float = 0.15
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.norm, "norm", LR_NORMS)
        check_int(self.width, "width", minimum=2)
        check_choice(self.activation, "activation", ("sigmoid", "tanh", "relu"))
        check_choice(self.init, "init", ("default", "he", "gaussian"))
        check_float(self.init_std, "init_std", 0.0, inclusive=False)


def one_step_loss_ratio(config: OneStepConfig = OneStepConfig()) -> float:
    """Loss on a minibatch after one SGD step of ``config.lr`` on that same minibatch, divided by the loss
    before (at initialization). Above 1: the step made things worse; ``inf`` when the loss overflowed.

    Cheap (one forward/backward pass), so never cached. One torch thread, seeded, global RNG untouched.
    """
    data = mnist()
    model = build_mlp(depth=config.depth, width=config.width, activation=config.activation, norm=config.norm,
                      init=config.init, init_std=config.init_std, seed=config.seed)
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(config.seed))
    x, y = data.x_train[order[:config.batch_size]], data.y_train[order[:config.batch_size]]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter -= config.lr * parameter.grad
            after = float(F.cross_entropy(model(x), y))
    finally:
        torch.set_num_threads(previous)
    before = loss.item()
    return after / before if math.isfinite(after) else math.inf


# ----------------------------------------------------------------------------------------------------------
# Weight decay as a larger effective learning rate
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightDecayConfig:
    """A batch-normalized MLP trained long enough for weight decay to shrink its weights."""

    weight_decay: float = 0.0
    norm: str = "batch"
    depth: int = 3
    width: int = 100
    activation: str = "relu"
    lr: float = 0.1
    batch_size: int = 64
    steps: int = 3000
    record_every: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        check_float(self.weight_decay, "weight_decay", 0.0)
        check_choice(self.norm, "norm", LR_NORMS)
        check_int(self.width, "width", minimum=2)
        check_choice(self.activation, "activation", ("sigmoid", "tanh", "relu"))
        check_training_fields(self)

    def run_params(self, seed: int) -> dict:
        return seed_run_params(self, seed)


def run_wd_seed(config: WeightDecayConfig, seed: int, progress: bool) -> dict[str, np.ndarray]:
    result, _ = train_mlp(seed=seed, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                          weight_decay=config.weight_decay, record_every=config.record_every, progress=progress,
                          depth=config.depth, width=config.width, activation=config.activation, norm=config.norm)
    steps = np.array(result.config.recorded_steps(), dtype=np.float64)
    hidden_norms = pad(result.weight_norms, steps.size)[:, :-1]  # (K, L): the scale-invariant layers under BN
    return {
        "steps": steps,
        "test_accuracy": pad(result.test_accuracy, steps.size),
        "train_loss": pad(result.train_loss_avg, steps.size),
        "weight_norm": hidden_norms,
        "effective_lr": config.lr / hidden_norms ** 2,
        "final_accuracy": np.float64(final_accuracy(result)),
        "diverged": np.float64(result.diverged),
    }


def weight_decay_experiment(config: WeightDecayConfig = WeightDecayConfig(), *, progress: bool | None = None,
                            cached_only: bool = False) -> SeedRuns:
    """Train ``config`` once per seed (or read the cache). Per seed, K records and L hidden layers:
    ``steps``, ``test_accuracy``, ``train_loss`` (K,); ``weight_norm`` (K, L) Frobenius norm of each hidden
    weight matrix; ``effective_lr`` (K, L) = lr / ||W||^2; ``final_accuracy`` (); ``diverged`` ().
    """
    if not isinstance(config, WeightDecayConfig):
        raise TypeError(f"weight_decay_experiment takes a WeightDecayConfig, got {type(config).__name__}")
    return run_seeds(WD_EXPERIMENT, config, run_wd_seed, progress, cached_only)


def weight_decay_grid(base: WeightDecayConfig = WeightDecayConfig()) -> list[WeightDecayConfig]:
    return [replace(base, weight_decay=wd) for wd in GRID_WEIGHT_DECAYS]


LR_SETTINGS = {"no BN": "none", "BN": "batch"}


def learning_rate_sweep(base: LearningRateConfig = LearningRateConfig(),
                        learning_rates: tuple[float, ...] = GRID_LEARNING_RATES, *, cached_only: bool = False,
                        progress: bool | None = None) -> dict[str, dict[float, SeedRuns]]:
    """``{"no BN": {lr: runs}, "BN": {lr: runs}}`` over ``learning_rates`` (what
    :func:`bnlab.plots.plot_lr_sweep` draws; :func:`max_stable_learning_rate` reads each)."""
    return {label: {lr: learning_rate_experiment(replace(base, norm=norm, lr=lr), cached_only=cached_only,
                                                 progress=progress)
                    for lr in learning_rates}
            for label, norm in LR_SETTINGS.items()}


def one_step_sweep(settings: dict[str, OneStepConfig], learning_rates: tuple[float, ...],
                   seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, dict[float, list[float]]]:
    """``{label: {lr: [ratio per seed]}}`` of :func:`one_step_loss_ratio` for each setting (a base config)."""
    seeds = check_seeds(seeds)
    return {label: {lr: [one_step_loss_ratio(replace(config, lr=lr, seed=seed)) for seed in seeds]
                    for lr in learning_rates}
            for label, config in settings.items()}


def weight_decay_sweep(base: WeightDecayConfig = WeightDecayConfig(),
                       weight_decays: tuple[float, ...] = GRID_WEIGHT_DECAYS, *, cached_only: bool = False,
                       progress: bool | None = None) -> dict[float, SeedRuns]:
    """``{weight_decay: runs}`` (what :func:`bnlab.plots.plot_weight_decay` draws)."""
    return {wd: weight_decay_experiment(replace(base, weight_decay=wd), cached_only=cached_only,
                                        progress=progress)
            for wd in weight_decays}
