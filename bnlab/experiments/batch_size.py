"""Lecture 8: the normalization batch size, separated from the SGD batch size, and BN vs LayerNorm/GroupNorm.

Batch norm's statistics come from the examples it normalizes together. Ghost batch norm
(:class:`bnlab.nn.GhostBatchNorm1d`) splits each SGD batch of ``batch_size`` examples into normalization
batches of ``norm_batch_size`` (NBS), so the two can be varied independently. Layer and group norm normalize
each example on its own and do not care. Reference (bn-facts, SGD batch 128): BN test accuracy 0.44 at NBS 2,
0.935 at 4, about 0.95 from 8; LayerNorm 0.941 and GroupNorm 0.938 at every NBS.

Each run is tested twice: with population statistics (``eval()``, the right way) and with batch statistics
of test batches of NBS examples (train-mode normalization at test time).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch

from bnlab._validation import check_choice, check_int
from bnlab.experiments._runs import (
    SeedRuns,
    check_training_fields,
    final_accuracy,
    mnist,
    pad,
    run_seeds,
    seed_run_params,
    train_mlp,
)

__all__ = ["BATCH_NORMS", "BatchSizeConfig", "batch_size_experiment", "batch_size_grid",
           "batch_statistics_accuracy", "norm_batch_size_sweep", "sgd_batch_size_sweep"]

BATCH_NORMS = ("batch", "layer", "group")
EXPERIMENT = "batch_size"

GRID_BATCH_SIZES = (16, 64, 128, 256)
GRID_NORM_BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class BatchSizeConfig:
    """One setting of the batch-size experiment, trained once per seed.

    Attributes:
        norm: ``"batch"`` (ghost batch norm with ``norm_batch_size``), ``"layer"`` or ``"group"``.
        norm_batch_size: examples per normalization batch, >= 2, dividing ``batch_size`` (only for ``"batch"``;
            left out of the cache key for the others, which normalize each example alone).
        batch_size: examples per SGD step; every setting takes the same number of ``steps``.
        depth, width, activation, lr, steps, record_every: the MLP and its training.
        seeds: one run per seed.
    """

    norm: str = "batch"
    norm_batch_size: int = 8
    batch_size: int = 128
    depth: int = 3
    width: int = 100
    activation: str = "relu"
    lr: float = 0.1
    steps: int = 600
    record_every: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        check_choice(self.norm, "norm", BATCH_NORMS)
        check_int(self.norm_batch_size, "norm_batch_size", minimum=2)
        if self.norm == "batch" and self.batch_size % self.norm_batch_size:
            raise ValueError(f"norm_batch_size must divide batch_size={self.batch_size} (each SGD batch is cut "
                             f"into normalization batches), got {self.norm_batch_size}")
        check_int(self.width, "width", minimum=4)
        check_choice(self.activation, "activation", ("sigmoid", "tanh", "relu"))
        check_training_fields(self)

    def run_params(self, seed: int) -> dict:
        unused_size = {"norm_batch_size": None} if self.norm != "batch" else {}
        return seed_run_params(self, seed, **unused_size)


def batch_statistics_accuracy(model: torch.nn.Module, norm_batch_size: int) -> float:
    """Test accuracy when the test split is normalized in batches of ``norm_batch_size`` with *their own*
    statistics (train-mode normalization at test time), as a model that forgot ``eval()`` would be.

    The model is copied, so its running statistics stay untouched. The test split (1,000 examples, classes
    mixed) is cut to the largest multiple of ``norm_batch_size``.
    """
    data = mnist()
    usable = (data.num_test // norm_batch_size) * norm_batch_size
    probe = copy.deepcopy(model).train()
    with torch.no_grad():
        logits = probe(data.x_test[:usable])
    return float((logits.argmax(dim=1) == data.y_test[:usable]).double().mean())


def run_seed(config: BatchSizeConfig, seed: int, progress: bool) -> dict[str, np.ndarray]:
    norm = "ghost" if config.norm == "batch" else config.norm
    ghost = config.norm_batch_size if config.norm == "batch" else None
    result, model = train_mlp(seed=seed, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                              record_every=config.record_every, progress=progress, depth=config.depth,
                              width=config.width, activation=config.activation, norm=norm,
                              ghost_batch_size=ghost)
    steps = np.array(result.config.recorded_steps(), dtype=np.float64)
    test_nbs = config.norm_batch_size if config.norm == "batch" else 2
    return {
        "steps": steps,
        "test_accuracy": pad(result.test_accuracy, steps.size),
        "train_loss": pad(result.train_loss_avg, steps.size),
        "final_accuracy": np.float64(final_accuracy(result)),
        "batch_stats_accuracy": np.float64(np.nan if result.diverged
                                           else batch_statistics_accuracy(model, test_nbs)),
        "diverged": np.float64(result.diverged),
    }


def batch_size_experiment(config: BatchSizeConfig = BatchSizeConfig(), *, progress: bool | None = None,
                          cached_only: bool = False) -> SeedRuns:
    """Train ``config`` once per seed (or read the runs from the cache) and stack them.

    Returns:
        :class:`SeedRuns` with, per seed (K records): ``steps``, ``test_accuracy`` (population statistics),
        ``train_loss`` (K,); ``final_accuracy`` () with population statistics; ``batch_stats_accuracy`` ()
        with test batches of NBS normalized by their own statistics; ``diverged`` ().

    Raises:
        NotCachedError: with ``cached_only=True`` when a seed's run is not cached.
    """
    if not isinstance(config, BatchSizeConfig):
        raise TypeError(f"batch_size_experiment takes a BatchSizeConfig, got {type(config).__name__}")
    return run_seeds(EXPERIMENT, config, run_seed, progress, cached_only)


def batch_size_grid(base: BatchSizeConfig = BatchSizeConfig()) -> list[BatchSizeConfig]:
    """Every config of the default grid: BN at each NBS dividing each SGD batch size, LN and GN at each."""
    configs = []
    for batch_size in GRID_BATCH_SIZES:
        configs += [replace(base, norm="batch", batch_size=batch_size, norm_batch_size=nbs)
                    for nbs in GRID_NORM_BATCH_SIZES if nbs <= batch_size and batch_size % nbs == 0]
        configs += [replace(base, norm=norm, batch_size=batch_size, norm_batch_size=2)
                    for norm in ("layer", "group")]
    return configs


def norm_batch_size_sweep(batch_size: int = 128, base: BatchSizeConfig = BatchSizeConfig(), *,
                          cached_only: bool = False, progress: bool | None = None
                          ) -> tuple[dict[int, SeedRuns], dict[str, SeedRuns]]:
    """At SGD batch ``batch_size``: ``({nbs: BN runs} for every grid NBS dividing it, {"LayerNorm": runs,
    "GroupNorm": runs})``, what :func:`bnlab.plots.plot_norm_batch_size` draws."""
    config = replace(base, batch_size=batch_size)
    bn = {nbs: batch_size_experiment(replace(config, norm="batch", norm_batch_size=nbs), cached_only=cached_only,
                                     progress=progress)
          for nbs in GRID_NORM_BATCH_SIZES if nbs <= batch_size and batch_size % nbs == 0}
    others = {label: batch_size_experiment(replace(config, norm=norm), cached_only=cached_only, progress=progress)
              for label, norm in (("LayerNorm", "layer"), ("GroupNorm", "group"))}
    return bn, others


def sgd_batch_size_sweep(base: BatchSizeConfig = BatchSizeConfig(), *, cached_only: bool = False,
                         progress: bool | None = None) -> dict[str, dict[int, SeedRuns]]:
    """``{setting: {sgd_batch: runs}}`` over the grid's SGD batch sizes at equal numbers of updates, for BN
    normalizing the whole SGD batch, BN with a fixed normalization batch of 16, LayerNorm and GroupNorm."""
    settings = {
        "BN, normalization batch = SGD batch": lambda b: replace(base, norm="batch", batch_size=b,
                                                                 norm_batch_size=b),
        "BN, normalization batch 16": lambda b: replace(base, norm="batch", batch_size=b, norm_batch_size=16),
        "LayerNorm": lambda b: replace(base, norm="layer", batch_size=b),
        "GroupNorm": lambda b: replace(base, norm="group", batch_size=b),
    }
    return {label: {b: batch_size_experiment(make(b), cached_only=cached_only, progress=progress)
                    for b in GRID_BATCH_SIZES}
            for label, make in settings.items()}
