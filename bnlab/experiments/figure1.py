"""Lecture 10: the paper's figure 1 (Ioffe & Szegedy 2015), on the course's MNIST subset.

The paper's setting: 3 hidden layers of 100 sigmoid units, weights "initialized to small random Gaussian
values", minibatches of 60, 50,000 steps; (a) test accuracy with and without batch norm, (b, c) the 15th, 50th
and 85th percentiles of the input of "a typical sigmoid" of the last hidden layer over training. The paper
gives neither the learning rate nor the weights' standard deviation, so both are fields here and the default
grid crosses them (:data:`GRID_LEARNING_RATES` x :data:`GRID_INIT_STDS` x BN on/off, three seeds, 1,000
updates), plus the default setting trained for 5,000 updates (:data:`LONG_STEPS`).

What one run records beyond the shared records (:meth:`Figure1Config.run_seed`):

* after every recorded update, on a fixed **probe batch** (the 1,000 test digits as one batch), a copy of the
  network in **training mode** (every BN normalizes with the probe batch's own mean and variance, as the
  paper's training network N_BN^tr does; the run's running statistics are never touched) gives each
  last-hidden-layer unit's 15/50/85th percentile of its sigmoid input (for BN: after BN's gamma and beta);
* the *typical unit* is chosen from those records by a rule that favours neither net: each unit's movement
  is the largest distance, over the records and the three percentiles, from where that unit started; the
  typical unit is the one whose movement is the median of the layer's (:func:`typical_unit`);
* at initialization the gradient norm of every weight layer (first minibatch), and at initialization and at
  the end the fraction of each hidden layer's sigmoid inputs beyond +-3, where sigmoid'(z) < 0.05.

Three small controls the lecture measures live (not cached): :func:`init_gradient_norms` (optionally with the
output layer held at a fixed scale), :func:`init_signal_spread` (the forward shrink at initialization) and
:func:`early_predictions` (the first updates again: eval vs batch statistics, classes predicted).

    from bnlab.experiments.figure1 import Figure1Config, figure1_runs
    runs = figure1_runs(Figure1Config(lr=0.5, init_std=0.01))      # {"no BN": SeedRuns, "BN": SeedRuns}
    runs["BN"].values("unit_percentiles")                          # (S, K, 3)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from bnlab._validation import check_choice, check_float, check_int
from bnlab.experiments._runs import SeedRuns, mnist, pad, train_mlp
from bnlab.experiments.base import Experiment, run, sweep
from bnlab.models import build_mlp
from bnlab.recording import (
    PERCENTILE_LEVELS,
    gradient_norms,
    named_weight_layers,
    nonlinearity_inputs,
)
from bnlab.train import TrainConfig, TrainResult

__all__ = [
    "FIGURE1_NORMS",
    "GRID_INIT_STDS",
    "GRID_LEARNING_RATES",
    "LONG_RECORD_EVERY",
    "LONG_STEPS",
    "NETS",
    "SATURATION",
    "Figure1Config",
    "SigmoidInputProbe",
    "early_predictions",
    "figure1_runs",
    "figure1_sweep",
    "hidden_inputs",
    "init_gradient_norms",
    "init_signal_spread",
    "saturated_fractions",
    "typical_unit",
    "unit_movements",
]

FIGURE1_NORMS = ("none", "batch")
NETS = {"no BN": "none", "BN": "batch"}  # label -> norm, in the order every figure draws them
GRID_LEARNING_RATES = (0.1, 0.2, 0.5, 1.0, 2.0)
GRID_INIT_STDS = (0.01, 0.03, 0.1, 0.3, 1.0)
LONG_STEPS, LONG_RECORD_EVERY = 5000, 100  # the default setting, trained five times longer
SATURATION = 3.0  # |z| beyond which sigmoid'(z) < 0.05


@dataclass(frozen=True)
class Figure1Config(Experiment):
    """One setting of the paper's figure 1 (shared fields: :class:`~bnlab.experiments.Experiment`).

    Defaults: 3 x 100 sigmoid units, batch 60, lr 0.5, 1,000 updates recorded every 25.

    Attributes:
        norm: ``"none"`` or ``"batch"`` (before each sigmoid; no bias before a BN).
        init_std: every weight (output layer included) drawn from N(0, init_std^2), biases 0.
    """

    name = "figure1"
    version = 1

    activation: str = "sigmoid"
    lr: float = 0.5
    batch_size: int = 60
    steps: int = 1000
    record_every: int = 25
    norm: str = "none"
    init_std: float = 0.01

    def check(self) -> None:
        check_choice(self.norm, "norm", FIGURE1_NORMS)
        check_float(self.init_std, "init_std", 0.0, inclusive=False)

    def model_options(self) -> dict:
        return {"norm": self.norm, "init": "gaussian", "init_std": self.init_std}

    def measure(self, result: TrainResult, model) -> dict[str, np.ndarray]:
        """``grad_norms_init`` (L + 1,): each weight layer's gradient norm on the first minibatch (output layer
        last); ``saturated_final`` (L,): the fraction of each hidden layer's sigmoid inputs on the probe batch
        with |z| > :data:`SATURATION` at the end (NaN if the run diverged)."""
        final = np.full(self.depth, np.nan) if result.diverged else saturated_fractions(model)
        return {"grad_norms_init": result.grad_norms[0], "saturated_final": final}

    def run_seed(self, seed: int, progress: bool = False, on_step: Callable[[int], None] | None = None
                 ) -> dict[str, np.ndarray]:
        """One seed's run, with a :class:`SigmoidInputProbe` after every recorded update.

        The base class measures only before and after training; figure 1 needs the probe during training, so
        this trains through :func:`~bnlab.experiments._runs.train_mlp` with the same arguments as
        :meth:`Experiment.run_seed`, and the probe in ``before_training`` and ``on_step``. The probe runs a
        copy of the network, so the run is update for update the one an unprobed run makes.
        """
        recorded = TrainConfig(steps=self.steps, record_every=self.record_every).recorded_steps()
        probe = SigmoidInputProbe(recorded)
        initial: dict[str, np.ndarray] = {}

        def before_training(model) -> None:
            probe.attach(model)
            initial["saturated_init"] = saturated_fractions(model)

        def each_update(update: int) -> None:
            probe.after_update(update)
            if on_step is not None:
                on_step(update)

        result, model = train_mlp(
            seed=seed, steps=self.steps, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            record_every=self.record_every, progress=progress, on_step=each_update,
            before_training=before_training, depth=self.depth, width=self.width, activation=self.activation,
            **self.model_options())
        return {**self.records(result), **probe.arrays(), **initial, **self.measure(result, model)}

    @classmethod
    def grid(cls) -> list[Figure1Config]:
        """Every learning rate x init std x BN on/off of the default grid, then the default setting trained
        for :data:`LONG_STEPS` updates (both nets)."""
        grid = [cls(lr=lr, init_std=std, norm=norm)
                for lr in GRID_LEARNING_RATES for std in GRID_INIT_STDS for norm in FIGURE1_NORMS]
        return grid + [cls(norm=norm, steps=LONG_STEPS, record_every=LONG_RECORD_EVERY) for norm in FIGURE1_NORMS]


# ----------------------------------------------------------------------------------------------------------
# The probe: every unit's sigmoid input on a fixed batch, in training mode
# ----------------------------------------------------------------------------------------------------------


def hidden_inputs(model, x: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The input z (N, C) of every hidden layer's nonlinearity when ``x`` (default: the probe batch, the 1,000
    test digits) passes through a **copy** of ``model`` in training mode: each BN normalizes with the batch's
    own statistics, and the model's running statistics and mode stay untouched. Input side first."""
    x = mnist().x_test if x is None else x
    return nonlinearity_inputs(copy.deepcopy(model).train(), x)


