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
from bnlab.experiments._runs import SeedRuns, mnist
from bnlab.experiments.base import Experiment, sweep
from bnlab.train import TrainResult

__all__ = ["BATCH_NORMS", "GRID_BATCH_SIZES", "GRID_NORM_BATCH_SIZES", "BatchSizeConfig",
           "batch_statistics_accuracy", "nbs_by_sgd_batch", "norm_batch_size_sweep", "sgd_batch_size_sweep"]

BATCH_NORMS = ("batch", "layer", "group")
GRID_BATCH_SIZES = (16, 64, 128, 256)
GRID_NORM_BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class BatchSizeConfig(Experiment):
    """One setting of the batch-size experiment (shared fields: :class:`~bnlab.experiments.Experiment`).

    Attributes:
        norm: ``"batch"`` (ghost batch norm with ``norm_batch_size``), ``"layer"`` or ``"group"`` (GroupNorm
            with 25 groups of 4 units: an MLP, far from Wu & He's conv setting).
        norm_batch_size: examples per normalization batch, >= 2, dividing ``batch_size`` (only for ``"batch"``;
            left out of the cache key for the others, which normalize each example alone).
        batch_size: examples per SGD step; every setting takes the same number of ``steps``.
    """

    name = "batch_size"
    version = 2  # 2: diverged_at recorded

    norm: str = "batch"
    norm_batch_size: int = 8
    batch_size: int = 128

    def check(self) -> None:
        check_choice(self.norm, "norm", BATCH_NORMS)
        check_int(self.norm_batch_size, "norm_batch_size", minimum=2)
        if self.norm == "batch" and self.batch_size % self.norm_batch_size:
            raise ValueError(f"norm_batch_size must divide batch_size={self.batch_size} (each SGD batch is cut "
                             f"into normalization batches), got {self.norm_batch_size}")

    def unused_fields(self) -> tuple[str, ...]:
        return () if self.norm == "batch" else ("norm_batch_size",)

    def model_options(self) -> dict:
        if self.norm == "batch":
            return {"norm": "ghost", "ghost_batch_size": self.norm_batch_size}
        return {"norm": self.norm}

    def measure(self, result: TrainResult, model) -> dict[str, np.ndarray]:
        test_nbs = self.norm_batch_size if self.norm == "batch" else 2
        return {"batch_stats_accuracy": np.float64(np.nan if result.diverged
                                                   else batch_statistics_accuracy(model, test_nbs))}

    @classmethod
    def grid(cls) -> list[BatchSizeConfig]:
        """BN at each NBS dividing each SGD batch size, LN and GN at each."""
        configs = []
        for batch_size in GRID_BATCH_SIZES:
            configs += [cls(norm="batch", batch_size=batch_size, norm_batch_size=nbs)
                        for nbs in GRID_NORM_BATCH_SIZES if nbs <= batch_size and batch_size % nbs == 0]
            configs += [cls(norm=norm, batch_size=batch_size) for norm in ("layer", "group")]
        return configs


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


def norm_batch_size_sweep(batch_size: int = 128, base: BatchSizeConfig = BatchSizeConfig(), *,
                          cached_only: bool = False, skip_missing: bool = False, progress: bool | None = None
                          ) -> tuple[dict[int, SeedRuns], dict[str, SeedRuns]]:
    """At SGD batch ``batch_size``: ``({nbs: BN runs} for every grid NBS dividing it, {"LayerNorm": runs,
    "GroupNorm": runs})``, what :func:`bnlab.plots.plot_norm_batch_size` draws."""
    config = replace(base, batch_size=batch_size)
    options = {"cached_only": cached_only, "skip_missing": skip_missing, "progress": progress}
    bn = sweep({nbs: replace(config, norm="batch", norm_batch_size=nbs) for nbs in GRID_NORM_BATCH_SIZES
                if nbs <= batch_size and batch_size % nbs == 0}, **options)
    others = sweep({"LayerNorm": replace(config, norm="layer"), "GroupNorm": replace(config, norm="group")},
                   **options)
    return bn, others


def sgd_batch_size_sweep(base: BatchSizeConfig = BatchSizeConfig(), *, cached_only: bool = False,
                         skip_missing: bool = False, progress: bool | None = None
                         ) -> dict[str, dict[int, SeedRuns]]:
    """``{setting: {sgd_batch: runs}}`` over the grid's SGD batch sizes at equal numbers of updates, for BN
    normalizing the whole SGD batch, BN with a fixed normalization batch of 16, LayerNorm and GroupNorm."""
    settings = {
        "BN, normalization batch = SGD batch": lambda b: replace(base, norm="batch", batch_size=b,
                                                                 norm_batch_size=b),
        "BN, normalization batch 16": lambda b: replace(base, norm="batch", batch_size=b, norm_batch_size=16),
        "LayerNorm": lambda b: replace(base, norm="layer", batch_size=b),
        "GroupNorm": lambda b: replace(base, norm="group", batch_size=b),
    }
    return {label: sweep({b: make(b) for b in GRID_BATCH_SIZES}, cached_only=cached_only,
                         skip_missing=skip_missing, progress=progress)
            for label, make in settings.items()}


def nbs_by_sgd_batch(base: BatchSizeConfig = BatchSizeConfig(), *, cached_only: bool = False,
                     skip_missing: bool = False, progress: bool | None = None) -> dict[int, dict[int, SeedRuns]]:
    """``{sgd_batch: {nbs: BN runs}}``: the normalization-batch sweep at every grid SGD batch size."""
    return {b: norm_batch_size_sweep(b, base, cached_only=cached_only, skip_missing=skip_missing,
                                     progress=progress)[0]
            for b in GRID_BATCH_SIZES}
