"""Lecture 7's dashboard: depth, activation, norm and init of an MLP, layer by layer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from bnlab.experiments import DepthConfig
from bnlab.experiments.base import ACTIVATIONS
from bnlab.experiments.depth import DEPTH_INITS, DEPTH_NORMS, describe_runs
from bnlab.plots.depth import plot_depth_runs
from bnlab.widgets._dashboard import Dashboard

__all__ = ["DepthDashboard"]

STYLE = {"description_width": "initial"}
NORM_LABELS = {"none": "no norm", "batch": "BN", "layer": "LayerNorm", "group": "GroupNorm"}


class DepthDashboard(Dashboard):
    """Depth, activation, norm and init; accuracy, gradients, similarity and pre-activations per layer.

    ``base`` fixes everything the controls do not set (width, lr, batch, steps, seeds).
    Result: ``{"runs": SeedRuns, "compare": {label: SeedRuns}}`` (the same net with BN, or without it when BN
    is selected, if cached).
    """

    title = "Depth: when does a plain MLP stop learning?"
    live_hint = "about 3-15 s for 3 seeds, longer for deep nets; the first seed is drawn first"

    def __init__(self, base: DepthConfig = DepthConfig(), *, progress: bool = True, update: bool = True,
                 background: bool = True):
        self.base = base
        controls = {
            "depth": widgets.IntSlider(value=base.depth, min=2, max=20, description="depth (hidden layers)",
                                       continuous_update=False, style=STYLE),
            "activation": widgets.Dropdown(options=ACTIVATIONS, value=base.activation, description="activation"),
            "norm": widgets.Dropdown(options=[(NORM_LABELS[n], n) for n in DEPTH_NORMS], value=base.norm,
                                     description="norm"),
            "init": widgets.Dropdown(options=DEPTH_INITS, value=base.init, description="init"),
            "init_std": widgets.FloatLogSlider(value=base.init_std, base=10, min=-3, max=0, step=0.25,
                                               description="Gaussian std", continuous_update=False,
                                               style=STYLE, readout_format=".3g"),
        }
        super().__init__(controls, progress=progress, update=update, background=background)

    def config(self, params: dict[str, Any]) -> DepthConfig:
        return replace(self.base, **params)

    def label(self, params: dict[str, Any]) -> str:
        """The setting in words, e.g. ``"depth 10, relu, no norm, default init"``."""
        init = f"Gaussian std {params['init_std']:.3g}" if params["init"] == "gaussian" else f"{params['init']} init"
        return f"depth {params['depth']}, {params['activation']}, {NORM_LABELS[params['norm']]}, {init}"

    def disabled_controls(self, params: dict[str, Any]) -> set[str]:
        return set() if params["init"] == "gaussian" else {"init_std"}

    def compute(self, params: dict[str, Any], live: bool, seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
        config = self.config(params)
        runs = self.runs(config, live, seeds)
        other = "none" if config.norm == "batch" else "batch"
        compare = self.cached({f"{NORM_LABELS[other]} (same net)": replace(config, norm=other)})
        return {"runs": runs, "compare": compare}

    def describe(self, params: dict[str, Any], result: dict[str, Any]) -> str:
        return describe_runs(result["runs"])

    def draw(self, params: dict[str, Any], result: dict[str, Any], pinned=None) -> Figure:
        overlay = None if pinned is None else (self.label(pinned[0]), pinned[1]["runs"])
        return plot_depth_runs(result["runs"], f"{self.label(params)}: {describe_runs(result['runs'])}",
                               compare=result["compare"], label=NORM_LABELS[params["norm"]], pinned=overlay)
