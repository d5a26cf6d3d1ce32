"""Thin dashboards over :mod:`bnlab.experiments` for lectures 7-9, drivable from tests without a kernel.

    dash = DepthDashboard()          # display it in a notebook cell: `dash`
    dash.set(depth=20, norm="batch") # or dash.controls["depth"].value = 20
    dash.last_result, dash.figure, dash.last_error
"""

from bnlab.widgets._dashboard import Dashboard
from bnlab.widgets.dashboards import BatchSizeDashboard, DepthDashboard, LearningRateDashboard, WeightDecayDashboard

__all__ = ["BatchSizeDashboard", "Dashboard", "DepthDashboard", "LearningRateDashboard", "WeightDecayDashboard"]
