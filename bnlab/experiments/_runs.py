"""Shared pieces of the experiments: the data set, one seeded training run, and results stacked over seeds."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bnlab._validation import check_int
from bnlab.data import Dataset, load_mnist_subset
from bnlab.models import build_mlp
from bnlab.train import TrainConfig, TrainResult, train

__all__ = ["CHANCE", "SeedRuns", "check_seeds", "final_accuracy", "map_seeds", "mnist", "pad", "progress_enabled",
           "set_progress", "train_mlp"]

CHANCE = 0.1  # test accuracy of a constant guess: ten balanced classes

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
              weight_decay: float = 0.0, before_training=None, on_step=None, **model_options
              ) -> tuple[TrainResult, object]:
    """Build a seeded MLP (``build_mlp(**model_options)``) and train it on :func:`mnist`; returns (result, model).

    The same ``seed`` draws the weights and the minibatch order; one torch thread, so runs are bit-exact
    repeatable on one machine. ``before_training(model)``, if given, is called on the untrained model.
    """
    model = build_mlp(seed=seed, **model_options)
    if before_training is not None:
        before_training(model)
    result = train(model, mnist(), TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                               weight_decay=weight_decay, record_every=record_every,
                                               threads=1, progress=progress), on_step=on_step)
    return result, model


@dataclass(frozen=True, eq=False)
class SeedRuns:
    """One config's runs over several seeds: ``values(name)`` is (S, ...) for S seeds.

    Curves: ``mean``/``low``/``high`` summarize over seeds record by record, NaN-aware (a diverged seed has
    no records after its divergence; the plots draw every seed, so a lone survivor is visible as such).
    Headline numbers: ``final_accuracies`` per seed and ``outcome`` in words; ``scalar`` is a plain mean, NaN
    as soon as one seed has no value, so a diverged seed is never averaged away.
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
        """The seed mean of a scalar quantity; NaN if any seed has none (e.g. a diverged seed's accuracy)."""
        values = self.values(name)
        if values.ndim != 1:
            raise ValueError(f"{name!r} is not a scalar: shape {values.shape[1:]}")
        return float(values.mean())

    def final_accuracies(self) -> np.ndarray:
        """(S,) each seed's final test accuracy, NaN for a seed that diverged."""
        return self.values("final_accuracy")

    def diverged_at(self) -> np.ndarray:
        """(S,) the update at which each seed diverged, NaN for a seed that did not."""
        return self.values("diverged_at")

    def num_diverged(self) -> int:
        return int(np.isfinite(self.diverged_at()).sum())

    def scored_accuracy(self) -> float:
        """Mean final accuracy over seeds, a diverged seed counted at chance (0.1)."""
        return float(np.where(np.isfinite(self.final_accuracies()), self.final_accuracies(), CHANCE).mean())

    def outcome(self) -> str:
        """The seeds' results in words, e.g. ``"0.921, 0.935; 1 of 3 seeds diverged (update 41)"``."""
        accuracies, at = self.final_accuracies(), self.diverged_at()
        trained = [f"{a:.3f}" for a in accuracies if np.isfinite(a)]
        text = ", ".join(trained)
        diverged = [int(u) for u in at if np.isfinite(u)]
        if diverged:
            updates = ", ".join(str(u) for u in diverged)
            note = (f"{len(diverged)} of {len(self.seeds)} seeds diverged "
                    f"(update{'s' if len(diverged) > 1 else ''} {updates})")
            text = f"{text}; {note}" if text else note
        return text

    def headline(self) -> str:
        """``"test accuracy 0.93 (seeds: 0.921, 0.935, 0.940)"``-style summary with every seed in it."""
        if len(self.seeds) == 1:
            only = self.outcome()
            return f"1 seed: {only}" if self.num_diverged() else f"test accuracy {only} (1 seed)"
        if self.num_diverged() == len(self.seeds):
            return self.outcome()
        if self.num_diverged():
            return (f"test accuracy {self.outcome()}; mean {self.scored_accuracy():.3f} counting a diverged "
                    f"seed as chance")
        return f"test accuracy {self.scalar('final_accuracy'):.3f} (seeds: {self.outcome()})"


def final_accuracy(result: TrainResult) -> float:
    """Test accuracy at the end of a run; NaN for a run that diverged (it has no final model to test)."""
    if result.diverged or not result.test_accuracy.size:
        return math.nan
    return float(result.test_accuracy[-1])
