"""Lecture 9's dashboards: the learning rate (with norm, depth and init), and weight decay under BN."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from bnlab.experiments import GRID_LEARNING_RATES, GRID_WEIGHT_DECAYS, LearningRateConfig, WeightDecayConfig
from bnlab.experiments.learning_rate import LR_SETTINGS, max_stable_learning_rate
from bnlab.plots.learning_rate import plot_lr_sweep, plot_weight_decay
from bnlab.widgets._dashboard import Dashboard

__all__ = ["LearningRateDashboard", "WeightDecayDashboard", "slider_learning_rate"]

STYLE = {"description_width": "initial"}
SHOWN = {"both": tuple(LR_SETTINGS), "no BN": ("no BN",), "BN": ("BN",)}


def slider_learning_rate(value: float) -> float:
    """A log slider's value as the learning rate it stands for: 4 significant digits, so the slider's
    positions 10^(k/4) are exactly the grid's rates (the positions between them are not precomputed)."""
    for grid_lr in GRID_LEARNING_RATES:
        if abs(math.log10(value) - math.log10(grid_lr)) < 1e-3:
            return grid_lr
    return float(f"{value:.4g}")


class LearningRateDashboard(Dashboard):
    """A log-scale learning rate for an MLP with and without BN (depth, init and the nets shown are controls).

    Result: ``{"lr": lr, "sweeps": {label: {lr: SeedRuns}}, "max_stable": {label: lr}}`` (every cached grid
    rate plus the selected one, for each net shown).
    """

    title = "Learning rate: how large before training blows up?"
    live_hint = "about 5-15 s per net at depth 10"

    def __init__(self, base: LearningRateConfig = LearningRateConfig(), *, progress: bool = True,
                 update: bool = True, background: bool = True):
        self.base = base
        controls = {
            "lr": widgets.FloatLogSlider(value=base.lr, base=10, min=-2, max=1, step=0.125,
                                         description="learning rate", continuous_update=False, style=STYLE,
                                         readout_format=".3g"),
            "nets": widgets.ToggleButtons(options=list(SHOWN), value="both", description="nets", style=STYLE),
            "depth": widgets.IntSlider(value=base.depth, min=2, max=20, description="depth",
                                       continuous_update=False, style=STYLE),
            "init": widgets.Dropdown(options=["he", "default"], value=base.init, description="init"),
        }
        self.trained_rates: set[float] = set()  # off-grid rates trained live, kept in the sweep once cached
        super().__init__(controls, progress=progress, update=update, background=background)

    def live_updates(self, params: dict[str, Any], seeds: tuple[int, ...]) -> int:
        return self.base.steps * len(seeds) * len(SHOWN[params["nets"]])

    def compute(self, params: dict[str, Any], live: bool, seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
        lr = slider_learning_rate(params["lr"])
        config = replace(self.base, depth=params["depth"], init=params["init"])
        rates = sorted(set(GRID_LEARNING_RATES) | self.trained_rates)  # grid rates, and those trained live here
        sweeps = {}
        for label in SHOWN[params["nets"]]:
            net = replace(config, norm=LR_SETTINGS[label])
            sweep = self.cached({rate: replace(net, lr=rate) for rate in rates})
            sweeps[label] = dict(sorted({**sweep, lr: self.runs(replace(net, lr=lr), live, seeds)}.items()))
        if live:
            self.trained_rates.add(lr)
        max_stable = {label: max_stable_learning_rate(sweep) for label, sweep in sweeps.items()}
        return {"lr": lr, "sweeps": sweeps, "max_stable": max_stable}

    def describe(self, params: dict[str, Any], result: dict[str, Any]) -> str:
        """Each net at the selected rate (every seed; for BN the last hidden layer's dead fraction), and the
        largest stable rate among those shown once at least three rates are there to bracket it."""
        words = []
        for label, sweep in result["sweeps"].items():
            runs = sweep[result["lr"]]
            text = f"{label} at lr {result['lr']:g}: {runs.headline()}"
            if label == "BN" and "dead_units" in runs.names() and runs.num_diverged() < len(runs.seeds):
                dead = ", ".join("-" if np.isnan(v) else f"{v:.2f}" for v in runs.values("dead_units")[:, -1])
                text += f"; last hidden layer dead: {dead}"
            if len(sweep) >= 3:
                stable = result["max_stable"][label]
                text += (" (no shown rate trains every seed)" if math.isnan(stable)
                         else f" (largest stable among the {len(sweep)} rates shown: {stable:.3g})")
            words.append(text)
        return "; ".join(words)

    def draw(self, params: dict[str, Any], result: dict[str, Any], pinned=None) -> Figure:
        overlay = None
        if pinned is not None:
            overlay = (f"depth {pinned[0]['depth']}, {pinned[0]['init']} init", pinned[1]["sweeps"])
        return plot_lr_sweep(result["sweeps"], selected=result["lr"], max_stable=result["max_stable"],
                             pinned=overlay)


class WeightDecayDashboard(Dashboard):
    """Weight decay on a batch-normalized MLP: each unit's weight norm, its effective learning rate, accuracy.

    Result: ``{weight_decay: SeedRuns}`` for every cached grid value plus the selected one.
    """

    title = "Weight decay under batch norm: a larger effective learning rate"
    live_hint = "about 30 s (3,000 updates, 3 seeds)"

    def __init__(self, base: WeightDecayConfig = WeightDecayConfig(), *, progress: bool = True,
                 update: bool = True, background: bool = True):
        self.base = base
        controls = {
            "weight_decay": widgets.SelectionSlider(options=[0.0, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2],
                                                    value=base.weight_decay, description="weight decay",
                                                    style=STYLE, continuous_update=False),
        }
        super().__init__(controls, progress=progress, update=update, background=background)

    def compute(self, params: dict[str, Any], live: bool, seeds: tuple[int, ...] | None = None):
        wd = params["weight_decay"]
        runs = self.cached({grid_wd: replace(self.base, weight_decay=grid_wd) for grid_wd in GRID_WEIGHT_DECAYS})
        runs[wd] = self.runs(replace(self.base, weight_decay=wd), live, seeds)
        return dict(sorted(runs.items()))

    def describe(self, params: dict[str, Any], result) -> str:
        return f"weight decay {params['weight_decay']:g}: {result[params['weight_decay']].headline()}"

    def draw(self, params: dict[str, Any], result, pinned=None) -> Figure:
        overlay = None
        if pinned is not None:
            wd = pinned[0]["weight_decay"]
            overlay = (f"weight decay {wd:g}", pinned[1][wd])
        return plot_weight_decay(result, selected=params["weight_decay"], pinned=overlay)