def saturated_fractions(model, x: torch.Tensor | None = None, threshold: float = SATURATION) -> np.ndarray:
    """(L,) the fraction of each hidden layer's nonlinearity inputs (all units, all examples of ``x``, training
    mode, see :func:`hidden_inputs`) with |z| > ``threshold`` (NaN for a layer with a non-finite input)."""
    fractions = []
    for z in hidden_inputs(model, x):
        z = z.double()
        fractions.append(float((z.abs() > threshold).double().mean()) if torch.isfinite(z).all() else np.nan)
    return np.array(fractions)


class SigmoidInputProbe:
    """Records, at each of ``recorded`` updates, the 15/50/85th percentile of every last-hidden-layer unit's
    nonlinearity input on the probe batch (:func:`hidden_inputs`).

    Usage (what :meth:`Figure1Config.run_seed` does): ``attach(model)`` before training (records update 0),
    ``after_update(update)`` after every update, then ``arrays()``.
    """

    def __init__(self, recorded: tuple[int, ...], x: torch.Tensor | None = None):
        self.recorded = tuple(recorded)
        self.x = x
        self.model = None
        self.rows: list[np.ndarray] = []  # one (C, 3) per record made

    def attach(self, model) -> None:
        self.model = model
        if 0 in self.recorded:
            self._record()

    def after_update(self, update: int) -> None:
        if update in self.recorded:
            self._record()

    def _record(self) -> None:
        z = hidden_inputs(self.model, self.x)[-1].double().numpy()  # (N, C)
        if np.all(np.isfinite(z)):
            self.rows.append(np.percentile(z, PERCENTILE_LEVELS, axis=0).T)
        else:
            self.rows.append(np.full((z.shape[1], len(PERCENTILE_LEVELS)), np.nan))

    def arrays(self) -> dict[str, np.ndarray]:
        """``unit_percentiles`` (K, 3): the typical unit's percentiles at every record (NaN after a divergence);
        ``typical_unit`` (): its index; ``movement_percentiles`` (3,): the 15/50/85th percentile over the
        layer's units of each unit's movement (:func:`unit_movements`; the typical unit's is the median)."""
        per_unit = pad(np.array(self.rows), len(self.recorded))  # (K, C, 3)
        unit = typical_unit(per_unit)
        movements = unit_movements(per_unit)
        shown = movements[np.isfinite(movements)]
        spread = np.percentile(shown, PERCENTILE_LEVELS) if shown.size else np.full(3, np.nan)
        return {"unit_percentiles": per_unit[:, unit], "typical_unit": np.float64(unit),
                "movement_percentiles": spread}


