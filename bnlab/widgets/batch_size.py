"""Lecture 8's dashboard: normalization batch, SGD batch, and which statistics BN uses at test time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from bnlab.experiments import BatchSizeConfig
from bnlab.experiments.batch_size import GRID_BATCH_SIZES, GRID_NORM_BATCH_SIZES
from bnlab.plots.batch_size import plot_norm_batch_size
from bnlab.report import seed_values
from bnlab.widgets._dashboard import Dashboard, SettingHint

__all__ = ["BatchSizeDashboard"]

STYLE = {"description_width": "initial"}


class BatchSizeDashboard(Dashboard):
    """Result: ``{"bn": {nbs: SeedRuns}, "others": {"LayerNorm": SeedRuns, "GroupNorm": SeedRuns}}`` at the
    chosen SGD batch size (BN at every cached NBS, plus the selected one)."""

    title = "Normalization batch size vs SGD batch size"
    live_hint = "about 5-15 s"

    def __init__(self, base: BatchSizeConfig = BatchSizeConfig(), *, progress: bool = True, update: bool = True,
                 background: bool = True):
        self.base = base
        controls = {
            "norm_batch_size": widgets.SelectionSlider(options=list(GRID_NORM_BATCH_SIZES),
                                                       value=base.norm_batch_size, description="normalization batch",
                                                       style=STYLE, continuous_update=False),
            "batch_size": widgets.SelectionSlider(options=list(GRID_BATCH_SIZES), value=base.batch_size,
                                                  description="SGD batch", style=STYLE, continuous_update=False),
            "test_statistics": widgets.ToggleButtons(options=["population", "batch", "both"], value="population",
                                                     description="BN at test time", style=STYLE,
                                                     tooltips=["eval(): running averages",
                                                               "train mode: each test batch's own statistics",
                                                               "both curves, to compare them"]),
        }
        super().__init__(controls, progress=progress, update=update, background=background)

    def live_updates(self, params: dict[str, Any], seeds: tuple[int, ...]) -> int:
        return self.base.steps * len(seeds) * 3  # BN, LayerNorm, GroupNorm

    def compute(self, params: dict[str, Any], live: bool, seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
        batch_size, nbs = params["batch_size"], params["norm_batch_size"]
        if nbs > batch_size:
            raise SettingHint(f"A normalization batch of {nbs} cannot be larger than the SGD batch of "
                              f"{batch_size}: each SGD batch is cut into normalization batches. Choose a "
                              f"normalization batch of {batch_size} or less, or a larger SGD batch.")
        selected = replace(self.base, norm="batch", batch_size=batch_size, norm_batch_size=nbs)
        bn = {nbs: self.runs(selected, live, seeds)}
        bn.update(self.cached({g: replace(selected, norm_batch_size=g) for g in GRID_NORM_BATCH_SIZES
                               if g != nbs and g <= batch_size and batch_size % g == 0}))
        others = {label: self.runs(replace(selected, norm=norm), live, seeds)
                  for label, norm in (("LayerNorm", "layer"), ("GroupNorm", "group"))}
        return {"bn": dict(sorted(bn.items())), "others": others}

    def describe(self, params: dict[str, Any], result: dict[str, Any]) -> str:
        runs = result["bn"][params["norm_batch_size"]]
        shown = ("population", "batch") if params["test_statistics"] == "both" else (params["test_statistics"],)
        parts = []
        for statistics in shown:
            key = "final_accuracy" if statistics == "population" else "batch_stats_accuracy"
            parts.append(f"{statistics} statistics {seed_values(runs, key, digits=3)}")
        seeds = f"{len(runs.seeds)} seed{'s' if len(runs.seeds) > 1 else ''}"
        return (f"BN at normalization batch {params['norm_batch_size']}, test accuracy with {'; '.join(parts)} "
                f"({seeds})")

    def draw(self, params: dict[str, Any], result: dict[str, Any], pinned=None) -> Figure:
        overlay = None
        if pinned is not None:  # the pinned curve keeps the statistics it was pinned with
            statistics = "population" if pinned[0]["test_statistics"] == "both" else pinned[0]["test_statistics"]
            overlay = (f"SGD batch {pinned[0]['batch_size']}", pinned[1]["bn"], statistics)
        return plot_norm_batch_size(result["bn"], result["others"], params["batch_size"],
                                    selected=params["norm_batch_size"],
                                    test_statistics=params["test_statistics"], pinned=overlay)
