"""Figures of lecture 10 (the paper's figure 1): test accuracy and one typical sigmoid input over training,
with and without BN; the two nets at initialization; and the gap between them over init std and learning rate.

Colours: the plain net (no BN) red, the BN net blue, as in lecture 9; a pinned setting black. Every seed is
drawn: an accuracy curve per seed, and per seed the typical unit's 15th-85th percentile band with its median
(each seed has its own typical unit, chosen by :func:`bnlab.experiments.figure1.typical_unit`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bnlab.experiments import SeedRuns
from bnlab.experiments.figure1 import GRID_INIT_STDS, NETS, SATURATION
from bnlab.lessons.figure1 import accuracy_at_update, gap_table, with_scalar
from bnlab.plots._seed_runs import (
    COLORS,
    chance_line,
    experiment_style,
    figure,
    legend_below,
    seed_curves,
    seed_points,
)

__all__ = ["NET_COLORS", "plot_at_init", "plot_figure1", "plot_gap_grid", "plot_init_sweep"]

NET_COLORS = {"no BN": "tab:red", "BN": COLORS["BN"]}
PINNED_STYLES = {"no BN": "--", "BN": ":"}
SEED_ALPHAS = (0.95, 0.55, 0.55, 0.45, 0.45)  # seed 0 (the paper draws one run) darkest
STD_RANGE = (min(GRID_INIT_STDS) / 1.5, max(GRID_INIT_STDS) * 1.5)  # panel (d)'s axis spans at least this


def _check_nets(nets: Mapping[str, SeedRuns], name: str = "nets") -> None:
    if not isinstance(nets, Mapping) or set(nets) != set(NETS):
        got = sorted(nets) if isinstance(nets, Mapping) else type(nets).__name__
        raise ValueError(f"{name} must map 'no BN' and 'BN' to their runs (figure1_runs), got {got}")


def _saturation(ax: Axes) -> None:
    for sign in (-1, 1):
        ax.axhline(sign * SATURATION, color="gray", ls="--", lw=0.8)


def _unit_bands(ax: Axes, runs: SeedRuns, color: str) -> None:
    """Each seed's typical unit: its 15th-85th percentile band (light) and median (line), seed 0 darkest."""
    for index, (steps, values) in enumerate(zip(runs.values("steps"), runs.values("unit_percentiles"))):
        alpha = SEED_ALPHAS[min(index, len(SEED_ALPHAS) - 1)]
        ax.fill_between(steps, values[:, 0], values[:, 2], color=color, alpha=0.12 * alpha, lw=0)
        for level, style in ((0, "--"), (2, "--")):
            ax.plot(steps, values[:, level], color=color, lw=0.8, ls=style, alpha=alpha)
        ax.plot(steps, values[:, 1], color=color, lw=1.6, alpha=alpha)
    ax.set_xlim(0, float(np.nanmax(runs.values("steps"))))


def _units_title(label: str, runs: SeedRuns) -> str:
    units = ", ".join(str(int(u)) for u in runs.values("typical_unit"))
    return f"{label}: the typical sigmoid input\n(last hidden layer; units {units} of seeds {_seeds(runs)})"


def _seeds(runs: SeedRuns) -> str:
    return ", ".join(str(seed) for seed in runs.seeds)


