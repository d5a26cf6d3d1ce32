"""Shared pieces of the experiments: the data set, one seeded training run, and results stacked over seeds."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from bnlab._validation import check_float, check_int
from bnlab.data import Dataset, load_mnist_subset
from bnlab.models import build_mlp
from bnlab.train import TrainConfig, TrainResult, train

__all__ = ["SeedRuns", "check_seeds", "final_accuracy", "map_seeds", "mnist", "pad", "progress_enabled", "set_progress",
           "train_mlp"]

_progress_default = True


def set_progress(enabled: bool) -> None:
    """Turn the ``tqdm.auto`` progress bars of live runs on or off for this process (default on)."""
    global _progress_default
    if not isinstance(enabled, bool):
        raise ValueError(f"set_progress takes True or False, got {enabled!r}")
    _progress_default = enabled


def progress_enabled(progress: bool | None) -> bool:
    return _progress_default if progress is None else bool(progress)


@functools.lru_cache(maxsize=1)
def mnist() -> Dataset:
    """The course's MNIST subset (4,000 train / 1,000 test, standardized), loaded once per process."""
    return load_mnist_subset()


def check_seeds(seeds: object) -> tuple[int, ...]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be a non-empty sequence of non-negative integers, got {seeds!r}")
    return tuple(check_int(s, "each of seeds", 0) for s in seeds)


def check_training_fields(config) -> None:
    """The checks every experiment config shares: depth, lr, batch_size, steps, record_every and seeds.

    Normalizes ``config.seeds`` to a tuple (configs are frozen dataclasses, hence ``object.__setattr__``).
    """
    check_int(config.depth, "depth", minimum=1)
    check_float(config.lr, "lr", 0.0, inclusive=False)
    check_int(config.batch_size, "batch_size", minimum=2)
    check_int(config.steps, "steps", minimum=1)
    check_int(config.record_every, "record_every", minimum=1)
    object.__setattr__(config, "seeds", check_seeds(config.seeds))


def seed_run_params(config, seed: int, **overrides) -> dict:
    """One seed's cache-key parameters: every field but ``seeds``, then ``overrides``, then ``seed``."""
    params = {k: v for k, v in asdict(config).items() if k != "seeds"}
    return {**params, **overrides, "seed": seed}


def map_seeds(run: Callable[[int], dict[str, np.ndarray]], seeds: tuple[int, ...], parallel: bool = True
              ) -> tuple[dict[str, np.ndarray], ...]:
    """``run(seed)`` for every seed, in order; with ``parallel`` on up to one thread per CPU core.

    Training is mostly torch kernels, which release the GIL, so two seeds on two cores take about 0.6x the
    time of one after the other. Each run is seeded by its own generators and one torch thread, so results do
    not depend on the scheduling. torch's global RNG state and thread count are restored afterwards.
    """
    import torch

    workers = min(len(seeds), os.cpu_count() or 1)
    if not parallel or workers < 2:
        return tuple(run(seed) for seed in seeds)
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]), ThreadPoolExecutor(max_workers=workers) as pool:
            return tuple(pool.map(run, seeds))
    finally:
        torch.set_num_threads(threads)


