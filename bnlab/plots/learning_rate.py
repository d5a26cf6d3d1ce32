"""Figures of lecture 9 (learning rate): the stability sweep, what each unit's weight norm does to the
effective learning rate, how the last hidden layer dies past BN's border, the loss after one step, and
weight decay.

Colours: the plain net (no BN) red, the BN net blue in every figure of the lecture; where the panels compare
learning rates instead, one shade per rate (yellow = small, purple = large). Layer 1 (784 inputs) is drawn
apart from layers 2..L (their mean): its weights grow far more than the others'. The effective learning rate
of a layer is that of its median unit, lr / ||w||^2 (:func:`bnlab.lessons.learning_rate.effective_lr`), and
"layers 2..L" is its mean over those layers, the quantity the lecture prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bnlab.experiments import SeedRuns
from bnlab.lessons.learning_rate import effective_lr
from bnlab.plots._seed_runs import (
    COLORS,
    chance_line,
    experiment_style,
    figure,
    legend_below,
    log_or_note,
    seed_curves,
    seed_points,
    setting_color,
)

__all__ = ["plot_dead_units", "plot_effective_lr", "plot_lr_sweep", "plot_one_step_ratio", "plot_weight_decay"]

# the plain net of this lecture has He init: the colour lecture 7 gives "no norm, He init"
NET_COLORS = {"no BN": COLORS["no norm, He init"], "BN": COLORS["BN"]}
# a pinned sweep is black: its nets are told apart by the mean line's style and marker
PINNED_STYLES = {"no BN": {"ls": "--", "marker": "s"}, "BN": {"ls": ":", "marker": "o"}}
LR_RANGE = (0.01, 10.0)  # the dashboard slider's range: the sweep's axis spans at least this
LN10 = float(np.log(10))


def _net_color(label: str, index: int) -> str:
    return NET_COLORS.get(label) or setting_color(label, index)


def _rate_shades(rates: Sequence[float]) -> dict[float, tuple]:
    """One colour per learning rate, from light yellow (small) to dark purple (large)."""
    rates = sorted(rates)
    colors = plt.get_cmap("plasma_r")(np.linspace(0.08, 0.95, len(rates))) if rates else []
    return {lr: tuple(color) for lr, color in zip(rates, colors)}


def _median_norms(runs: SeedRuns) -> tuple[np.ndarray, np.ndarray]:
    """Per seed and record, the median unit's weight norm of layer 1 (S, K) and the mean over layers 2..L of
    each layer's median unit (S, K); with one hidden layer both are layer 1."""
    norms = runs.values("unit_weight_norms")[:, :, :, 1]  # (S, K, L)
    deeper = norms[:, :, 1:] if norms.shape[2] > 1 else norms
    return norms[:, :, 0], np.nanmean(deeper, axis=2)


def _effective_rates(runs: SeedRuns, lr: float) -> tuple[np.ndarray, np.ndarray]:
    """Per seed and record, the effective rate lr/||w||^2 of layer 1's median unit (S, K) and its mean over
    layers 2..L (S, K); with one hidden layer both are layer 1."""
    rates = effective_lr(runs, lr)  # (S, K, L)
    deeper = rates[:, :, 1:] if rates.shape[2] > 1 else rates
    return rates[:, :, 0], np.nanmean(deeper, axis=2)


def _log_span(ax: Axes, values: np.ndarray, decades: float = 1.0) -> None:
    """Log y-axis spanning at least ``decades`` around ``values`` (a flat curve then reads as flat)."""
    shown = np.asarray(values, dtype=float)
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if not shown.size:
        return
    ax.set_yscale("log")
    low, high = np.log10(shown.min()), np.log10(shown.max())
    pad = max(0.0, decades - (high - low)) / 2
    ax.set_ylim(10 ** (low - pad - 0.05), 10 ** (high + pad + 0.05))


def _layer_handles(depth: int, color: str = "#555555") -> list[Line2D]:
    deeper = f"layers 2-{depth} (mean)" if depth > 2 else "layer 2"
    return [Line2D([], [], color=color, ls="--", lw=1.3, label="layer 1"),
            Line2D([], [], color=color, ls="-", lw=1.3, label=deeper)]


def _depth(runs: SeedRuns) -> int:
    return runs.values("unit_weight_norms").shape[2]


