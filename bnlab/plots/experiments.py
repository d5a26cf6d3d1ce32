"""Figures of the lecture 7-9 experiments. Each takes :class:`bnlab.experiments.SeedRuns` (data, never a
training call) and returns a Figure; lines are seed means, shaded bands span the seeds (minimum to maximum).
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bnlab.experiments import SeedRuns

__all__ = [
    "plot_batch_size_sweep",
    "plot_depth_runs",
    "plot_depth_sweep",
    "plot_lr_sweep",
    "plot_norm_batch_size",
    "plot_one_step_ratio",
    "plot_weight_decay",
]

CHANCE = 0.1  # ten classes

# Fixed margins instead of tight_layout: the dashboards redraw on every slider move and tight_layout's
# measuring pass costs about as much as drawing the figure.
_PANELS_3 = {"left": 0.055, "right": 0.99, "bottom": 0.15, "top": 0.84, "wspace": 0.3}
_PANELS_2 = {"left": 0.06, "right": 0.99, "bottom": 0.14, "top": 0.91, "wspace": 0.2}
_PANEL_1 = {"left": 0.12, "right": 0.97, "bottom": 0.15, "top": 0.9}


def _band(ax: Axes, x: np.ndarray, runs: SeedRuns, name: str, label: str | None = None, **style) -> None:
    """Seed-mean line with a shaded min-max band over seeds."""
    line, = ax.plot(x, runs.mean(name), label=label, **style)
    if len(runs.seeds) > 1:
        ax.fill_between(x, runs.low(name), runs.high(name), color=line.get_color(), alpha=0.2, lw=0)


def _chance(ax: Axes) -> None:
    ax.axhline(CHANCE, color="gray", lw=0.8, ls=":")
    ax.set_ylim(0, 1)


def _summary(values: Mapping[float, SeedRuns], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, low, high of a scalar quantity over a sweep ``{x: runs}`` (sorted by x)."""
    xs = np.array(sorted(values), dtype=float)
    stats = np.array([[values[x].mean(name), values[x].low(name), values[x].high(name)] for x in sorted(values)],
                     dtype=float).reshape(len(xs), 3)
    return xs, stats[:, 0], stats[:, 1], stats[:, 2]


def _sweep_line(ax: Axes, values: Mapping[float, SeedRuns], name: str, label: str, **style) -> None:
    xs, mean, low, high = _summary(values, name)
    line, = ax.plot(xs, mean, marker="o", ms=4, label=label, **style)
    ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, lw=0)


# ----------------------------------------------------------------------------------------------------------
# Lecture 7: depth
# ----------------------------------------------------------------------------------------------------------


def plot_depth_runs(runs: SeedRuns, title: str, compare: Mapping[str, SeedRuns] | None = None,
                    label: str = "this setting") -> Figure:
    """Three panels for one depth setting: test accuracy over training (with ``compare`` runs for reference),
    each hidden layer's pre-activation percentiles at initialization and after training, and each weight
    layer's gradient norm at initialization and after training (log scale)."""
    fig, (acc, pre, grad) = plt.subplots(1, 3, figsize=(13.0, 3.6))
    steps = runs.mean("steps")
    _band(acc, steps, runs, "test_accuracy", label=label, lw=2)
    for name, other in (compare or {}).items():
        _band(acc, other.mean("steps"), other, "test_accuracy", label=name, ls="--")
    _chance(acc)
    acc.set(xlabel="training step (SGD updates)", ylabel="test accuracy (fraction)", title="Test accuracy")
    acc.legend(loc="lower right")

    layers = np.arange(1, runs.values("percentiles_init").shape[1] + 1)
    for key, when, color in (("percentiles_init", "at init", "tab:gray"), ("percentiles_final", "trained",
                                                                           "tab:orange")):
        mean = runs.mean(key)  # (L, 3)
        pre.fill_between(layers, mean[:, 0], mean[:, 2], color=color, alpha=0.25, lw=0)
        pre.plot(layers, mean[:, 1], color=color, marker=".", label=f"median, {when} (band: 15th-85th pct)")
    pre.set(xlabel="hidden layer (input side = 1)", ylabel="pre-activation value",
            title="Inputs of the nonlinearity (test split)")
    pre.legend(loc="best", fontsize=8)

    names = np.arange(1, runs.values("grad_norms_init").shape[1] + 1)
    for key, when, color in (("grad_norms_init", "at init", "tab:gray"), ("grad_norms_final", "trained",
                                                                         "tab:orange")):
        values = np.where(runs.mean(key) > 0, runs.mean(key), np.nan)
        grad.plot(names, values, color=color, marker=".", label=when)
        low, high = runs.low(key), runs.high(key)
        grad.fill_between(names, np.where(low > 0, low, np.nan), np.where(high > 0, high, np.nan), color=color,
                          alpha=0.2, lw=0)
    grad.set_yscale("log")
    grad.set(xlabel="weight layer (last = output layer)", ylabel="gradient norm (Frobenius, log)",
             title="Gradient norm per layer")
    grad.legend(loc="best")
    fig.suptitle(title)
    fig.subplots_adjust(**_PANELS_3)
    return fig


