"""Lecture 12's dashboard: one trained network tested in eval mode, in training mode (``eval()`` forgotten) or
after a training-mode pass polluted its running statistics, in shuffled or class-sorted test batches of any size.

    dash = ForgotEvalDashboard(model)          # display it in a notebook cell: `dash`
    dash.set(mode="train", order="class-sorted", batch_size=8)
    dash.last_result, dash.figure, dash.last_error

Every setting is computed once, when the dashboard is built (:func:`bnlab.lessons.practice.forgot_eval_table`,
about 1-2 s); a move only redraws (:func:`bnlab.plots.practice.plot_forgot_eval`). A training-mode batch of one
is a setting the lecture invites: the figure marks it and the status line quotes the error torch raises.
"""

from __future__ import annotations

import math
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure
from torch import nn

from bnlab.data import Dataset
from bnlab.lessons.practice import (
    BATCH_SIZES,
    MODES,
    ORDERS,
    ForgotEvalTable,
    forgot_eval_table,
)
from bnlab.plots.practice import MODE_WORDS, plot_forgot_eval
from bnlab.widgets._dashboard import Dashboard

__all__ = ["ForgotEvalDashboard"]

_STYLE = {"description_width": "initial"}


class ForgotEvalDashboard(Dashboard):
    """Controls: the test batch size, the order of the test digits and how the network is tested.

    Result: ``{"table": ForgotEvalTable, "accuracy": float}`` (NaN where the setting raises).
    """

    title = "Forgetting eval(): test batch size × order × mode"
    trains = False
    pins = False

    def __init__(self, model: nn.Module | None = None, data: Dataset | None = None, *,
                 table: ForgotEvalTable | None = None, batch_size: int = 8, order: str = "class-sorted",
                 mode: str = "train", progress: bool = True, update: bool = True):
        if table is None:
            if model is None:
                raise ValueError("ForgotEvalDashboard needs a trained model (or a precomputed table=...)")
            table = forgot_eval_table(model, data, BATCH_SIZES)
        self.table = table
        if batch_size not in table.batch_sizes:
            raise ValueError(f"batch_size must be one of {table.batch_sizes}, got {batch_size!r}")
        controls = {
            "batch_size": widgets.SelectionSlider(options=list(table.batch_sizes), value=batch_size,
                                                  description="test batch size", continuous_update=False,
                                                  style=_STYLE),
            "order": widgets.ToggleButtons(options=list(ORDERS), value=order, description="test digits",
                                           style=_STYLE),
            "mode": widgets.ToggleButtons(options=[(MODE_WORDS[m], m) for m in MODES], value=mode,
                                          description="tested with", style=_STYLE),
        }
        super().__init__(controls, progress=progress, update=update)

    def compute(self, params: dict[str, Any], live: bool, seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
        accuracy = self.table.at(params["mode"], params["order"], params["batch_size"])
        return {"table": self.table, "accuracy": accuracy}

    def describe(self, params: dict[str, Any], result: dict[str, Any]) -> str:
        what = f"{MODE_WORDS[params['mode']]}, {params['order']} test batches of {params['batch_size']}"
        if math.isnan(result["accuracy"]):
            return f"{what}: raises ValueError ({self.table.error})"
        return (f"{what}: test accuracy {result['accuracy']:.3f} (eval(): {self.table.reference:.3f})")

    def draw(self, params: dict[str, Any], result: dict[str, Any], pinned: Any = None) -> Figure:
        return plot_forgot_eval(result["table"], params["mode"], params["order"], params["batch_size"])