@experiment_style
def plot_lr_sweep(sweeps: Mapping[str, Mapping[float, SeedRuns]], selected: float | None = None,
                  max_stable: Mapping[str, float] | None = None,
                  pinned: tuple[str, Mapping[str, Mapping[float, SeedRuns]]] | None = None,
                  lr_range: tuple[float, float] = LR_RANGE) -> Figure:
    """Three panels. Left: final test accuracy against the learning rate (log axis spanning at least
    ``lr_range``, so seeds drawn a few percent apart at one rate do not look like different rates), one colour
    per net, a dot per seed, an x at chance for a diverged seed (counted at chance in the mean line), dotted
    verticals at each net's largest stable rate, a black vertical at ``selected``. Middle: each seed's training
    loss over training at ``selected`` (dotted: ln 10, the loss of predicting the class frequencies). Right:
    the BN net's effective learning rate lr/||w||^2 at ``selected`` (median unit; layer 1 dashed, the mean
    of layers 2..L solid; the plain net is not scale-invariant, so it has none).

    ``pinned`` = (label, {net: {lr: runs}}) adds another setting's accuracy in black, each net with its own
    line style and marker on the mean line (:data:`PINNED_STYLES`: no BN dashed with squares, BN dotted with
    circles), labelled "pinned: <label>, <net>"."""
    fig, axes = figure(1, 3, 13.5, 4.3, left=0.05, right=0.99, bottom=0.25, top=0.87, wspace=0.28)
    sweep_ax, loss_ax, eff_ax = axes[0]
    losses, effective, depth = [np.array([])], [np.array([])], None
    for index, (label, by_lr) in enumerate(sweeps.items()):
        color = _net_color(label, index)
        seed_points(sweep_ax, by_lr, color, label, jitter=0.05, log_x=True)
        if max_stable and np.isfinite(max_stable.get(label, np.nan)):
            sweep_ax.axvline(max_stable[label], color=color, ls=":", lw=1.4)
        if selected is None or selected not in by_lr:
            continue
        runs = by_lr[selected]
        seed_curves(loss_ax, runs, "train_loss", color, None)
        losses.append(runs.values("train_loss").ravel())
        if label == "BN":
            first, deeper = _effective_rates(runs, selected)
            for steps, one, rest in zip(runs.values("steps"), first, deeper):
                eff_ax.plot(steps, one, color=color, lw=1.3, ls="--")
                eff_ax.plot(steps, rest, color=color, lw=1.3)
            effective.append(np.concatenate([first.ravel(), deeper.ravel()]))
            depth = _depth(runs)
    if pinned is not None:
        for index, (label, by_lr) in enumerate(pinned[1].items()):
            style = PINNED_STYLES.get(label, {"ls": "-.", "marker": "^"})
            seed_points(sweep_ax, by_lr, COLORS["pinned"], f"pinned: {pinned[0]}, {label}", jitter=0.05,
                        log_x=True, ms=5, mfc="white", **style)
    if selected is not None:
        sweep_ax.axvline(selected, color="black", lw=0.8)
    sweep_ax.set_xscale("log")
    low, high = sweep_ax.get_xlim()
    sweep_ax.set_xlim(min(low, lr_range[0] / 1.3), max(high, lr_range[1] * 1.3))
    chance_line(sweep_ax)
    sweep_ax.set(xlabel="learning rate (log scale)", ylabel="test accuracy after 600 updates",
                 title="Accuracy vs learning rate (dotted: largest stable)")
    loss_ax.axhline(LN10, color="gray", lw=0.8, ls=":")
    log_or_note(loss_ax, np.concatenate(losses), "no training loss to draw")
    notes = [f"{label}: {by_lr[selected].num_diverged()} of {len(by_lr[selected].seeds)} seeds diverged "
             f"(x, update {', '.join(str(int(u)) for u in by_lr[selected].diverged_at() if np.isfinite(u))})"
             for label, by_lr in sweeps.items()
             if selected is not None and selected in by_lr and by_lr[selected].num_diverged()]
    if notes:
        loss_ax.text(0.98, 0.97, "\n".join(notes), transform=loss_ax.transAxes, ha="right", va="top", fontsize=8,
                     color="#a00000")
    where = f"lr = {selected:g}" if selected is not None else "the selected lr"
    loss_ax.set(xlabel="training step (SGD updates)", ylabel="training loss (dotted: ln 10)",
                title=f"Training loss at {where}")
    shown = np.concatenate(effective)
    if np.isfinite(shown).any():
        _log_span(eff_ax, shown)
        eff_ax.legend(handles=_layer_handles(depth, NET_COLORS["BN"]), fontsize=8, loc="best", frameon=False)
        eff_ax.set(xlabel="training step (SGD updates)", ylabel="lr / ||w||^2 of the median unit (log)")
    else:
        eff_ax.text(0.5, 0.5, "BN net not shown or not run at this lr\n(the plain net has no effective rate)",
                    transform=eff_ax.transAxes, ha="center", va="center", color="#555555")
        eff_ax.set_xticks([])
        eff_ax.set_yticks([])
    eff_ax.set_title(f"BN: effective learning rate at {where}")
    legend_below(fig, [h for h in sweep_ax.get_legend_handles_labels()[0]], ncol=4)
    fig.suptitle("dots: seeds; line: seed mean (x: a diverged seed, counted at chance 0.1)", fontsize=10)
    return fig