def plot_depth_sweep(sweeps: Mapping[str, Mapping[str, Mapping[int, SeedRuns]]],
                     title: str = "Final test accuracy against depth") -> Figure:
    """One panel per activation: final test accuracy against depth, one line per setting.

    ``sweeps[activation][setting][depth]`` holds the runs, e.g. ``sweeps["relu"]["BN"][20]``.
    """
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 3.5), sharey=True, squeeze=False)
    for ax, (activation, settings) in zip(axes[0], sweeps.items()):
        for setting, by_depth in settings.items():
            _sweep_line(ax, by_depth, "final_accuracy", setting)
        _chance(ax)
        ax.set(title=activation, xlabel="depth (hidden layers)")
        ax.set_xticks(sorted(next(iter(settings.values()))))
    axes[0][0].set_ylabel("test accuracy after training")
    axes[0][-1].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.subplots_adjust(**{**_PANELS_3, "left": 0.06, "wspace": 0.08})
    return fig


# ----------------------------------------------------------------------------------------------------------
# Lecture 8: batch size
# ----------------------------------------------------------------------------------------------------------


def plot_norm_batch_size(bn: Mapping[int, SeedRuns], others: Mapping[str, SeedRuns], batch_size: int,
                         selected: int | None = None, test_statistics: str = "population") -> Figure:
    """Left: final test accuracy against the normalization batch size (log2 axis) for BN with population
    statistics and with test batches' own statistics, and LayerNorm/GroupNorm (which have no batch, so they
    are flat lines). Right: test accuracy over training at the ``selected`` NBS.

    ``bn[nbs]`` holds BN runs at SGD batch ``batch_size``; ``others[label]`` the LN/GN runs.
    """
    fig, (sweep, curves) = plt.subplots(1, 2, figsize=(12.0, 3.8))
    _sweep_line(sweep, bn, "final_accuracy", "BN, population statistics at test (eval())", lw=2)
    _sweep_line(sweep, bn, "batch_stats_accuracy", "BN, test batches' own statistics (no eval())", ls="--")
    xs = np.array(sorted(bn), dtype=float)
    for (label, runs), color in zip(others.items(), ("tab:green", "tab:purple")):
        mean = runs.scalar("final_accuracy")
        sweep.plot(xs, np.full(xs.shape, mean), color=color, label=label)
        sweep.fill_between(xs, float(runs.low("final_accuracy")), float(runs.high("final_accuracy")),
                           color=color, alpha=0.15, lw=0)
    if selected is not None:
        sweep.axvline(selected, color="black", lw=0.8, ls=":")
    sweep.set_xscale("log", base=2)
    sweep.set_xticks(xs, [str(int(x)) for x in xs])
    _chance(sweep)
    sweep.set(xlabel="normalization batch size (examples, log2)", ylabel="test accuracy after training",
              title=f"SGD batch {batch_size}: accuracy vs normalization batch")
    sweep.legend(loc="lower right", fontsize=8)

    if selected is not None and selected in bn:
        key = "final_accuracy" if test_statistics == "population" else "batch_stats_accuracy"
        runs = bn[selected]
        _band(curves, runs.mean("steps"), runs, "test_accuracy", label=f"BN, NBS {selected}", lw=2)
        for label, other in others.items():
            _band(curves, other.mean("steps"), other, "test_accuracy", label=label, ls="--")
        curves.set_title(f"Test accuracy over training (final, {test_statistics} statistics: "
                         f"{runs.scalar(key):.3f})")
    else:
        curves.set_title("Test accuracy over training")
    _chance(curves)
    curves.set(xlabel="training step (SGD updates)", ylabel="test accuracy (population statistics)")
    curves.legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(**_PANELS_2)
    return fig


