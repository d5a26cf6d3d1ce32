"""Figures for the lectures. Every function computes what it draws from bnlab code and returns the Figure."""

from bnlab.plots.forward import (
    plot_eps_effect,
    plot_normalization_stages,
    plot_unbiased_variance_error,
    plot_variance_precision,
)
from bnlab.plots.gradients import plot_gradient_check_vs_step, plot_jacobian, plot_timings
from bnlab.plots.graph import draw_batchnorm_graph
from bnlab.plots.inference import plot_running_average_lag
from bnlab.plots.training import plot_gradient_norms, plot_layer_percentiles, plot_test_accuracy

__all__ = [
    "draw_batchnorm_graph",
    "plot_eps_effect",
    "plot_gradient_check_vs_step",
    "plot_gradient_norms",
    "plot_jacobian",
    "plot_layer_percentiles",
    "plot_normalization_stages",
    "plot_running_average_lag",
    "plot_test_accuracy",
    "plot_timings",
    "plot_unbiased_variance_error",
    "plot_variance_precision",
]
from bnlab.plots.experiments import (  # noqa: E402  (lectures 7-9)
    plot_batch_size_sweep,
    plot_depth_runs,
    plot_depth_sweep,
    plot_lr_sweep,
    plot_norm_batch_size,
    plot_one_step_ratio,
    plot_weight_decay,
)

__all__ += [
    "plot_batch_size_sweep",
    "plot_depth_runs",
    "plot_depth_sweep",
    "plot_lr_sweep",
    "plot_norm_batch_size",
    "plot_one_step_ratio",
    "plot_weight_decay",
]