@experiment_style
def plot_effective_lr(by_lr: Mapping[float, SeedRuns], shown: Sequence[float] | None = None,
                      title: str = "BN net: each unit's weight norm sets its step size") -> Figure:
    """For the BN runs of a learning-rate sweep ``{lr: runs}``. Left: the median unit's weight norm over
    training at the rates ``shown`` (default: at most five spread over the sweep), one shade per rate, a line
    per seed, layer 1 dashed and the mean of layers 2..L solid. Middle: the effective learning rate
    lr/||w||^2 of each layer's median unit (log; layer 1, and the mean of layers 2..L). Right: the same at the
    end against lr for every rate of the sweep (log-log; seed mean, the seeds as dots; the values
    :func:`bnlab.lessons.learning_rate.effective_lr_at_end` returns), with lr/2, the effective rate if ||w||
    stayed at He init's sqrt(2)."""
    rates = sorted(by_lr)
    if shown is None:
        shown = [rates[i] for i in np.unique(np.linspace(0, len(rates) - 1, min(5, len(rates))).round().astype(int))]
    fig, axes = figure(1, 3, 13.5, 4.3, left=0.06, right=0.99, bottom=0.25, top=0.87, wspace=0.3)
    norm_ax, eff_ax, end_ax = axes[0]
    handles = []
    shades = _rate_shades(shown)
    for lr, shade in shades.items():
        runs = by_lr[lr]
        for steps, one, rest, eff_one, eff_rest in zip(runs.values("steps"), *_median_norms(runs),
                                                       *_effective_rates(runs, lr)):
            norm_ax.plot(steps, one, color=shade, lw=1.3, ls="--")
            norm_ax.plot(steps, rest, color=shade, lw=1.3)
            eff_ax.plot(steps, eff_one, color=shade, lw=1.3, ls="--")
            eff_ax.plot(steps, eff_rest, color=shade, lw=1.3)
        handles.append(Line2D([], [], color=shade, lw=2, label=f"lr {lr:.3g}"))
    norm_ax.set_yscale("log")
    norm_ax.set(xlabel="training step (SGD updates)", ylabel="||w|| of the median unit (log)",
                title="Weight norm of a hidden unit")
    eff_ax.set_yscale("log")
    eff_ax.set(xlabel="training step (SGD updates)", ylabel="lr / ||w||^2 (log)", title="Effective learning rate")
    xs = np.array(rates)
    for ls, marker, which in (("--", "s", 0), ("-", "o", 1)):
        per_seed = np.array([_effective_rates(by_lr[lr], lr)[which][:, -1] for lr in rates])  # (R, S)
        end_ax.plot(xs, per_seed.mean(axis=1), color=NET_COLORS["BN"], ls=ls, lw=1.5)
        for seed in range(per_seed.shape[1]):
            end_ax.plot(xs, per_seed[:, seed], marker, color=NET_COLORS["BN"], ms=3, alpha=0.7,
                        mfc="none" if which == 0 else NET_COLORS["BN"])
    end_ax.plot(xs, xs / 2, color="gray", ls=":", lw=1.2)
    dying = [lr for lr in rates if "dead_units" in by_lr[lr].names()
             and np.nanmax(by_lr[lr].values("dead_units")[:, -1], initial=0.0) > 0.9]
    if dying:
        end_ax.axvspan(min(dying) / 10 ** 0.125, max(dying) * 10 ** 0.125, color="gray", alpha=0.15, lw=0)
        end_ax.text(min(dying) / 10 ** 0.125, 0.03, " last layer\n dead", transform=end_ax.get_xaxis_transform(),
                    fontsize=8, color="#555555", va="bottom")
    end_ax.set_xscale("log")
    end_ax.set_yscale("log")
    end_ax.set(xlabel="learning rate lr (log)", ylabel="lr / ||w||^2 after 600 updates (log)",
               title="Effective rate at the end (dotted: lr / 2, no growth)")
    legend_below(fig, handles + _layer_handles(_depth(by_lr[rates[0]])), ncol=len(handles) + 2)
    fig.suptitle(title, fontsize=11)
    return fig


