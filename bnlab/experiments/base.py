"""One experiment runner for lectures 7-9: the config fields every experiment shares, one seed's run, and
:func:`run` / :func:`sweep`, which read the caches before anything trains.

An experiment is a frozen dataclass derived from :class:`Experiment`. It names itself (``name``, the cache's
file), says which of its fields do not matter for a setting (``unused_fields``, left out of the cache key),
which model it trains (``model_options``) and what it measures beyond the shared records (``measure``).
Everything else (checks, cache keys, the training call, the records every experiment keeps, seeds, caching,
cancelling) lives here once.

    from bnlab.experiments import DepthConfig, run
    runs = run(DepthConfig(depth=20, norm="batch"))         # SeedRuns over the config's seeds
    runs.final_accuracies()                                  # (S,), NaN where a seed diverged
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from bnlab._validation import check_choice, check_float, check_int
from bnlab.experiments._cache import NotCachedError, cached_run
from bnlab.experiments._runs import SeedRuns, check_seeds, final_accuracy, map_seeds, pad, progress_enabled, train_mlp
from bnlab.train import TrainResult

__all__ = ["ACTIVATIONS", "Experiment", "RunCancelled", "run", "sweep"]

ACTIVATIONS = ("sigmoid", "tanh", "relu")
MAX_DEPTH = 40  # a live run must stay short

Arrays = dict[str, np.ndarray]
Key = TypeVar("Key")


class RunCancelled(Exception):
    """A live run was stopped by its ``stop`` event (seeds finished before it stay cached)."""


@dataclass(frozen=True)
class Experiment:
    """The fields every experiment shares: an MLP (depth, width, activation) trained with SGD, once per seed.

    Attributes:
        depth: hidden layers, 1..40.  width: units per hidden layer.  activation: sigmoid, tanh or relu.
        lr: learning rate.  batch_size: examples per SGD update.  steps: updates.  weight_decay: SGD's L2
            coefficient (it decays every weight, the output layer's and BN's gamma and beta included).
        record_every: updates between records.  seeds: one run per seed (weights and minibatch order).
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1  # part of every run's key: bump when what the experiment measures changes

    depth: int = 3
    width: int = 100
    activation: str = "relu"
    lr: float = 0.1
    batch_size: int = 64
    steps: int = 600
    weight_decay: float = 0.0
    record_every: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        check_int(self.depth, "depth", minimum=1)
        if self.depth > MAX_DEPTH:
            raise ValueError(f"depth must be at most {MAX_DEPTH} (a live run must stay short), got {self.depth}")
        check_int(self.width, "width", minimum=4)
        check_choice(self.activation, "activation", ACTIVATIONS)
        check_float(self.lr, "lr", 0.0, inclusive=False)
        check_int(self.batch_size, "batch_size", minimum=2)
        check_int(self.steps, "steps", minimum=1)
        check_float(self.weight_decay, "weight_decay", 0.0)
        check_int(self.record_every, "record_every", minimum=1)
        object.__setattr__(self, "seeds", check_seeds(self.seeds))  # normalized to a tuple of ints
        self.check()

    # -- what an experiment defines ----------------------------------------------------------------------
    def check(self) -> None:
        """The experiment's own field checks (raise ValueError saying what was expected and what came)."""

    def unused_fields(self) -> tuple[str, ...]:
        """Fields that do not change this setting's run (left out of its cache key, e.g. init_std of He init)."""
        return ()

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`bnlab.models.build_mlp` beyond depth, width and activation."""
        return {}

    def at_init(self, model) -> Arrays:
        """Measurements of the untrained model (called before the first update)."""
        return {}

    def measure(self, result: TrainResult, model) -> Arrays:
        """Measurements of a finished run beyond :meth:`records`; ``model`` is the trained network."""
        return {}

    # -- shared -----------------------------------------------------------------------------------------
    def run_params(self, seed: int) -> dict[str, Any]:
        """What identifies one seed's run (the cache key's parameters)."""
        params = {k: v for k, v in asdict(self).items() if k != "seeds"}
        params.update({name: None for name in self.unused_fields()})
        return {**params, "seed": seed, "version": self.version}

    def run_seed(self, seed: int, progress: bool = False, on_step: Callable[[int], None] | None = None) -> Arrays:
        """One seed's run, computed now (no cache): :meth:`records` plus :meth:`measure` and :meth:`at_init`."""
        initial: Arrays = {}
        result, model = train_mlp(
            seed=seed, steps=self.steps, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            record_every=self.record_every, progress=progress, on_step=on_step,
            before_training=lambda untrained: initial.update(self.at_init(untrained)),
            depth=self.depth, width=self.width, activation=self.activation, **self.model_options())
        return {**self.records(result), **initial, **self.measure(result, model)}

    @staticmethod
    def records(result: TrainResult) -> Arrays:
        """What every experiment keeps, K records: ``steps``, ``test_accuracy``, ``train_loss`` (K,) (mean
        training-mode minibatch loss since the previous record; NaN after a divergence), ``final_accuracy`` ()
        (NaN if diverged), ``diverged`` () 0/1, ``diverged_at`` () (the update whose loss blew up, else NaN)."""
        steps = np.array(result.config.recorded_steps(), dtype=np.float64)
        return {
            "steps": steps,
            "test_accuracy": pad(result.test_accuracy, steps.size),
            "train_loss": pad(result.train_loss_avg, steps.size),
            "final_accuracy": np.float64(final_accuracy(result)),
            "diverged": np.float64(result.diverged),
            "diverged_at": np.float64(result.diverged_at if result.diverged else np.nan),
        }

    @classmethod
    def grid(cls) -> list[Experiment]:
        """Every config whose runs ship with the package (the lecture's default grid)."""
        return []