@experiment_style
def plot_figure1(nets: Mapping[str, SeedRuns], *, title: str | None = None,
                 context: Mapping[str, Mapping[float, SeedRuns]] | None = None, selected_std: float | None = None,
                 pinned: tuple[str, Mapping[str, SeedRuns]] | None = None,
                 ylim: tuple[float, float] = (-6.0, 6.0)) -> Figure:
    """The paper's figure 1 for one setting: (a) test accuracy against updates, every seed of both nets;
    (b, c) the typical last-hidden-layer sigmoid input of the plain and the BN net, 15th-85th percentile band
    and median per seed, on the probe batch in training mode, with dashed lines at +-3 (sigmoid' < 0.05).

    ``context`` = {"no BN": {init_std: runs}, "BN": {...}} adds (d): the final test accuracy against the init
    std at the same learning rate, a dot per seed, a vertical at ``selected_std`` (the dashboard's view).
    ``pinned`` = (label, nets) overlays another setting's accuracy curves in black on (a) (no BN dashed, BN
    dotted). Percentile values beyond ``ylim`` are clipped by the axes (the panels share it).
    """
    _check_nets(nets)
    panels = 3 if context is None else 4
    width = 13.5 if panels == 3 else 16.5
    fig, axes = figure(1, panels, width, 4.3, left=0.045, right=0.99, bottom=0.24, top=0.82, wspace=0.3)
    acc, *units = axes[0][:3]
    for label, runs in nets.items():
        seed_curves(acc, runs, "test_accuracy", NET_COLORS[label], f"{label} (one line per seed)", lw=1.2)
    if pinned is not None:
        _check_nets(pinned[1], "pinned nets")
        for label, runs in pinned[1].items():
            seed_curves(acc, runs, "test_accuracy", COLORS["pinned"], f"pinned: {pinned[0]}, {label}",
                        ls=PINNED_STYLES[label], lw=1.0)
        acc.set_xlim(0, max(float(np.nanmax(runs.values("steps"))) for runs in (*nets.values(),
                                                                                 *pinned[1].values())))
    chance_line(acc)
    acc.set(xlabel="update (minibatches of 60)", ylabel="test accuracy", title="(a) Test accuracy")
    for ax, (label, runs), letter in zip(units, nets.items(), "bc"):
        _unit_bands(ax, runs, NET_COLORS[label])
        _saturation(ax)
        ax.set_ylim(*ylim)
        ax.set(xlabel="update", ylabel="sigmoid input z", title=f"({letter}) {_units_title(label, runs)}")
    if context is not None:
        _check_nets(context, "context")
        ax = axes[0][3]
        for label, by_std in context.items():
            if by_std:
                seed_points(ax, by_std, NET_COLORS[label], None, jitter=0.06, log_x=True)
        if selected_std is not None:
            ax.axvline(selected_std, color="black", lw=0.8)
        ax.set_xscale("log")
        low, high = ax.get_xlim()  # at least the grid's stds, so one setting's seeds do not fill the panel
        ax.set_xlim(min(low, STD_RANGE[0]), max(high, STD_RANGE[1]))
        chance_line(ax)
        ax.set(xlabel="init std (log)", ylabel="test accuracy at the end",
               title="(d) At this learning rate, every init std\n(a dot per seed; the line: their mean)")
    handles = [Line2D([], [], color=NET_COLORS[label], lw=1.6, label=f"{label}") for label in nets]
    handles += [Patch(color="gray", alpha=0.25, label="15th-85th percentile (dashed edges)"),
                Line2D([], [], color="gray", lw=1.6, label="median (50th)"),
                Line2D([], [], color="gray", ls="--", lw=0.8, label=f"|z| = {SATURATION:g}: sigmoid' < 0.05")]
    if pinned is not None:
        handles += [Line2D([], [], color=COLORS["pinned"], ls=PINNED_STYLES[label], label=f"pinned: {pinned[0]}, "
                           f"{label}") for label in pinned[1]]
    legend_below(fig, handles, ncol=6 if pinned is None else 4)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


@experiment_style
def plot_at_init(sweep: Mapping[str, Mapping[tuple[float, float], SeedRuns]], lr: float,
                 init_stds: Sequence[float]) -> Figure:
    """Both nets at initialization, for each of ``init_stds`` (one line style per std, a line per seed):
    left, each weight layer's gradient norm on the first minibatch (log axis); right, the fraction of each
    hidden layer's sigmoid inputs beyond +-3 on the probe batch (training mode)."""
    _check_nets(sweep, "sweep")
    missing = [std for std in init_stds if (lr, std) not in sweep["no BN"] or (lr, std) not in sweep["BN"]]
    if missing:
        raise ValueError(f"the sweep has no runs at lr {lr:g} for init std {missing}")
    fig, axes = figure(1, 2, 12.0, 4.2, left=0.07, right=0.99, bottom=0.27, top=0.88, wspace=0.25)
    grads, saturated = axes[0]
    styles = ("-", "--", ":", "-.")
    handles = []
    for index, std in enumerate(init_stds):
        style = styles[index % len(styles)]
        for label in NETS:
            runs = sweep[label][(lr, std)]
            g, s = runs.values("grad_norms_init"), runs.values("saturated_init")
            for seed_g, seed_s in zip(g, s):
                grads.plot(np.arange(1, g.shape[1] + 1), seed_g, color=NET_COLORS[label], ls=style, marker="o",
                           ms=3, lw=1.1, alpha=0.8)
                saturated.plot(np.arange(1, s.shape[1] + 1), seed_s, color=NET_COLORS[label], ls=style,
                               marker="o", ms=3, lw=1.1, alpha=0.8)
        handles.append(Line2D([], [], color="gray", ls=style, marker="o", ms=3, label=f"init std {std:g}"))
    layers = sweep["BN"][(lr, init_stds[0])].values("grad_norms_init").shape[1]
    grads.set_yscale("log")
    grads.set_xticks(range(1, layers + 1), [f"hidden {i}" for i in range(1, layers)] + ["output"])
    grads.set(xlabel="weight layer (input side on the left)", ylabel="gradient norm (first minibatch)",
              title="Gradient norm of each layer at initialization")
    saturated.set_xticks(range(1, layers), [f"hidden {i}" for i in range(1, layers)])
    saturated.set_ylim(-0.02, 1.0)
    saturated.set(xlabel="hidden layer", ylabel=f"fraction of sigmoid inputs with |z| > {SATURATION:g}",
                  title="Saturated sigmoid inputs at initialization")
    handles = [Line2D([], [], color=NET_COLORS[label], lw=1.6, label=label) for label in NETS] + handles
    legend_below(fig, handles, ncol=len(handles))
    return fig