@experiment_style
def plot_dead_units(first: Sequence[Any], by_lr: Mapping[float, SeedRuns]) -> Figure:
    """How the BN net's last hidden layer dies at large learning rates. ``first``: objects with ``lr``,
    ``dead``, ``beta`` (S, U) (:class:`bnlab.lessons.learning_rate.FirstUpdates`), one shade per rate.
    Left: fraction of the last hidden layer's units dead on each update's minibatch, over the first U
    updates. Middle: the median shift beta of that layer. Right (the shipped runs ``by_lr``, at the same
    rates and more): per seed, the fraction of the last layer dead at the end against the final training loss,
    with ln 10 dotted."""
    fig, axes = figure(1, 3, 13.5, 4.2, left=0.055, right=0.99, bottom=0.25, top=0.88, wspace=0.28)
    dead_ax, beta_ax, end_ax = axes[0]
    rates = sorted(set(by_lr) | {item.lr for item in first})
    shade = _rate_shades(rates)
    for item in first:
        color = shade[item.lr]
        updates = np.arange(1, item.dead.shape[1] + 1)
        for dead, beta in zip(item.dead, item.beta):
            dead_ax.plot(updates, dead, color=color, lw=1.4, marker="o", ms=2.5)
            beta_ax.plot(updates, beta, color=color, lw=1.4, marker="o", ms=2.5)
    dead_ax.set_ylim(-0.03, 1.03)
    dead_ax.set(xlabel="update (its forward pass)",
                ylabel="fraction of units with ReLU input <= 0\nfor the whole minibatch",
                title="Last hidden layer: dead units, first updates")
    beta_ax.axhline(0.0, color="gray", lw=0.8, ls=":")
    beta_ax.set(xlabel="update (beta after it)", ylabel="median beta (BN's shift)",
                title="Last hidden layer: the shift beta")
    for lr in rates:
        if lr not in by_lr:
            continue
        runs = by_lr[lr]
        dead = runs.values("dead_units")[:, -1]
        loss = runs.values("train_loss")[:, -1]
        ok = np.isfinite(dead) & np.isfinite(loss)
        end_ax.plot(dead[ok], loss[ok], "o", color=shade[lr], ms=6, mec="black", mew=0.4)
    end_ax.axhline(LN10, color="gray", lw=0.8, ls=":")
    end_ax.set_xlim(-0.05, 1.05)
    end_ax.set(xlabel="fraction of the last hidden layer dead at the end",
               ylabel="training loss, last 50 updates (dotted: ln 10)", title="After 600 updates (each seed)")
    handles = [Line2D([], [], color=shade[lr], lw=2, marker="o", ms=4, label=f"lr {lr:.3g}") for lr in rates]
    legend_below(fig, handles, ncol=len(handles))
    return fig


