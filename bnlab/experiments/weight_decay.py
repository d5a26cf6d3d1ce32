"""Lecture 9: weight decay on a batch-normalized MLP shrinks each unit's weight vector and so raises its
effective learning rate lr/||w||^2 (van Laarhoven 2017; Zhang et al. 2019).

SGD's ``weight_decay`` decays every parameter: the scale-invariant hidden weights, but also the output layer
(not scale-invariant) and BN's gamma and beta. The experiment records what the claim needs: each hidden
unit's weight norm and the effective learning rate it implies, with the test accuracy beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bnlab._validation import check_choice
from bnlab.experiments._runs import SeedRuns
from bnlab.experiments.base import Experiment, sweep
from bnlab.train import TrainResult

__all__ = ["GRID_WEIGHT_DECAYS", "WeightDecayConfig", "weight_decay_sweep"]

GRID_WEIGHT_DECAYS = (0.0, 5e-4, 2e-3, 5e-3)


@dataclass(frozen=True)
class WeightDecayConfig(Experiment):
    """A 3x100 ReLU MLP (BN by default) trained for 3,000 updates, long enough for decay to act."""

    name = "weight_decay"
    version = 2  # 2: per-unit weight norms

    steps: int = 3000
    record_every: int = 100
    norm: str = "batch"

    def check(self) -> None:
        check_choice(self.norm, "norm", ("none", "batch"))

    def model_options(self) -> dict:
        return {"norm": self.norm}

    def measure(self, result: TrainResult, model) -> dict[str, np.ndarray]:
        """``unit_weight_norm`` (K, L): median over each hidden layer's units of a unit's weight norm;
        ``effective_lr`` (K, L) = lr / unit_weight_norm^2."""
        records = len(result.config.recorded_steps())
        median = np.full((records, self.depth), np.nan)
        median[:len(result.unit_weight_norms)] = result.unit_weight_norms[:, :-1, 1]
        return {"unit_weight_norm": median, "effective_lr": self.lr / median ** 2}

    @classmethod
    def grid(cls) -> list[WeightDecayConfig]:
        return [cls(weight_decay=wd) for wd in GRID_WEIGHT_DECAYS]


def weight_decay_sweep(base: WeightDecayConfig = WeightDecayConfig(),
                       weight_decays: tuple[float, ...] = GRID_WEIGHT_DECAYS, *, cached_only: bool = False,
                       skip_missing: bool = False, progress: bool | None = None) -> dict[float, SeedRuns]:
    """``{weight_decay: runs}`` (what :func:`bnlab.plots.plot_weight_decay` draws)."""
    return sweep({wd: replace(base, weight_decay=wd) for wd in weight_decays}, cached_only=cached_only,
                 skip_missing=skip_missing, progress=progress)