def run(config: Experiment, *, seeds: tuple[int, ...] | None = None, progress: bool | None = None,
        cached_only: bool = False, stop: threading.Event | None = None,
        on_step: Callable[[int, int], None] | None = None) -> SeedRuns:
    """The runs of ``config`` over ``seeds`` (default ``config.seeds``): from the caches, else trained now.

    Seeds that must be trained run in parallel threads (one per core); each is cached as soon as it ends.

    Args:
        seeds: the seeds to return (a dashboard trains its first seed alone, then the rest).
        progress: a ``tqdm.auto`` bar per live seed (None: the :func:`set_progress` default).
        cached_only: never train; raise :class:`NotCachedError` if a seed is not cached.
        stop: when set, live seeds stop at their next update and :class:`RunCancelled` is raised.
        on_step: called as ``on_step(seed, update)`` after every live update (from the training threads).

    Raises:
        NotCachedError, RunCancelled.
    """
    if not isinstance(config, Experiment):
        raise TypeError(f"run takes an experiment config (DepthConfig, BatchSizeConfig, LearningRateConfig or "
                        f"WeightDecayConfig), got {type(config).__name__}")
    seeds = config.seeds if seeds is None else check_seeds(seeds)
    show = progress_enabled(progress)

    def one_seed(seed: int) -> Arrays:
        def each_update(update: int) -> None:
            if stop is not None and stop.is_set():
                raise RunCancelled(f"stopped at update {update} of seed {seed}")
            if on_step is not None:
                on_step(seed, update)

        return cached_run(config.name, config.run_params(seed),
                          lambda: config.run_seed(seed, show, each_update), cached_only=cached_only)

    return SeedRuns(seeds=seeds, arrays=map_seeds(one_seed, seeds, parallel=not cached_only))


def sweep(configs: Mapping[Key, Experiment], *, cached_only: bool = False, skip_missing: bool = False,
          progress: bool | None = None) -> dict[Key, SeedRuns]:
    """``{key: run(config)}`` for every entry of ``configs``, in order.

    With ``skip_missing`` (which implies ``cached_only``) settings that are not fully cached are left out
    instead of raising :class:`NotCachedError`: what a dashboard draws as context around the chosen setting.
    """
    found = {}
    for key, config in configs.items():
        try:
            found[key] = run(config, cached_only=cached_only or skip_missing, progress=progress)
        except NotCachedError:
            if not skip_missing:
                raise
    return found

