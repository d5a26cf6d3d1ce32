"""Lecture 2's forward explorer: gamma, beta, eps and the batch size over one batch of two features.

    dash = ForwardDashboard()          # display it in a notebook cell: `dash`
    dash.set(m=2, eps=1.0)             # or dash.controls["m"].value = 2
    dash.last_result, dash.figure, dash.last_error

The data come from :func:`bnlab.lessons.forward.forward_explorer`, the figure from
:func:`bnlab.plots.forward.plot_forward_explorer`. Everything is instant, so every move recomputes.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from bnlab.lessons.forward import ExplorerResult, forward_explorer
from bnlab.plots.forward import plot_forward_explorer
from bnlab.widgets._dashboard import Dashboard

__all__ = ["BATCH_SIZES", "ForwardDashboard"]

BATCH_SIZES = (2, 3, 4, 8, 16, 32, 64, 128, 256, 1024)
_STYLE = {"description_width": "initial"}


class ForwardDashboard(Dashboard):
    """Lecture 2: sliders for feature 0's gamma and beta, eps, and the batch size m.

    Result: the :class:`bnlab.lessons.forward.ExplorerResult` of the current setting.
    """

    title = "The forward pass: γ, β, ε and the batch size m"
    trains = False
    pins = False

    def __init__(self, *, gamma: float = 1.0, beta: float = 0.0, eps: float = 1e-5, m: int = 64,
                 progress: bool = True, update: bool = True):
        controls = {
            "gamma": widgets.FloatSlider(value=gamma, min=-3.0, max=3.0, step=0.25, description="γ (feature 0)",
                                         continuous_update=False, style=_STYLE),
            "beta": widgets.FloatSlider(value=beta, min=-3.0, max=3.0, step=0.25, description="β (feature 0)",
                                        continuous_update=False, style=_STYLE),
            "eps": widgets.FloatLogSlider(value=eps, base=10, min=-8, max=0, step=0.5, description="ε",
                                          continuous_update=False, style=_STYLE, readout_format=".0e"),
            "m": widgets.SelectionSlider(options=list(BATCH_SIZES), value=m, description="batch size m",
                                         continuous_update=False, style=_STYLE),
        }
        super().__init__(controls, progress=progress, update=update)

    def compute(self, params: dict[str, Any], live: bool,
                seeds: tuple[int, ...] | None = None) -> ExplorerResult:
        return forward_explorer(gamma=float(params["gamma"]), beta=float(params["beta"]),
                                eps=float(params["eps"]), m=int(params["m"]))

    def draw(self, params: dict[str, Any], result: ExplorerResult, pinned: Any = None) -> Figure:
        return plot_forward_explorer(result)