def pad(values: np.ndarray, length: int) -> np.ndarray:
    """``values`` (K, ...) extended with NaN rows to ``length`` rows (a diverged run records fewer steps)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] >= length:
        return values[:length]
    filler = np.full((length - values.shape[0], *values.shape[1:]), np.nan)
    return np.concatenate([values, filler])


def percentiles_in_training_mode(model, data: Dataset | None = None) -> np.ndarray:
    """(L, 3) 15/50/85th percentiles of each hidden layer's pre-activation when the test split passes through
    ``model`` in **training** mode (batch statistics of the 1,000 test examples), on a copy of the model.

    At initialization this is what the first training steps see. (In eval mode a fresh BN layer's running
    statistics are still 0 and 1, so BN would look like the identity.)
    """
    import copy

    import torch

    from bnlab.recording import PreActivationRecorder, hidden_activations

    data = data or mnist()
    probe = copy.deepcopy(model).train()
    with torch.no_grad(), PreActivationRecorder(hidden_activations(probe)) as recorder:
        probe(data.x_test)
    return recorder.percentiles()[0]


def train_mlp(*, seed: int, steps: int, batch_size: int, lr: float, record_every: int, progress: bool,
              weight_decay: float = 0.0, before_training=None, **model_options) -> tuple[TrainResult, object]:
    """Build a seeded MLP (``build_mlp(**model_options)``) and train it on :func:`mnist`; returns (result, model).

    The same ``seed`` draws the weights and the minibatch order; one torch thread, so runs are bit-exact
    repeatable on one machine. ``before_training(model)``, if given, is called on the untrained model.
    """
    model = build_mlp(seed=seed, **model_options)
    if before_training is not None:
        before_training(model)
    result = train(model, mnist(), TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                               weight_decay=weight_decay, record_every=record_every,
                                               threads=1, progress=progress))
    return result, model


@dataclass(frozen=True, eq=False)
class SeedRuns:
    """One config's runs over several seeds: ``values(name)`` is (S, ...) for S seeds.

    ``mean``/``low``/``high`` summarize over seeds (NaN-aware: a diverged seed's missing records are skipped),
    ``low``/``high`` being the minimum and maximum, which the plots shade.
    """

    seeds: tuple[int, ...]
    arrays: tuple[dict[str, np.ndarray], ...]

    def names(self) -> tuple[str, ...]:
        return tuple(self.arrays[0])

    def values(self, name: str) -> np.ndarray:
        if name not in self.arrays[0]:
            raise KeyError(f"no recorded quantity {name!r}; recorded: {', '.join(self.arrays[0])}")
        return np.stack([run[name] for run in self.arrays])

    def _reduce(self, name: str, how) -> np.ndarray:
        values = self.values(name)
        out = np.full(values.shape[1:], np.nan)
        finite = np.isfinite(values).any(axis=0)
        if finite.any():
            out[finite] = how(values[:, finite], axis=0)
        return out

    def mean(self, name: str) -> np.ndarray:
        return self._reduce(name, np.nanmean)

    def low(self, name: str) -> np.ndarray:
        return self._reduce(name, np.nanmin)

    def high(self, name: str) -> np.ndarray:
        return self._reduce(name, np.nanmax)

    def scalar(self, name: str) -> float:
        """The seed mean of a scalar quantity (e.g. ``final_accuracy``)."""
        value = self.mean(name)
        if value.ndim:
            raise ValueError(f"{name!r} is not a scalar: shape {value.shape}")
        return float(value)


def final_accuracy(result: TrainResult) -> float:
    """Test accuracy at the end of a run; NaN for a run that diverged (it has no final model to test)."""
    if result.diverged or not result.test_accuracy.size:
        return math.nan
    return float(result.test_accuracy[-1])


def run_seeds(experiment: str, config, run_one: Callable[..., dict[str, np.ndarray]], progress: bool | None,
              cached_only: bool) -> SeedRuns:
    """Every seed's run of ``config``: from the cache, or computed by ``run_one(config, seed, show_progress)``.

    ``config`` has ``seeds`` and ``run_params(seed)`` (the cache key's parameters). Seeds that must be computed
    train in parallel threads; with ``cached_only`` a missing seed raises :class:`NotCachedError` instead.
    """
    from bnlab.experiments._cache import cached_run

    show = progress_enabled(progress)
    arrays = map_seeds(lambda seed: cached_run(experiment, config.run_params(seed),
                                               lambda: run_one(config, seed, show), cached_only=cached_only),
                       config.seeds, parallel=not cached_only)
    return SeedRuns(seeds=config.seeds, arrays=arrays)