def unit_movements(per_unit: np.ndarray) -> np.ndarray:
    """(C,) of ``per_unit`` (K, C, 3), each unit's percentiles at K records: the largest distance, over the
    records and the three percentiles, from the unit's first record (records that are NaN are skipped; NaN
    for a unit without a finite first record)."""
    per_unit = np.asarray(per_unit, dtype=np.float64)
    if per_unit.ndim != 3 or per_unit.shape[0] < 1:
        raise ValueError(f"per_unit must have shape (K, C, levels) with K >= 1, got {per_unit.shape}")
    distance = np.abs(per_unit - per_unit[:1])  # (K, C, 3)
    finite = np.isfinite(distance)
    moved = np.where(finite, distance, -np.inf).max(axis=(0, 2))
    return np.where(finite.any(axis=(0, 2)), moved, np.nan)


def typical_unit(per_unit: np.ndarray) -> int:
    """The unit of ``per_unit`` (K, C, 3) whose :func:`unit_movements` is the median of the layer's (the
    lower middle one for an even C; ties by index): neither the most nor the least moving unit, in either net."""
    movements = unit_movements(per_unit)
    order = np.argsort(np.where(np.isfinite(movements), movements, np.inf), kind="stable")
    finite = int(np.isfinite(movements).sum())
    return int(order[(finite - 1) // 2]) if finite else 0


# ----------------------------------------------------------------------------------------------------------
# Controls the lecture measures live (small: a model at initialization, or a few hundred updates)
# ----------------------------------------------------------------------------------------------------------


def _model_at_init(config: Figure1Config, seed: int):
    return build_mlp(seed=seed, depth=config.depth, width=config.width, activation=config.activation,
                     **config.model_options())


def init_gradient_norms(config: Figure1Config, seed: int, output_std: float | None = None) -> np.ndarray:
    """(L + 1,) each weight layer's gradient norm on the first minibatch of ``seed``'s run at initialization
    (what the runs record as ``grad_norms_init``, output layer last).

    ``output_std``: the control. The output layer's weights are rescaled to N(0, output_std^2) (the same draw
    times output_std / init_std), so the hidden layers' init std varies while the output layer stays fixed.
    """
    seed = check_int(seed, "seed", minimum=0)
    model = _model_at_init(config, seed)
    if output_std is not None:
        output_std = check_float(output_std, "output_std", 0.0, inclusive=False)
        with torch.no_grad():
            model.output.weight.mul_(output_std / config.init_std)
    data = mnist()
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(seed))[:config.batch_size]
    model.train()
    F.cross_entropy(model(data.x_train[order]), data.y_train[order]).backward()  # train()'s first minibatch
    return gradient_norms(named_weight_layers(model))


def init_signal_spread(config: Figure1Config, seed: int) -> np.ndarray:
    """(L,) for each hidden layer at initialization, how much its sigmoid inputs depend on the digit: the root
    mean square over the layer's units of each unit's standard deviation over the probe batch (the 1,000 test
    digits, training mode, :func:`hidden_inputs`). Consecutive entries' ratio is the forward shrink per layer."""
    seed = check_int(seed, "seed", minimum=0)
    spreads = [z.double().std(dim=0, unbiased=False).pow(2).mean().sqrt() for z in
               hidden_inputs(_model_at_init(config, seed))]
    return np.array([float(spread) for spread in spreads])


def early_predictions(config: Figure1Config, updates: Sequence[int]) -> dict[str, np.ndarray]:
    """Retrains every seed of ``config`` up to ``max(updates)`` updates (the shipped runs, update for update)
    and measures at each of ``updates`` on the 1,000 test digits:

    * ``accuracy_eval`` (S, U): the test accuracy in eval mode, with BN's running statistics (what the runs
      record as ``test_accuracy``);
    * ``accuracy_batch`` (S, U): the same model in training mode, each BN with the 1,000 digits' own mean and
      variance (identical for the plain net);
    * ``classes`` (S, U): how many distinct classes the model predicts (eval mode) over the 1,000 digits.
    """
    updates = tuple(check_int(u, "update", minimum=1) for u in updates)
    if not updates:
        raise ValueError("updates must name at least one update")
    data = mnist()
    out = {name: np.full((len(config.seeds), len(updates)), np.nan)
           for name in ("accuracy_eval", "accuracy_batch", "classes")}
    for row, seed in enumerate(config.seeds):
        holder = {}

        def measure(update: int, row: int = row, holder: dict = holder) -> None:
            if update not in updates:
                return
            model, col = holder["model"], updates.index(update)
            with torch.no_grad():
                predicted = model.eval()(data.x_test).argmax(dim=1)
                batch = copy.deepcopy(model).train()(data.x_test).argmax(dim=1)
            model.train()
            out["accuracy_eval"][row, col] = float((predicted == data.y_test).double().mean())
            out["accuracy_batch"][row, col] = float((batch == data.y_test).double().mean())
            out["classes"][row, col] = predicted.unique().numel()

        train_mlp(seed=seed, steps=max(updates), batch_size=config.batch_size, lr=config.lr,
                  weight_decay=config.weight_decay, record_every=max(updates), progress=False, on_step=measure,
                  before_training=lambda model, holder=holder: holder.update(model=model), depth=config.depth,
                  width=config.width, activation=config.activation, **config.model_options())
    return out


# ----------------------------------------------------------------------------------------------------------
# Sweeps
# ----------------------------------------------------------------------------------------------------------


def figure1_runs(config: Figure1Config = Figure1Config(), *, cached_only: bool = False,
                 progress: bool | None = None) -> dict[str, SeedRuns]:
    """``{"no BN": runs, "BN": runs}`` of ``config`` with each norm: the two nets of one figure 1."""
    if not isinstance(config, Figure1Config):
        raise TypeError(f"figure1_runs takes a Figure1Config, got {type(config).__name__}")
    return {label: run(replace(config, norm=norm), cached_only=cached_only, progress=progress)
            for label, norm in NETS.items()}


def figure1_sweep(base: Figure1Config = Figure1Config(), learning_rates: tuple[float, ...] = GRID_LEARNING_RATES,
                  init_stds: tuple[float, ...] = GRID_INIT_STDS, *, cached_only: bool = False,
                  skip_missing: bool = False, progress: bool | None = None
                  ) -> dict[str, dict[tuple[float, float], SeedRuns]]:
    """``{"no BN": {(lr, init_std): runs}, "BN": {...}}`` over every learning rate x init std (what
    :func:`bnlab.plots.figure1.plot_gap_grid` draws)."""
    if not isinstance(base, Figure1Config):
        raise TypeError(f"figure1_sweep takes a Figure1Config as base, got {type(base).__name__}")
    return {label: sweep({(lr, std): replace(base, norm=norm, lr=lr, init_std=std)
                          for lr in learning_rates for std in init_stds},
                         cached_only=cached_only, skip_missing=skip_missing, progress=progress)
            for label, norm in NETS.items()}
