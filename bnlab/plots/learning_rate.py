"""Figures of lecture 9 (learning rate): the stability sweep, what each unit's weight norm does to the
effective learning rate, the loss after one step, and weight decay."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from bnlab.experiments import SeedRuns
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

__all__ = ["plot_effective_lr", "plot_lr_sweep", "plot_one_step_ratio", "plot_weight_decay"]

_LR_SHADES = ("#c6dbef", "#6baed6", "#2171b5", "#08306b", "#e6550d", "#a63603")


def _hidden_median_norm(runs: SeedRuns) -> np.ndarray:
    """(S, K) per seed and record: the median unit weight norm, averaged over hidden layers 2..L (layer 1
    has 784 inputs and its own scale)."""
    norms = runs.values("unit_weight_norms")[:, :, :, 1]  # (S, K, L)
    return np.nanmean(norms[:, :, 1:] if norms.shape[2] > 1 else norms, axis=2)


@experiment_style
def plot_lr_sweep(sweeps: Mapping[str, Mapping[float, SeedRuns]], selected: float | None = None,
                  max_stable: Mapping[str, float] | None = None,
                  pinned: tuple[str, Mapping[str, Mapping[float, SeedRuns]]] | None = None) -> Figure:
    """Three panels. Left: final test accuracy against the learning rate (log axis), one colour per setting,
    a dot per seed, an x for a diverged seed (counted at chance in the line), dotted verticals at each
    setting's largest stable learning rate. Middle: training loss over training at ``selected`` (a line per
    seed). Right: the effective learning rate lr/||w||^2 of the BN net's hidden units over training at
    ``selected`` (median unit; the plain net has no scale invariance, so no line)."""
    fig, axes = figure(1, 3, 13.5, 4.2, left=0.05, right=0.99, bottom=0.3, top=0.88, wspace=0.3)
    sweep_ax, loss_ax, eff_ax = axes[0]
    losses, effective = [np.array([])], [np.array([])]
    for index, (label, by_lr) in enumerate(sweeps.items()):
        color = setting_color(label, index)
        seed_points(sweep_ax, by_lr, color, label, jitter=0.05, log_x=True)
        if max_stable and np.isfinite(max_stable.get(label, np.nan)):
            sweep_ax.axvline(max_stable[label], color=color, ls=":", lw=1.4)
        if selected is not None and selected in by_lr:
            seed_curves(loss_ax, by_lr[selected], "train_loss", color, None)
            losses.append(by_lr[selected].values("train_loss").ravel())
            if label == "BN":
                runs = by_lr[selected]
                eff = selected / _hidden_median_norm(runs) ** 2
                effective.append(eff.ravel())
                for seed_eff, steps in zip(eff, runs.values("steps")):
                    eff_ax.plot(steps, seed_eff, color=color, lw=1.3)
    if pinned is not None:
        for label, by_lr in pinned[1].items():
            seed_points(sweep_ax, by_lr, COLORS["pinned"], f"pinned: {pinned[0]}, {label}", log_x=True, ls="--")
    if selected is not None:
        sweep_ax.axvline(selected, color="black", lw=0.8)
    sweep_ax.set_xscale("log")
    chance_line(sweep_ax)
    sweep_ax.set(xlabel="learning rate (log scale)", ylabel="test accuracy after training",
                 title="Accuracy vs learning rate (dotted: largest stable)")
    loss_ax.axhline(np.log(10), color="gray", lw=0.8, ls=":")
    log_or_note(loss_ax, np.concatenate(losses), "training losses")
    where = f"lr = {selected:g}" if selected is not None else "the selected lr"
    loss_ax.set(xlabel="training step (SGD updates)", ylabel="training loss (dotted: ln 10)",
                title=f"Training loss at {where}")
    log_or_note(eff_ax, np.concatenate(effective), "effective learning rates")
    eff_ax.set(xlabel="training step (SGD updates)", ylabel="lr / ||w||^2 (median hidden unit)",
               title=f"BN: effective learning rate at {where}")
    legend_below(fig, ncol=4)
    fig.suptitle("dots: seeds; line: seed mean (x: a diverged seed, counted at chance 0.1)", fontsize=10)
    return fig


@experiment_style
def plot_effective_lr(by_lr: Mapping[float, SeedRuns], title: str = "BN net: each unit's weight norm sets "
                      "its step size") -> Figure:
    """For BN runs at several learning rates: the median hidden unit's weight norm over training (left) and
    the effective learning rate lr/||w||^2 it implies (right, log). One colour per learning rate, a line per
    seed."""
    fig, axes = figure(1, 2, 12.0, 4.0, left=0.07, right=0.99, bottom=0.28, top=0.88, wspace=0.22)
    norm_ax, eff_ax = axes[0]
    for shade, (lr, runs) in zip(_LR_SHADES, sorted(by_lr.items())):
        norms = _hidden_median_norm(runs)
        for index, (steps, seed_norm) in enumerate(zip(runs.values("steps"), norms)):
            norm_ax.plot(steps, seed_norm, color=shade, lw=1.3, label=f"lr {lr:g}" if index == 0 else None)
            eff_ax.plot(steps, lr / seed_norm ** 2, color=shade, lw=1.3)
    norm_ax.set(xlabel="training step (SGD updates)", ylabel="||w|| of the median unit (layers 2-L)",
                title="Weight norm of a hidden unit")
    eff_ax.set_yscale("log")
    eff_ax.set(xlabel="training step (SGD updates)", ylabel="lr / ||w||^2 (log)", title="Effective learning rate")
    legend_below(fig, ncol=6)
    fig.suptitle(title, fontsize=11)
    return fig


@experiment_style
def plot_one_step_ratio(ratios: Mapping[str, Mapping[float, list[float]]],
                        title: str = "Loss after one step from initialization, relative to before") -> Figure:
    """Loss after one SGD step / loss before, against the learning rate (log-log), one line per setting
    through the geometric mean, a dot per seed (``ratios[label][lr]`` lists one ratio per seed); an
    overflowed loss is drawn at the top edge as an x. 1 = no change."""
    fig, axes = figure(1, 1, 7.5, 4.4, left=0.11, right=0.97, bottom=0.3, top=0.9)
    ax = axes[0][0]
    ceiling = 1e12
    for index, (label, by_lr) in enumerate(ratios.items()):
        color = setting_color(label, index)
        xs = np.array(sorted(by_lr))
        values = np.array([by_lr[x] for x in xs], dtype=float)  # (n, S)
        capped = np.where(np.isfinite(values), np.minimum(values, ceiling), ceiling)
        ax.plot(xs, np.exp(np.log(capped).mean(axis=1)), color=color, ls="--" if "Gaussian" in label else "-",
                label=label)
        for seed in range(values.shape[1]):
            ok = np.isfinite(values[:, seed]) & (values[:, seed] < ceiling)
            ax.plot(xs[ok], values[ok, seed], "o", color=color, ms=3.5, alpha=0.8)
            ax.plot(xs[~ok], np.full((~ok).sum(), ceiling), "x", color=color, ms=7, mew=2)
    ax.axhline(1.0, color="gray", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="learning rate (log scale)", ylabel="loss after / loss before (log)", title=title)
    legend_below(fig, ncol=2)
    return fig


@experiment_style
def plot_weight_decay(runs: Mapping[float, SeedRuns], selected: float | None = None,
                      pinned: tuple[str, SeedRuns] | None = None) -> Figure:
    """Three panels over training, one colour per weight decay, a line per seed: the median hidden unit's
    weight norm (mean over hidden layers), its effective learning rate lr/||w||^2 (log), and test accuracy.
    ``pinned`` = (label, runs) is overlaid in black."""
    fig, axes = figure(1, 3, 13.5, 4.0, left=0.05, right=0.99, bottom=0.3, top=0.9, wspace=0.3)
    norm_ax, eff_ax, acc_ax = axes[0]
    shades = dict(zip(sorted(runs), ("#9ecae1", "#4292c6", "#2171b5", "#08306b", "#e6550d", "#a63603",
                                     "#7f2704")))
    entries = [(f"weight decay {wd:g}", runs[wd], shades[wd], 2.4 if wd == selected else 1.2)
               for wd in sorted(runs)]
    if pinned is not None:
        entries.append((f"pinned: {pinned[0]}", pinned[1], COLORS["pinned"], 1.2))
    for label, each, color, lw in entries:
        ls = "--" if label.startswith("pinned") else "-"
        for index, steps in enumerate(each.values("steps")):
            norm = each.values("unit_weight_norm")[index].mean(axis=1)
            norm_ax.plot(steps, norm, color=color, lw=lw, ls=ls, label=label if index == 0 else None)
            eff_ax.plot(steps, each.values("effective_lr")[index].mean(axis=1), color=color, lw=lw, ls=ls)
        seed_curves(acc_ax, each, "test_accuracy", color, None, lw=lw, ls=ls)
    norm_ax.set(xlabel="training step (SGD updates)", ylabel="||w|| of the median unit (mean of layers)",
                title="Weight norm of a hidden unit")
    eff_ax.set_yscale("log")
    eff_ax.set(xlabel="training step (SGD updates)", ylabel="lr / ||w||^2 (log)", title="Effective learning rate")
    acc_ax.set_ylim(0.85, 1.0)
    acc_ax.set(xlabel="training step (SGD updates)", ylabel="test accuracy (fraction)", title="Test accuracy")
    legend_below(fig, ncol=5)
    return fig
