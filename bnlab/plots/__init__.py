"""Figures for the lectures. Every function computes what it draws from bnlab code and returns the Figure.

One module per topic: training (lecture 1), forward (2), graph and gradients (3, 4), speed (4, 6), inference (5),
depth (7), batch_size (8), learning_rate (9), figure1 (10), why (11), practice (12), distributed (13). Lectures
import from the module, e.g. ``from bnlab.plots.forward import plot_eps_effect``; the modules of lectures 1-9
are also available here.
"""

from bnlab.plots.batch_size import (
    plot_batch_size_sweep,
    plot_equal_examples,
    plot_nbs_by_sgd_batch,
    plot_norm_batch_size,
    plot_pair_gradients,
)
from bnlab.plots.depth import plot_depth_runs, plot_depth_sweep
from bnlab.plots.forward import (
    plot_batch_dependence,
    plot_eps_effect,
    plot_forward_explorer,
    plot_normalization_stages,
    plot_variance_precision,
)
from bnlab.plots.gradients import plot_gradient_check_vs_step, plot_jacobian
from bnlab.plots.graph import draw_batchnorm_graph
from bnlab.plots.inference import plot_measured_lag, plot_precise_bn, plot_running_averages
from bnlab.plots.learning_rate import plot_effective_lr, plot_lr_sweep, plot_one_step_ratio, plot_weight_decay
from bnlab.plots.speed import plot_pass_equivalents
from bnlab.plots.training import (
    plot_accuracy_panels,
    plot_gradient_norms,
    plot_layer_percentiles,
    plot_preactivation_spread,
    plot_test_accuracy,
    plot_unit_percentiles,
)

__all__ = [
    "draw_batchnorm_graph",
    "plot_accuracy_panels",
    "plot_batch_dependence",
    "plot_batch_size_sweep",
    "plot_depth_runs",
    "plot_depth_sweep",
    "plot_effective_lr",
    "plot_equal_examples",
    "plot_eps_effect",
    "plot_forward_explorer",
    "plot_gradient_check_vs_step",
    "plot_gradient_norms",
    "plot_jacobian",
    "plot_layer_percentiles",
    "plot_lr_sweep",
    "plot_measured_lag",
    "plot_nbs_by_sgd_batch",
    "plot_norm_batch_size",
    "plot_normalization_stages",
    "plot_one_step_ratio",
    "plot_pair_gradients",
    "plot_pass_equivalents",
    "plot_preactivation_spread",
    "plot_precise_bn",
    "plot_running_averages",
    "plot_test_accuracy",
    "plot_unit_percentiles",
    "plot_variance_precision",
    "plot_weight_decay",
]