@experiment_style
def plot_one_step_ratio(ratios: Mapping[str, Mapping[float, list[float]]],
                        title: str = "Loss after one step from initialization, relative to before",
                        borders: Mapping[str, tuple[float, float]] | None = None,
                        ylim: tuple[float, float] = (0.3, 30.0)) -> Figure:
    """Loss after one SGD step / loss before, against the learning rate (log-log), one line per setting
    through the geometric mean, a dot per seed (``ratios[label][lr]`` lists one ratio per seed). A ratio above
    ``ylim``'s top is drawn on the top edge as a triangle (an overflowed loss as an x): the region around 1
    (no change) is what the figure is for. ``borders[label] = (last stable, next)`` shades the interval in
    which that setting's stability border lies, in its colour."""
    fig, axes = figure(1, 1, 7.5, 4.6, left=0.1, right=0.97, bottom=0.25, top=0.91)
    ax = axes[0][0]
    low, ceiling = ylim
    for index, (label, by_lr) in enumerate(ratios.items()):
        color = _net_color(label, index)
        xs = np.array(sorted(by_lr))
        values = np.array([by_lr[x] for x in xs], dtype=float)  # (n, S)
        mean = np.exp(np.log(np.where(np.isfinite(values), values, np.inf)).mean(axis=1))
        ax.plot(xs, np.minimum(mean, ceiling), color=color, ls="--" if "Gaussian" in label else "-", label=label)
        for seed in range(values.shape[1]):
            column = values[:, seed]
            ok = np.isfinite(column) & (column <= ceiling)
            above = np.isfinite(column) & (column > ceiling)
            ax.plot(xs[ok], column[ok], "o", color=color, ms=3.5, alpha=0.8)
            ax.plot(xs[above], np.full(above.sum(), ceiling), "^", color=color, ms=6, clip_on=False)
            ax.plot(xs[~np.isfinite(column)], np.full((~np.isfinite(column)).sum(), ceiling), "x", color=color,
                    ms=7, mew=2, clip_on=False)
        if borders and label in borders and all(np.isfinite(borders[label])):
            ax.axvspan(*borders[label], color=color, alpha=0.15, lw=0,
                       label=f"{label}: stability border lies here")
    ax.axhline(1.0, color="gray", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(low, ceiling)
    ax.set(xlabel="learning rate (log scale)", ylabel="loss after / loss before (log)", title=title)
    ax.text(0.01, 0.98, f"triangles: above {ceiling:g}, drawn on the edge", transform=ax.transAxes, fontsize=8,
            va="top", color="#555555")
    legend_below(fig, ncol=2)
    return fig


@experiment_style
def plot_weight_decay(runs: Mapping[float, SeedRuns], selected: float | None = None,
                      pinned: tuple[str, SeedRuns] | None = None) -> Figure:
    """Three panels over training, one shade per weight decay, a line per seed: the median hidden unit's
    weight norm (mean over layers 2..L), its effective learning rate lr/||w||^2 (log), and test accuracy.
    ``pinned`` = (label, runs) is overlaid dashed in black."""
    fig, axes = figure(1, 3, 13.5, 4.1, left=0.05, right=0.99, bottom=0.25, top=0.91, wspace=0.28)
    norm_ax, eff_ax, acc_ax = axes[0]
    shades = _rate_shades(sorted(runs))
    entries = [(f"weight decay {wd:g}", runs[wd], shades[wd], 2.4 if wd == selected else 1.2)
               for wd in sorted(runs)]
    if pinned is not None:
        entries.append((f"pinned: {pinned[0]}", pinned[1], COLORS["pinned"], 1.2))
    for label, each, color, lw in entries:
        ls = "--" if label.startswith("pinned") else "-"
        norm, eff = each.values("unit_weight_norm"), each.values("effective_lr")  # (S, K, L)
        layers = slice(1, None) if norm.shape[2] > 1 else slice(None)
        for index, steps in enumerate(each.values("steps")):
            norm_ax.plot(steps, norm[index][:, layers].mean(axis=1), color=color, lw=lw, ls=ls,
                         label=label if index == 0 else None)
            eff_ax.plot(steps, eff[index][:, layers].mean(axis=1), color=color, lw=lw, ls=ls)
        seed_curves(acc_ax, each, "test_accuracy", color, None, lw=lw, ls=ls)
    norm_ax.set(xlabel="training step (SGD updates)", ylabel="||w|| of the median unit (layers 2-L)",
                title="Weight norm of a hidden unit")
    eff_ax.set_yscale("log")
    eff_ax.set(xlabel="training step (SGD updates)", ylabel="lr / ||w||^2 (log)", title="Effective learning rate")
    acc_ax.set_ylim(0.85, 1.0)
    acc_ax.set(xlabel="training step (SGD updates)", ylabel="test accuracy (fraction)", title="Test accuracy")
    legend_below(fig, ncol=5)
    return fig