@experiment_style
def plot_init_sweep(sweep: Mapping[str, Mapping[tuple[float, float], SeedRuns]], lr: float,
                    early: int = 100) -> Figure:
    """At learning rate ``lr``, against the init std (log axis), a dot per seed and a line through the seed
    means: the test accuracy after ``early`` updates, at the end, and the median unit's movement (how far a
    typical last-layer unit's percentiles moved from where they started)."""
    _check_nets(sweep, "sweep")
    by_std = {label: {std: runs for (rate, std), runs in sweep[label].items() if rate == lr} for label in NETS}
    if not all(by_std.values()):
        raise ValueError(f"the sweep has no runs at lr {lr:g}; its learning rates: "
                         f"{sorted({rate for rate, _ in sweep['BN']})}")
    fig, axes = figure(1, 3, 13.5, 4.2, left=0.05, right=0.99, bottom=0.25, top=0.87, wspace=0.28)
    early_ax, final_ax, move_ax = axes[0]
    for label, runs_by_std in by_std.items():
        color = NET_COLORS[label]
        at_early = {std: with_scalar(runs, "early_accuracy", accuracy_at_update(runs, early))
                    for std, runs in runs_by_std.items()}
        seed_points(early_ax, at_early, color, label, name="early_accuracy", jitter=0.06, log_x=True)
        seed_points(final_ax, runs_by_std, color, None, jitter=0.06, log_x=True)
        moved = {std: with_scalar(runs, "movement", runs.values("movement_percentiles")[:, 1])
                 for std, runs in runs_by_std.items()}
        seed_points(move_ax, moved, color, None, name="movement", jitter=0.06, log_x=True)
    final = int(np.nanmax(next(iter(by_std["BN"].values())).values("steps")))
    for ax, what in ((early_ax, f"after {early} updates"), (final_ax, f"after {final} updates")):
        ax.set_xscale("log")
        chance_line(ax)
        ax.set(xlabel="init std (log)", ylabel="test accuracy", title=f"Test accuracy {what}, lr {lr:g}")
    move_ax.set_xscale("log")
    move_ax.set_ylim(bottom=0)
    move_ax.set(xlabel="init std (log)", ylabel="movement of the typical unit (units of z)",
                title="How far the typical unit's percentiles moved")
    legend_below(fig, ncol=2)
    return fig


@experiment_style
def plot_gap_grid(sweep: Mapping[str, Mapping[tuple[float, float], SeedRuns]],
                  updates: Sequence[int | None] = (100, None)) -> Figure:
    """One heat map per update: BN's seed-mean test accuracy minus the plain net's, for every learning rate
    (rows) x init std (columns) of the sweep, the value written in each cell (blue: BN ahead, red: behind)."""
    _check_nets(sweep, "sweep")
    fig, axes = figure(1, len(updates), 6.2 * len(updates), 4.4, left=0.08, right=0.97, bottom=0.13, top=0.86,
                       wspace=0.3)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-0.3, vmax=0.9)
    for ax, update in zip(axes[0], updates):
        lrs, stds, gaps = gap_table(sweep, update)
        ax.imshow(gaps, cmap="RdBu", norm=norm, aspect="auto", origin="lower")
        for i in range(len(lrs)):
            for j in range(len(stds)):
                value = gaps[i, j]
                text = ("n/a" if not np.isfinite(value) else "0.00" if abs(value) < 0.005  # never "-0.00"
                        else f"{value:+.2f}")
                dark = np.isfinite(value) and (value > 0.5 or value < -0.2)
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(len(stds)), [f"{s:g}" for s in stds])
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.grid(False)
        final = int(np.nanmax(next(iter(sweep["BN"].values())).values("steps")))
        when = f"after {final if update is None else update} updates"
        ax.set(xlabel="init std", ylabel="learning rate", title=f"BN minus no BN, test accuracy {when}")
    return fig
