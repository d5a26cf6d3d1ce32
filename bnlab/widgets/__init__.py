"""Dashboards drivable from tests without a kernel: instant explorers (lectures 2, 5, 13) and experiments (7-10, 12).

    dash = DepthDashboard()          # display it in a notebook cell: `dash`
    dash.set(depth=20, norm="batch") # or dash.controls["depth"].value = 20
    dash.last_result, dash.figure, dash.last_error
"""

from bnlab.widgets._dashboard import Dashboard, SettingHint
from bnlab.widgets.batch_size import BatchSizeDashboard
from bnlab.widgets.depth import DepthDashboard
from bnlab.widgets.figure1 import Figure1Dashboard
from bnlab.widgets.forward import ForwardDashboard
from bnlab.widgets.learning_rate import LearningRateDashboard, WeightDecayDashboard
from bnlab.widgets.running import RunningAveragesDashboard

__all__ = ["BatchSizeDashboard", "Dashboard", "DepthDashboard", "ForwardDashboard", "LearningRateDashboard",
           "RunningAveragesDashboard", "SettingHint", "WeightDecayDashboard"]
__all__ += ["Figure1Dashboard"]  # lecture 10
