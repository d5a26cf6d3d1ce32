"""Lecture 10's dashboard: the paper's figure 1 at the learning rate and init std the paper does not give."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from bnlab.experiments.figure1 import (
    GRID_INIT_STDS,
    GRID_LEARNING_RATES,
    NETS,
    Figure1Config,
)
from bnlab.lessons.figure1 import accuracy_gap, median_movement
from bnlab.plots.figure1 import plot_figure1
from bnlab.widgets._dashboard import Dashboard

__all__ = ["INIT_STD_OPTIONS", "LR_OPTIONS", "Figure1Dashboard"]

STYLE = {"description_width": "initial"}
# the sliders' positions: every grid value (cached) and values between them (trained live)
LR_OPTIONS = tuple(sorted({*GRID_LEARNING_RATES, 0.05, 0.3, 0.7, 1.5, 3.0}))
INIT_STD_OPTIONS = tuple(sorted({*GRID_INIT_STDS, 0.001, 0.003, 0.02, 0.05, 0.2, 0.5, 2.0}))


class Figure1Dashboard(Dashboard):
    """Learning rate and init std of the paper's figure 1; both nets drawn side by side.

    Result: ``{"nets": {"no BN": SeedRuns, "BN": SeedRuns}, "context": {"no BN": {init_std: SeedRuns}, "BN":
    {...}}}``: the selected setting, and every cached init std at the selected learning rate.
    """

    title = "The paper's figure 1: the learning rate and init std it does not give"
    live_hint = "about 3-8 s: both nets, 3 seeds each, 1,000 updates"

    def __init__(self, base: Figure1Config = Figure1Config(), *, progress: bool = True, update: bool = True,
                 background: bool = True):
        if not isinstance(base, Figure1Config):
            raise TypeError(f"base must be a Figure1Config, got {type(base).__name__}")
        for name, value, options in (("lr", base.lr, LR_OPTIONS), ("init_std", base.init_std, INIT_STD_OPTIONS)):
            if value not in options:
                raise ValueError(f"base.{name} must be one of the slider's positions {list(options)}, got {value!r}")
        self.base = base
        controls = {
            "lr": widgets.SelectionSlider(options=list(LR_OPTIONS), value=base.lr, description="learning rate",
                                          style=STYLE, continuous_update=False),
            "init_std": widgets.SelectionSlider(options=list(INIT_STD_OPTIONS), value=base.init_std,
                                                description="init std", style=STYLE, continuous_update=False),
        }
        super().__init__(controls, progress=progress, update=update, background=background)

    def live_updates(self, params: dict[str, Any], seeds: tuple[int, ...]) -> int:
        return self.base.steps * len(seeds) * len(NETS)

    def config(self, params: dict[str, Any]) -> Figure1Config:
        return replace(self.base, lr=params["lr"], init_std=params["init_std"])

    def compute(self, params: dict[str, Any], live: bool, seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
        config = self.config(params)
        nets = {label: self.runs(replace(config, norm=norm), live, seeds) for label, norm in NETS.items()}
        context = {}
        for label, norm in NETS.items():
            cached = self.cached({std: replace(config, norm=norm, init_std=std) for std in INIT_STD_OPTIONS
                                  if std != config.init_std})
            context[label] = dict(sorted({**cached, config.init_std: nets[label]}.items()))
        return {"nets": nets, "context": context}

    def describe(self, params: dict[str, Any], result: dict[str, Any]) -> str:
        nets = result["nets"]
        words = [f"{label}: {runs.headline()}" for label, runs in nets.items()]
        gap = accuracy_gap(nets)
        words.append("gap BN minus no BN: n/a (a seed diverged)" if not np.isfinite(gap)
                     else f"gap BN minus no BN {gap:+.3f}")
        moved = {label: np.nanmean(median_movement(runs)) for label, runs in nets.items()}
        words.append("median unit moved " + ", ".join(f"{label} {value:.2f}" for label, value in moved.items()))
        return f"lr {params['lr']:g}, init std {params['init_std']:g}: " + "; ".join(words)

    def draw(self, params: dict[str, Any], result: dict[str, Any], pinned=None) -> Figure:
        overlay = None
        if pinned is not None:
            overlay = (f"lr {pinned[0]['lr']:g}, std {pinned[0]['init_std']:g}", pinned[1]["nets"])
        return plot_figure1(result["nets"], context=result["context"], selected_std=params["init_std"],
                            pinned=overlay,
                            title=f"lr {params['lr']:g}, init std {params['init_std']:g}: 3 x 100 sigmoid units, "
                                  f"batch {self.base.batch_size}")