def plot_batch_size_sweep(sweeps: Mapping[str, Mapping[int, SeedRuns]],
                          title: str = "SGD batch size, same number of updates") -> Figure:
    """Final test accuracy against the SGD batch size (log2 axis), one line per setting."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, by_batch in sweeps.items():
        _sweep_line(ax, by_batch, "final_accuracy", label)
    xs = sorted(next(iter(sweeps.values())))
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_ylim(0.8, 1.0)
    ax.set(xlabel="SGD batch size (examples per update, log2)", ylabel="test accuracy after training",
           title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(**_PANEL_1)
    return fig


# ----------------------------------------------------------------------------------------------------------
# Lecture 9: learning rate
# ----------------------------------------------------------------------------------------------------------


def plot_lr_sweep(sweeps: Mapping[str, Mapping[float, SeedRuns]], selected: float | None = None,
                  max_stable: Mapping[str, float] | None = None) -> Figure:
    """Left: final test accuracy against the learning rate (log axis); a diverged seed counts as chance and is
    marked with x; dotted verticals at each setting's largest stable learning rate. Right: training loss over
    training at the ``selected`` learning rate, one line per setting (a line ends where its run diverged)."""
    fig, (sweep, curves) = plt.subplots(1, 2, figsize=(12.0, 3.8))
    for label, by_lr in sweeps.items():
        xs = np.array(sorted(by_lr))
        values = np.stack([by_lr[x].values("final_accuracy") for x in xs], axis=1)  # (S, n)
        scored = np.where(np.isfinite(values), values, CHANCE)
        line, = sweep.plot(xs, scored.mean(axis=0), marker="o", ms=4, label=label)
        sweep.fill_between(xs, scored.min(axis=0), scored.max(axis=0), color=line.get_color(), alpha=0.2, lw=0)
        diverged = np.isnan(values).any(axis=0)
        sweep.plot(xs[diverged], np.full(diverged.sum(), 0.03), "x", color=line.get_color())
        if max_stable and np.isfinite(max_stable.get(label, np.nan)):
            sweep.axvline(max_stable[label], color=line.get_color(), ls=":", lw=1.2)
        if selected is not None and selected in by_lr:
            runs = by_lr[selected]
            _band(curves, runs.mean("steps"), runs, "train_loss", label=label, color=line.get_color())
    if selected is not None:
        sweep.axvline(selected, color="black", lw=0.8)
    sweep.set_xscale("log")
    _chance(sweep)
    sweep.set(xlabel="learning rate (log scale)", ylabel="test accuracy after training",
              title="Accuracy vs learning rate (x: diverged; dotted: largest stable)")
    sweep.legend(loc="center left", fontsize=8)
    curves.set_yscale("log")
    curves.set(xlabel="training step (SGD updates)", ylabel="training loss (cross-entropy, log)",
               title=f"Training loss at lr = {selected:g}" if selected is not None else "Training loss")
    curves.legend(loc="upper right", fontsize=8)
    fig.subplots_adjust(**_PANELS_2)
    return fig


def plot_one_step_ratio(ratios: Mapping[str, Mapping[float, list[float]]],
                        title: str = "Loss after one step from initialization, relative to before") -> Figure:
    """Loss after one SGD step / loss before, against the learning rate (log-log), one line per setting
    (``ratios[label][lr]`` lists one ratio per seed); the band spans the seeds, 1 = no change."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, by_lr in ratios.items():
        xs = np.array(sorted(by_lr))
        values = np.array([by_lr[x] for x in xs], dtype=float)
        values = np.where(np.isfinite(values), values, 1e30)
        line, = ax.plot(xs, np.exp(np.log(values).mean(axis=1)), marker="o", ms=4, label=label)
        ax.fill_between(xs, values.min(axis=1), values.max(axis=1), color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(1.0, color="gray", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="learning rate (log scale)", ylabel="loss after / loss before (log)", title=title)
    ax.legend(fontsize=8)
    fig.subplots_adjust(**_PANEL_1)
    return fig


def plot_weight_decay(runs: Mapping[float, SeedRuns], selected: float | None = None) -> Figure:
    """Three panels over training, one line per weight decay: mean Frobenius norm of the hidden weight
    matrices, the effective learning rate lr/||W||^2 (log), and test accuracy."""
    fig, (norm, eff, acc) = plt.subplots(1, 3, figsize=(13.0, 3.6))
    for wd in sorted(runs):
        result = runs[wd]
        steps = result.mean("steps")
        lw = 2.5 if selected is not None and wd == selected else 1.2
        label = f"weight decay {wd:g}"
        line, = norm.plot(steps, result.mean("weight_norm").mean(axis=1), lw=lw, label=label)
        per_seed = result.values("weight_norm").mean(axis=2)
        norm.fill_between(steps, per_seed.min(axis=0), per_seed.max(axis=0), color=line.get_color(), alpha=0.2,
                          lw=0)
        eff.plot(steps, result.mean("effective_lr").mean(axis=1), lw=lw, color=line.get_color(), label=label)
        _band(acc, steps, result, "test_accuracy", label=label, lw=lw, color=line.get_color())
    norm.set(xlabel="training step (SGD updates)", ylabel="||W|| (Frobenius, mean of hidden layers)",
             title="Weight norm")
    eff.set_yscale("log")
    eff.set(xlabel="training step (SGD updates)", ylabel="lr / ||W||^2 (log)", title="Effective learning rate")
    acc.set_ylim(0.8, 1.0)
    acc.set(xlabel="training step (SGD updates)", ylabel="test accuracy (fraction)", title="Test accuracy")
    norm.legend(fontsize=8)
    fig.subplots_adjust(**{**_PANELS_3, "top": 0.9})
    return fig
