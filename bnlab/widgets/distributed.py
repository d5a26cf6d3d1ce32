"""Lecture 13's explorer: how far local batch statistics are from the full batch's, for W processes holding
n examples each.

    dash = LocalStatisticsDashboard()   # display it in a notebook cell: `dash`
    dash.set(processes=8, per_process=4)
    dash.last_result, dash.figure, dash.status.value, dash.last_error

It starts no processes: local statistics on W processes are exactly W consecutive shares normalized one by one
in this process (lecture 13 checks the equality), so the explorer computes the single-process twin,
:func:`bnlab.lessons.distributed.split_statistics`, on the inputs of the first batch norm of the untrained
3 x 100 ReLU+BN MLP of seed 0 for W x n MNIST training digits. Everything is instant, so every move recomputes.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from bnlab.lessons.distributed import (
    LocalStatistics,
    first_layer_inputs,
    mnist_batch,
    predicted_mean_spread,
    predicted_var_ratio,
    split_statistics,
)
from bnlab.plots.distributed import plot_split_statistics
from bnlab.widgets._dashboard import Dashboard, SettingHint

__all__ = ["MAX_EXAMPLES", "PER_PROCESS", "PROCESSES", "LocalStatisticsDashboard"]

PROCESSES = (1, 2, 4, 8, 16, 32, 64)
PER_PROCESS = (2, 4, 8, 16, 32, 64, 128, 256)
MAX_EXAMPLES = 4000  # the training split of the MNIST subset
_STYLE = {"description_width": "initial"}


class LocalStatisticsDashboard(Dashboard):
    """Lecture 13: sliders for the number of processes W and the examples per process n.

    Result: the :class:`bnlab.lessons.distributed.LocalStatistics` of the split. A split needing more than
    4,000 digits is a plain hint.
    """

    title = "Local statistics: W processes with n examples each"
    trains = False
    pins = False

    def __init__(self, *, processes: int = 2, per_process: int = 32, progress: bool = True,
                 update: bool = True):
        controls = {
            "processes": widgets.SelectionSlider(options=list(PROCESSES), value=processes,
                                                 description="processes W", continuous_update=False, style=_STYLE),
            "per_process": widgets.SelectionSlider(options=list(PER_PROCESS), value=per_process,
                                                   description="examples per process n", continuous_update=False,
                                                   style=_STYLE),
        }
        super().__init__(controls, progress=progress, update=update)

    def compute(self, params: dict[str, Any], live: bool,
                seeds: tuple[int, ...] | None = None) -> LocalStatistics:
        world, share = int(params["processes"]), int(params["per_process"])
        if world * share > MAX_EXAMPLES:
            raise SettingHint(f"{world} processes x {share} examples = {world * share} digits, but the training "
                              f"split has {MAX_EXAMPLES:,}: take fewer processes or fewer examples each")
        x, _ = mnist_batch(world * share)
        return split_statistics(first_layer_inputs(x), (share,) * world)

    def draw(self, params: dict[str, Any], result: LocalStatistics, pinned: Any = None) -> Figure:
        return plot_split_statistics(result)

    def describe(self, params: dict[str, Any], result: LocalStatistics) -> str:
        share, total = result.sizes[0], sum(result.sizes)
        measured = float(np.sqrt(np.mean(result.mean_deviation() ** 2)))
        predicted = predicted_mean_spread(share, total)
        return (f"batch of {total} digits, {share} per process: RMS of (mean_k - mean)/std {measured:.3f} "
                f"(predicted {predicted:.3f}); var_k/var from {result.var_ratio().min():.2f} to "
                f"{result.var_ratio().max():.2f}, mean {result.mean_var_ratio():.3f} (predicted "
                f"{predicted_var_ratio(share, total):.3f})")
