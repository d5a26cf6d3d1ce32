"""The three lecture dashboards (7: depth, 8: batch size, 9: learning rate and weight decay).

Each reads the experiment functions of :mod:`bnlab.experiments` and draws with :mod:`bnlab.plots.experiments`;
nothing is computed here. Settings of the default grid answer from the cache; others wait for *Train live*.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from bnlab.experiments import (
    GRID_LEARNING_RATES,
    GRID_WEIGHT_DECAYS,
    BatchSizeConfig,
    DepthConfig,
    LearningRateConfig,
    NotCachedError,
    SeedRuns,
    WeightDecayConfig,
    batch_size_experiment,
    depth_experiment,
    learning_rate_experiment,
    max_stable_learning_rate,
    weight_decay_experiment,
)
from bnlab.experiments.batch_size import GRID_BATCH_SIZES, GRID_NORM_BATCH_SIZES
from bnlab.experiments.depth import DEPTH_ACTIVATIONS, DEPTH_INITS, DEPTH_NORMS
from bnlab.plots.experiments import plot_depth_runs, plot_lr_sweep, plot_norm_batch_size, plot_weight_decay
from bnlab.widgets._dashboard import Dashboard

__all__ = ["BatchSizeDashboard", "DepthDashboard", "LearningRateDashboard", "WeightDecayDashboard"]

_STYLE = {"description_width": "initial"}
_NORM_LABELS = {"none": "no norm", "batch": "BN", "layer": "LayerNorm", "group": "GroupNorm"}


def _cached(function, config) -> SeedRuns | None:
    """Runs of ``config`` if every seed is cached, else None (context lines never train)."""
    try:
        return function(config, cached_only=True)
    except NotCachedError:
        return None


class DepthDashboard(Dashboard):
    """Lecture 7: depth, activation, norm and init of an MLP; accuracy, pre-activations and gradients.

    ``base`` fixes everything the controls do not set (width, lr, batch, steps, seeds).
    Result: ``{"runs": SeedRuns, "compare": {label: SeedRuns}}``.
    """

    title = "Depth: when does a plain MLP stop learning?"
    live_hint = "about 2-8 s for 3 seeds, longer for deep nets"

    def __init__(self, base: DepthConfig = DepthConfig(), *, progress: bool = True, update: bool = True):
        self.base = base
        controls = {
            "depth": widgets.IntSlider(value=base.depth, min=2, max=20, description="depth (hidden layers)",
                                       continuous_update=False, style=_STYLE),
            "activation": widgets.Dropdown(options=DEPTH_ACTIVATIONS, value=base.activation,
                                           description="activation"),
            "norm": widgets.Dropdown(options=[(_NORM_LABELS[n], n) for n in DEPTH_NORMS], value=base.norm,
                                     description="norm"),
            "init": widgets.Dropdown(options=DEPTH_INITS, value=base.init, description="init"),
            "init_std": widgets.FloatLogSlider(value=base.init_std, base=10, min=-3, max=0, step=0.25,
                                               description="Gaussian std", continuous_update=False,
                                               style=_STYLE, readout_format=".3f"),
        }
        super().__init__(controls, progress=progress, update=update)

    def config(self, params: dict[str, Any]) -> DepthConfig:
        return replace(self.base, **params)

    def compute(self, params: dict[str, Any], live: bool) -> dict[str, Any]:
        config = self.config(params)
        runs = depth_experiment(config, cached_only=not live, progress=self.progress_enabled)
        other = "none" if config.norm == "batch" else "batch"
        compare = {}
        reference = _cached(depth_experiment, replace(config, norm=other))
        if reference is not None:
            compare[f"same with {_NORM_LABELS[other]}"] = reference
        return {"runs": runs, "compare": compare}

    def draw(self, params: dict[str, Any], result: dict[str, Any]) -> Figure:
        config = self.config(params)
        init = f"Gaussian std {config.init_std:g}" if config.init == "gaussian" else f"{config.init} init"
        title = (f"depth {config.depth}, {config.activation}, {_NORM_LABELS[config.norm]}, {init}: final test "
                 f"accuracy {result['runs'].scalar('final_accuracy'):.3f} (mean of {len(config.seeds)} seeds)")
        return plot_depth_runs(result["runs"], title, compare=result["compare"],
                               label=_NORM_LABELS[config.norm])


class BatchSizeDashboard(Dashboard):
    """Lecture 8: normalization batch size, SGD batch size, and which statistics are used at test time.

    Result: ``{"bn": {nbs: SeedRuns}, "others": {"LayerNorm": SeedRuns, "GroupNorm": SeedRuns}}`` at the chosen
    SGD batch size (BN at every cached NBS, plus the selected one).
    """

    title = "Normalization batch size vs SGD batch size"
    live_hint = "about 5-15 s"

    def __init__(self, base: BatchSizeConfig = BatchSizeConfig(), *, progress: bool = True, update: bool = True):
        self.base = base
        controls = {
            "norm_batch_size": widgets.SelectionSlider(options=list(GRID_NORM_BATCH_SIZES),
                                                       value=base.norm_batch_size,
                                                       description="normalization batch", style=_STYLE,
                                                       continuous_update=False),
            "batch_size": widgets.SelectionSlider(options=list(GRID_BATCH_SIZES), value=base.batch_size,
                                                  description="SGD batch", style=_STYLE,
                                                  continuous_update=False),
            "test_statistics": widgets.ToggleButtons(options=["population", "batch"], value="population",
                                                     description="BN at test time", style=_STYLE,
                                                     tooltips=["eval(): running averages",
                                                               "train mode: each test batch's own statistics"]),
        }
        super().__init__(controls, progress=progress, update=update)

    def compute(self, params: dict[str, Any], live: bool) -> dict[str, Any]:
        batch_size, nbs = params["batch_size"], params["norm_batch_size"]
        if nbs > batch_size:
            raise ValueError(f"the normalization batch ({nbs}) cannot be larger than the SGD batch "
                             f"({batch_size}): pick a normalization batch <= {batch_size}")
        selected = replace(self.base, norm="batch", batch_size=batch_size, norm_batch_size=nbs)
        bn = {nbs: batch_size_experiment(selected, cached_only=not live, progress=self.progress_enabled)}
        for other_nbs in GRID_NORM_BATCH_SIZES:
            if other_nbs != nbs and other_nbs <= batch_size and batch_size % other_nbs == 0:
                runs = _cached(batch_size_experiment, replace(selected, norm_batch_size=other_nbs))
                if runs is not None:
                    bn[other_nbs] = runs
        others = {_NORM_LABELS[norm]: batch_size_experiment(replace(selected, norm=norm), cached_only=not live,
                                                            progress=self.progress_enabled)
                  for norm in ("layer", "group")}
        return {"bn": bn, "others": others}

    def draw(self, params: dict[str, Any], result: dict[str, Any]) -> Figure:
        return plot_norm_batch_size(result["bn"], result["others"], params["batch_size"],
                                    selected=params["norm_batch_size"],
                                    test_statistics=params["test_statistics"])


def _snap_to_grid(lr: float) -> float:
    """A log slider's value, snapped to the grid value it stands for (10^(k/4) rounded to 4 digits)."""
    for grid_lr in GRID_LEARNING_RATES:
        if abs(math.log10(lr) - math.log10(grid_lr)) < 1e-3:
            return grid_lr
    return float(f"{lr:.4g}")


