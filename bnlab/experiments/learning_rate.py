"""Lecture 9: learning rates. The largest stable learning rate with and without batch norm, the loss after one
step at initialization, and how each unit's weight norm sets batch norm's effective learning rate.

Reference (bn-facts): a depth-10 ReLU MLP with He init, 600 steps: without BN training diverges above lr 0.3,
with BN it trains up to 3. With BN a unit's output does not depend on the scale of its weight vector w, its
gradient shrinks as 1/||w|| and its effective learning rate is lr/||w||^2; the sweep records the per-unit
norms that show it. Weight decay lives in :mod:`bnlab.experiments.weight_decay`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from bnlab._validation import check_choice, check_float, check_int
from bnlab.experiments._runs import SeedRuns, check_seeds, mnist
from bnlab.experiments.base import ACTIVATIONS, Experiment, sweep
from bnlab.models import build_mlp
from bnlab.recording import hidden_layer_outputs
from bnlab.train import TrainResult

__all__ = [
    "GRID_LEARNING_RATES",
    "LR_INITS",
    "LR_NORMS",
    "LR_SETTINGS",
    "LearningRateConfig",
    "OneStepConfig",
    "TRAINS_THRESHOLD",
    "dead_unit_fractions",
    "learning_rate_sweep",
    "max_stable_learning_rate",
    "one_step_loss_ratio",
    "one_step_sweep",
    "trains",
]

LR_NORMS = ("none", "batch")
LR_INITS = ("default", "he")
# log-spaced, four per decade, from 0.01 to 10 (so 0.3 ~ 10^-0.5 and 3 ~ 10^0.5 are grid points)
GRID_LEARNING_RATES = tuple(float(f"{10 ** (k / 4):.4g}") for k in range(-8, 5))
TRAINS_THRESHOLD = 0.5  # a run "trains" when it does not diverge and ends above this test accuracy
LR_SETTINGS = {"no BN": "none", "BN": "batch"}


@dataclass(frozen=True)
class LearningRateConfig(Experiment):
    """One point of the learning-rate sweep: a depth-``depth`` MLP trained at ``lr``, once per seed.

    Attributes (beyond :class:`~bnlab.experiments.Experiment`'s): ``norm`` ``"none"`` or ``"batch"``;
    ``init`` ``"he"`` (default: the plain net trains) or ``"default"`` (torch's).
    """

    name = "learning_rate"
    version = 2  # 2: per-unit weight norms, dead units, diverged_at

    depth: int = 10
    norm: str = "none"
    init: str = "he"

    def check(self) -> None:
        check_choice(self.norm, "norm", LR_NORMS)
        check_choice(self.init, "init", LR_INITS)

    def model_options(self) -> dict:
        return {"norm": self.norm, "init": self.init}

    def measure(self, result: TrainResult, model) -> dict[str, np.ndarray]:
        """``unit_weight_norms`` (K, L, 3): 15/50/85th percentile over each hidden layer's units of a unit's
        weight-vector norm; ``dead_units`` (L,): fraction of each hidden layer's units that output 0 for
        every test example at the end (NaN if the run diverged)."""
        records = len(result.config.recorded_steps())
        norms = np.full((records, self.depth, 3), np.nan)
        norms[:len(result.unit_weight_norms)] = result.unit_weight_norms[:, :-1]
        dead = np.full(self.depth, np.nan) if result.diverged else dead_unit_fractions(model)
        return {"unit_weight_norms": norms, "dead_units": dead}

    @classmethod
    def grid(cls) -> list[LearningRateConfig]:
        return [cls(lr=lr, norm=norm) for norm in LR_NORMS for lr in GRID_LEARNING_RATES]


def dead_unit_fractions(model) -> np.ndarray:
    """(L,) for each hidden layer, the fraction of its units whose output (after the nonlinearity) is exactly
    0 for every test example, the model in eval mode. A layer with every unit dead passes nothing on: the
    output layer then sees the same input for every image and can do no better than the class frequencies."""
    outputs = hidden_layer_outputs(model, mnist().x_test, train_mode=False)
    return np.array([float((out == 0).all(dim=0).double().mean()) for out in outputs])


def trains(runs: SeedRuns, threshold: float = TRAINS_THRESHOLD) -> bool:
    """True when every seed finished without diverging and above ``threshold`` test accuracy."""
    accuracy = runs.final_accuracies()
    return bool(np.all(np.isfinite(accuracy)) and np.all(accuracy > threshold))


def max_stable_learning_rate(results: dict[float, SeedRuns], threshold: float = TRAINS_THRESHOLD) -> float:
    """The largest learning rate of a sweep ``{lr: runs}`` at which every seed trains (see :func:`trains`);
    NaN when none does."""
    stable = [lr for lr, runs in results.items() if trains(runs, threshold)]
    return max(stable) if stable else math.nan


def learning_rate_sweep(base: LearningRateConfig = LearningRateConfig(),
                        learning_rates: tuple[float, ...] = GRID_LEARNING_RATES, *, cached_only: bool = False,
                        skip_missing: bool = False, progress: bool | None = None
                        ) -> dict[str, dict[float, SeedRuns]]:
    """``{"no BN": {lr: runs}, "BN": {lr: runs}}`` over ``learning_rates`` (what
    :func:`bnlab.plots.plot_lr_sweep` draws; :func:`max_stable_learning_rate` reads each)."""
    return {label: sweep({lr: replace(base, norm=norm, lr=lr) for lr in learning_rates}, cached_only=cached_only,
                         skip_missing=skip_missing, progress=progress)
            for label, norm in LR_SETTINGS.items()}


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
        check_choice(self.activation, "activation", ACTIVATIONS)
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


def one_step_sweep(settings: dict[str, OneStepConfig], learning_rates: tuple[float, ...],
                   seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, dict[float, list[float]]]:
    """``{label: {lr: [ratio per seed]}}`` of :func:`one_step_loss_ratio` for each setting (a base config)."""
    seeds = check_seeds(seeds)
    return {label: {lr: [one_step_loss_ratio(replace(config, lr=lr, seed=seed)) for seed in seeds]
                    for lr in learning_rates}
            for label, config in settings.items()}
