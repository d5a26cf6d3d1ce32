"""Lecture 5's dashboard: momentum and run length over the running averages of one channel's batch statistic.

The data come from :func:`bnlab.lessons.inference.running_average_traces` (instant; a synthetic statistic whose
truth follows :func:`bnlab.lessons.inference.synthetic_truth`), the figure from
:func:`bnlab.plots.inference.plot_running_averages`; nothing is computed here.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from bnlab.lessons.inference import MAX_TRACE_STEPS, STATISTICS, RunningAverages, running_average_traces
from bnlab.plots.inference import plot_running_averages
from bnlab.widgets._dashboard import Dashboard

__all__ = ["MOMENTA", "RunningAveragesDashboard"]

MOMENTA = (1e-4, 2e-4, 5e-4, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # round values, log-spaced
_STYLE = {"description_width": "initial"}


class RunningAveragesDashboard(Dashboard):
    """Momentum (PyTorch's, round values from 1e-4 to 1), number of steps (1 to 3000), the statistic (variance or
    mean) and the drift d of its synthetic truth (it starts at (1 - d) times its final value and settles with a
    time constant of 60 steps); draws the raw EMA from PyTorch's initial value, the bias-corrected EMA, the
    equal-weight average and the truth.

    Result: a :class:`~bnlab.lessons.inference.RunningAverages`.
    """

    title = "Running averages: momentum, run length and the initial value"
    trains = False
    pins = False

    def __init__(self, *, momentum: float = 0.001, steps: int = 300, statistic: str = "variance",
                 drift: float = 0.5, progress: bool = True, update: bool = True):
        controls = {
            "momentum": widgets.SelectionSlider(options=list(MOMENTA), value=momentum,
                                                description="momentum (PyTorch)", continuous_update=False,
                                                style=_STYLE),
            "steps": widgets.IntSlider(value=steps, min=1, max=MAX_TRACE_STEPS, step=1, description="steps",
                                       continuous_update=False, style=_STYLE),
            "statistic": widgets.ToggleButtons(options=list(STATISTICS), value=statistic,
                                               description="statistic", style=_STYLE),
            "drift": widgets.FloatSlider(value=drift, min=0.0, max=1.0, step=0.1,
                                         description="drift d (truth starts at (1 - d)·final)",
                                         continuous_update=False, style=_STYLE, readout_format=".1f"),
        }
        super().__init__(controls, progress=progress, update=update)

    def compute(self, params: dict[str, Any], live: bool,
                seeds: tuple[int, ...] | None = None) -> RunningAverages:
        return running_average_traces(params["momentum"], params["steps"], params["statistic"], params["drift"])

    def draw(self, params: dict[str, Any], result: RunningAverages, pinned: Any = None) -> Figure:
        return plot_running_averages(result)
