"""Figures of lecture 7 (depth): accuracy against depth, and one depth setting layer by layer."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bnlab.experiments import CHANCE, SeedRuns
from bnlab.plots._seed_runs import (
    at_least_range,
    chance_line,
    experiment_style,
    figure,
    legend_below,
    log_or_note,
    positive,
    seed_curves,
    seed_points,
    setting_color,
)

__all__ = ["plot_depth_runs", "plot_depth_sweep"]


@experiment_style
def plot_depth_sweep(sweeps: Mapping[str, Mapping[str, Mapping[int, SeedRuns]]],
                     title: str = "Final test accuracy against depth (600 updates, lr 0.1)") -> Figure:
    """One panel per activation: final test accuracy against depth, one colour per setting; a dot per seed,
    the line through the seed mean (a diverged seed counted at chance, marked x).

    ``sweeps[activation][setting][depth]`` holds the runs, e.g. ``sweeps["relu"]["BN"][20]``.
    """
    fig, axes = figure(1, len(sweeps), 4.3 * len(sweeps), 4.1, left=0.06, right=0.99, bottom=0.22, top=0.8,
                       wspace=0.08)
    for ax, (activation, settings) in zip(axes[0], sweeps.items()):
        for index, (setting, by_depth) in enumerate(settings.items()):
            seed_points(ax, by_depth, setting_color(setting, index), setting, jitter=0.08 * (index - 1.5) / 1.5)
        chance_line(ax, (0.0, 1.0))
        depths = sorted(next(iter(settings.values())))
        ax.set_xticks(depths)
        ax.set(title=activation, xlabel="depth (hidden layers)")
        if ax is not axes[0][0]:
            ax.tick_params(labelleft=False)
    axes[0][0].set_ylabel("test accuracy after training")
    legend_below(fig, ncol=4)
    fig.suptitle(f"{title}\ndots: seeds; line: seed mean (x: a diverged seed, counted at chance 0.1)", fontsize=10)
    return fig


def _percentile_band(ax: Axes, runs: SeedRuns, key: str, color: str, label: str, filled: bool) -> None:
    layers = np.arange(1, runs.values(key).shape[1] + 1)
    p = runs.mean(key)  # (L, 3)
    if filled:
        ax.fill_between(layers, p[:, 0], p[:, 2], color=color, alpha=0.25, lw=0)
        ax.plot(layers, p[:, 1], color=color, marker=".", label=label)
    else:  # drawn as outlines so the filled band under it stays visible
        ax.plot(layers, p[:, 1], color=color, marker=".", ls="--", label=label)
        ax.plot(layers, p[:, 0], color=color, lw=0.8, ls="--")
        ax.plot(layers, p[:, 2], color=color, lw=0.8, ls="--")


@experiment_style
def plot_depth_runs(runs: SeedRuns, title: str, compare: Mapping[str, SeedRuns] | None = None,
                    label: str = "this setting", pinned: tuple[str, SeedRuns] | None = None) -> Figure:
    """One depth setting (and ``compare`` settings beside it), in six panels.

    Top: test accuracy (each seed a line, x where one diverged), each weight layer's gradient norm, and the
    mean cosine similarity between test examples of each hidden layer's output (near 1: every image looks
    alike to the next layer). Bottom: training loss (below the accuracy, same steps), then the pre-activation
    15/50/85th percentiles of this setting and of the first compared one. Solid lines and filled bands are at
    initialization (batch statistics, as the first updates see them), dashed ones after training (eval mode);
    the legend says so once. ``pinned`` = (label, runs) is drawn in black in the top row.
    """
    settings = {label: runs, **dict(compare or {})}
    colors = {name: setting_color(name, i) for i, name in enumerate(settings)}
    overlays = dict(settings)
    if pinned is not None:
        overlays[f"pinned: {pinned[0]}"] = pinned[1]
        colors[f"pinned: {pinned[0]}"] = "black"
    fig, axes = figure(2, 3, 13.5, 7.4, left=0.055, right=0.99, bottom=0.13, top=0.88, wspace=0.3, hspace=0.3)
    (acc, grad, sim), (loss, pre_main, pre_other) = axes
    loss.sharex(acc)  # a column shares its x-axis: the top panel's tick labels would repeat the bottom's
    acc.tick_params(labelbottom=False)

    for name, each in overlays.items():
        seed_curves(acc, each, "test_accuracy", colors[name], name, diverged_at=CHANCE,
                    ls="--" if name.startswith("pinned") else "-")
    chance_line(acc)
    acc.set(ylabel="test accuracy", title="Test accuracy (per seed)")

    all_grads, zero_marks = [], []
    for name, each in overlays.items():
        layers = np.arange(1, each.values("grad_norms_init").shape[1] + 1)
        for key, style in (("grad_norms_init", "-"), ("grad_norms_final", "--")):
            mean = each.mean(key)
            all_grads.append(mean)
            grad.plot(layers, positive(mean), color=colors[name], ls=style, marker=".")
            zero_marks.append((layers[mean == 0], colors[name]))
        grad.set_xlim(0.5, max(grad.get_xlim()[1], layers[-1] + 0.5))
    grads = np.concatenate(all_grads)
    missing = ("no gradient recorded:\nthe run diverged before its first update" if np.all(np.isnan(grads))
               else "every gradient is exactly 0")
    went_log = log_or_note(grad, grads, missing, min_ratio=1.0)
    if went_log:
        bottom = grad.get_ylim()[0]
        for zero_layers, color in zero_marks:  # exactly 0: nothing a log axis can show, so a marker at the floor
            grad.plot(zero_layers, np.full(zero_layers.size, bottom), "v", color=color, ms=6, clip_on=False)
        if any(zero_layers.size for zero_layers, _ in zero_marks):
            grad.text(0.02, 0.93, "v: gradient exactly 0", transform=grad.transAxes, fontsize=8)
    grad.set(xlabel="weight layer (last: output)", ylabel="gradient norm", title="Gradient per layer")

    for name, each in overlays.items():
        layers = np.arange(1, each.values("similarity_init").shape[1] + 1)
        sim.plot(layers, each.mean("similarity_init"), color=colors[name], marker=".")
        sim.plot(layers, each.mean("similarity_final"), color=colors[name], marker=".", ls="--")
    sim.axhline(1 / np.pi, color="gray", lw=0.8, ls=":")
    sim.text(0.01, 1 / np.pi + 0.02, "1/π", transform=sim.get_yaxis_transform(), va="bottom", fontsize=8, color="gray")
    sim.set_ylim(-0.05, 1.05)
    sim.set(ylabel="mean cosine", title="Similarity of examples")

    panels = [(pre_main, label, runs)] + [(pre_other, name, each) for name, each in list(settings.items())[1:2]]
    for ax, name, each in panels:
        _percentile_band(ax, each, "percentiles_init", colors[name], None, filled=True)
        _percentile_band(ax, each, "percentiles_final", colors[name], None, filled=False)
        ax.set(xlabel="hidden layer", ylabel="pre-activation", title=f"{name}: 15/50/85th pct")
    if len(settings) > 1:  # the similarity panel sits above the compared setting's percentiles
        sim.sharex(pre_other)
        sim.tick_params(labelbottom=False)
    else:
        sim.set_xlabel("hidden layer")
    if len(settings) < 2:
        pre_other.set_axis_off()
        pre_other.text(0.5, 0.5, "no compared setting is cached", ha="center", va="center",
                       transform=pre_other.transAxes, color="gray")

    for name, each in settings.items():
        seed_curves(loss, each, "train_loss", colors[name], None)
    loss.axhline(np.log(10), color="gray", lw=0.8, ls=":")
    log_or_note(loss, np.concatenate([each.values("train_loss").ravel() for each in settings.values()]),
                "no training loss recorded:\nthe run diverged at its first minibatch")
    at_least_range(loss, 0.5)
    loss.set(xlabel="SGD update", ylabel="training loss", title="Training loss (dotted: ln 10)")

    # the line styles, said once for every panel instead of in each title
    styles = [Line2D([], [], color="gray", ls="-", label="at init (filled band)"),
              Line2D([], [], color="gray", ls="--", label="after training"),
              Line2D([], [], color="gray", ls="none", marker="x", mew=2, label="diverged")]
    handles = [Line2D([], [], color=colors[name], label=name) for name in overlays] + styles
    legend_below(fig, handles, ncol=len(handles))
    fig.suptitle("\n".join(textwrap.wrap(title, 150)), fontsize=11)
    return fig
