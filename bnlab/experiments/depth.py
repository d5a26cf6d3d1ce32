"""Lecture 7: how deep can a plain MLP get before it stops learning, and what batch norm (or init) changes.

Setting of the measurements in the course's reference (bn-facts): MNIST subset, width 100, torch's default
init, SGD with lr 0.1, batch 64, 600 steps. Without normalization, sigmoid nets stop learning from about depth
5 and ReLU nets from about depth 10; with batch norm depth 20 trains; He init alone rescues the ReLU net.

    from bnlab.experiments import DepthConfig, depth_experiment
    runs = depth_experiment(DepthConfig(depth=20, norm="batch"))
    runs.mean("test_accuracy")          # (K,) seed mean at runs.mean("steps")
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bnlab._validation import check_choice, check_float, check_int
from bnlab.experiments._runs import (
    SeedRuns,
    check_training_fields,
    final_accuracy,
    pad,
    percentiles_in_training_mode,
    run_seeds,
    seed_run_params,
    train_mlp,
)

__all__ = ["DEPTH_ACTIVATIONS", "DEPTH_INITS", "DEPTH_NORMS", "DEPTH_SETTINGS", "DepthConfig", "depth_experiment", "depth_grid",
           "depth_sweep"]

DEPTH_ACTIVATIONS = ("sigmoid", "tanh", "relu")
DEPTH_NORMS = ("none", "batch", "layer")
DEPTH_INITS = ("default", "he", "gaussian")
EXPERIMENT = "depth"
VERSION = 2  # part of every run's key; bump when what a depth run measures changes (2: init percentiles in
#              training mode)

# The default grid: every combination is shipped precomputed (tools/build_experiment_cache.py).
GRID_DEPTHS = (2, 5, 10, 15, 20)
GRID_INITS = ("default", "he")


@dataclass(frozen=True)
class DepthConfig:
    """One MLP setting of the depth experiment, trained once per seed.

    Attributes:
        depth: hidden layers, 1..40.
        activation: ``"sigmoid"``, ``"tanh"`` or ``"relu"``.
        norm: ``"none"``, ``"batch"`` or ``"layer"`` (before each nonlinearity).
        init: ``"default"`` (torch's), ``"he"`` (N(0, 2/fan_in)) or ``"gaussian"`` (N(0, init_std^2)).
        init_std: the std for ``init="gaussian"`` (ignored, and left out of the cache key, otherwise).
        width, lr, batch_size, steps: the training setting; record_every: steps between records.
        seeds: one run per seed (weights and minibatch order).
    """

    depth: int = 10
    activation: str = "relu"
    norm: str = "none"
    init: str = "default"
    init_std: float = 0.05
    width: int = 100
    lr: float = 0.1
    batch_size: int = 64
    steps: int = 600
    record_every: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        if self.depth > 40:
            raise ValueError(f"depth must be at most 40 (a live run must stay short), got {self.depth}")
        check_choice(self.activation, "activation", DEPTH_ACTIVATIONS)
        check_choice(self.norm, "norm", DEPTH_NORMS)
        check_choice(self.init, "init", DEPTH_INITS)
        check_float(self.init_std, "init_std", 0.0, inclusive=False)
        check_int(self.width, "width", minimum=2)
        check_training_fields(self)

    def run_params(self, seed: int) -> dict:
        """What identifies one seed's run (the cache key's parameters)."""
        unused_std = {"init_std": None} if self.init != "gaussian" else {}
        return {**seed_run_params(self, seed, **unused_std), "version": VERSION}


def run_seed(config: DepthConfig, seed: int, progress: bool) -> dict[str, np.ndarray]:
    """One seed's run of ``config``, computed now (no cache)."""
    at_init = {}
    result, _ = train_mlp(before_training=lambda model: at_init.update(
                              percentiles=percentiles_in_training_mode(model)), seed=seed, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                          record_every=config.record_every, progress=progress, depth=config.depth,
                          width=config.width, activation=config.activation, norm=config.norm, init=config.init,
                          init_std=config.init_std)
    steps = np.array(result.config.recorded_steps(), dtype=np.float64)
    records = steps.size
    return {
        "steps": steps,
        "test_accuracy": pad(result.test_accuracy, records),
        "train_loss": pad(result.train_loss_avg, records),
        "percentiles_init": at_init["percentiles"],                # (L, 3) at step 0, training mode
        "percentiles_final": result.percentiles[-1],               # (L, 3) at the last record
        "grad_norms_init": result.grad_norms[0],                   # (L + 1,)
        "grad_norms_final": result.grad_norms[-1],                 # (L + 1,)
        "final_accuracy": np.float64(final_accuracy(result)),
        "diverged": np.float64(result.diverged),
    }


def depth_experiment(config: DepthConfig = DepthConfig(), *, progress: bool | None = None,
                     cached_only: bool = False) -> SeedRuns:
    """Train ``config`` once per seed (or read the runs from the cache) and stack them.

    Returns:
        :class:`SeedRuns` with, per seed (K = records, L = depth):
        ``steps`` (K,), ``test_accuracy`` (K,), ``train_loss`` (K,) (mean minibatch loss since the previous
        record), ``percentiles_init``/``percentiles_final`` (L, 3) (15/50/85th percentile of each hidden
        layer's pre-activation on the test split: at step 0 in training mode, i.e. with batch statistics as the
        first steps see them; at the end in eval mode), ``grad_norms_init``/
        ``grad_norms_final`` (L + 1,) (Frobenius norm of each weight layer's gradient, output layer last),
        ``final_accuracy`` () and ``diverged`` () (0 or 1).

    Raises:
        NotCachedError: with ``cached_only=True`` when a seed's run is not cached.
    """
    if not isinstance(config, DepthConfig):
        raise TypeError(f"depth_experiment takes a DepthConfig, got {type(config).__name__}")
    return run_seeds(EXPERIMENT, config, run_seed, progress, cached_only)


def depth_grid(base: DepthConfig = DepthConfig()) -> list[DepthConfig]:
    """Every config of the default grid (depth x activation x norm x init), built from ``base``."""
    return [replace(base, depth=depth, activation=activation, norm=norm, init=init)
            for depth in GRID_DEPTHS for activation in DEPTH_ACTIVATIONS for norm in DEPTH_NORMS
            for init in GRID_INITS]


DEPTH_SETTINGS = {  # label -> (norm, init): the lines of the lecture's summary figure
    "no norm": ("none", "default"),
    "BN": ("batch", "default"),
    "LayerNorm": ("layer", "default"),
    "no norm, He init": ("none", "he"),
}


def depth_sweep(base: DepthConfig = DepthConfig(), depths: tuple[int, ...] = GRID_DEPTHS,
                activations: tuple[str, ...] = DEPTH_ACTIVATIONS, *, cached_only: bool = False,
                progress: bool | None = None) -> dict[str, dict[str, dict[int, SeedRuns]]]:
    """``sweep[activation][setting][depth]``: runs of every depth for each activation and each of
    :data:`DEPTH_SETTINGS` (what :func:`bnlab.plots.plot_depth_sweep` draws)."""
    return {activation: {label: {depth: depth_experiment(replace(base, depth=depth, activation=activation,
                                                                 norm=norm, init=init),
                                                         cached_only=cached_only, progress=progress)
                                 for depth in depths}
                         for label, (norm, init) in DEPTH_SETTINGS.items()}
            for activation in activations}