class LearningRateDashboard(Dashboard):
    """Lecture 9: a log-scale learning rate for a depth-10 ReLU MLP (He init), with and without BN.

    Result: ``{"sweeps": {"no BN": {lr: SeedRuns}, "BN": {...}}, "max_stable": {label: lr}}`` (every cached
    grid rate plus the selected one).
    """

    title = "Learning rate: how large before training blows up?"
    live_hint = "about 5-15 s"

    def __init__(self, base: LearningRateConfig = LearningRateConfig(), *, progress: bool = True,
                 update: bool = True):
        self.base = base
        controls = {
            "lr": widgets.FloatLogSlider(value=base.lr, base=10, min=-2, max=1, step=0.25,
                                         description="learning rate", continuous_update=False, style=_STYLE,
                                         readout_format=".3g"),
        }
        super().__init__(controls, progress=progress, update=update)

    def compute(self, params: dict[str, Any], live: bool) -> dict[str, Any]:
        lr = _snap_to_grid(params["lr"])
        sweeps: dict[str, dict[float, SeedRuns]] = {}
        for norm, label in (("none", "no BN"), ("batch", "BN")):
            config = replace(self.base, norm=norm)
            sweep = {lr: learning_rate_experiment(replace(config, lr=lr), cached_only=not live,
                                                  progress=self.progress_enabled)}
            for grid_lr in GRID_LEARNING_RATES:
                runs = _cached(learning_rate_experiment, replace(config, lr=grid_lr))
                if runs is not None:
                    sweep[grid_lr] = runs
            sweeps[label] = sweep
        max_stable = {label: max_stable_learning_rate(sweep) for label, sweep in sweeps.items()}
        return {"lr": lr, "sweeps": sweeps, "max_stable": max_stable}

    def draw(self, params: dict[str, Any], result: dict[str, Any]) -> Figure:
        return plot_lr_sweep(result["sweeps"], selected=result["lr"], max_stable=result["max_stable"])


class WeightDecayDashboard(Dashboard):
    """Lecture 9: weight decay on a batch-normalized MLP shrinks the weights and so raises lr/||W||^2.

    Result: ``{weight_decay: SeedRuns}`` for every cached grid value plus the selected one.
    """

    title = "Weight decay under batch norm: a larger effective learning rate"
    live_hint = "about 30 s (3,000 steps, 3 seeds)"

    def __init__(self, base: WeightDecayConfig = WeightDecayConfig(), *, progress: bool = True,
                 update: bool = True):
        self.base = base
        controls = {
            "weight_decay": widgets.SelectionSlider(options=[0.0, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2],
                                                    value=base.weight_decay, description="weight decay",
                                                    style=_STYLE, continuous_update=False),
        }
        super().__init__(controls, progress=progress, update=update)

    def compute(self, params: dict[str, Any], live: bool) -> dict[float, SeedRuns]:
        wd = params["weight_decay"]
        runs = {wd: weight_decay_experiment(replace(self.base, weight_decay=wd), cached_only=not live,
                                            progress=self.progress_enabled)}
        for grid_wd in GRID_WEIGHT_DECAYS:
            if grid_wd not in runs:
                cached = _cached(weight_decay_experiment, replace(self.base, weight_decay=grid_wd))
                if cached is not None:
                    runs[grid_wd] = cached
        return runs

    def draw(self, params: dict[str, Any], result: dict[float, SeedRuns]) -> Figure:
        return plot_weight_decay(result, selected=params["weight_decay"])
