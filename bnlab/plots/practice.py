"""Figures of lecture 12 (batch norm in practice). The data come from :mod:`bnlab.lessons.practice`; these
functions only draw.

Colours: how a network is tested (eval black, training mode red, eval after a polluting pass orange), the order
of the test digits by line style (shuffled solid, class-sorted dashed); one colour per momentum in the EMA
figure (precise statistics black); every seed is its own dot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bnlab.lessons.practice import (
    MODES,
    ORDERS,
    DropoutOutcome,
    EmaGrid,
    FinalLayerOutcome,
    FineTuneOutcome,
    ForgotEvalTable,
    cross_entropy_floor,
)
from bnlab.plots._seed_runs import chance_line, experiment_style, figure, legend_below
from bnlab.train import TrainResult

__all__ = ["MODE_COLORS", "plot_dropout", "plot_ema_grid", "plot_final_layer", "plot_fine_tuning",
           "plot_forgot_eval", "plot_one_step", "plot_placement"]

MODE_COLORS = {"eval": "black", "train": "tab:red", "polluted": "tab:orange"}
MODE_WORDS = {"eval": "eval()", "train": "training mode (eval() forgotten)",
              "polluted": "eval() after a training-mode pass"}
ORDER_STYLES = {"shuffled": "-", "class-sorted": "--"}
MOMENTUM_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:cyan")
LN_10 = float(np.log(10))


def _log_batch_axis(ax: Axes, sizes: Sequence[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(list(sizes), [str(s) for s in sizes])
    ax.minorticks_off()


@experiment_style
def plot_forgot_eval(table: ForgotEvalTable, mode: str = "train", order: str = "class-sorted",
                     batch_size: int = 8) -> Figure:
    """Two panels. Left: test accuracy against the test batch size (log axis) for each way of testing (colour)
    and order of the test digits (line style); a setting that raises (a training-mode batch of one) is an x on
    the axis. The chosen setting (``mode``, ``order``, ``batch_size``) is circled. Right: the chosen setting's
    accuracy on each digit class, with eval()'s as outlined bars."""
    if mode not in MODES or order not in ORDERS or batch_size not in table.batch_sizes:
        raise ValueError(f"expected mode in {MODES}, order in {ORDERS} and batch_size in {table.batch_sizes}, "
                         f"got {mode!r}, {order!r}, {batch_size!r}")
    fig, axes = figure(1, 2, 12.5, 4.4, left=0.06, right=0.99, bottom=0.27, top=0.88, wspace=0.22,)
    left, right = axes[0]
    sizes = np.array(table.batch_sizes, dtype=float)
    raise_label = "x: raises ValueError (a training-mode batch of one)"
    for each_mode in MODES:
        for each_order in ORDERS:
            values = table.accuracy[(each_mode, each_order)]
            left.plot(sizes, values, ORDER_STYLES[each_order], color=MODE_COLORS[each_mode], marker="o", ms=3.5,
                      lw=1.6, label=f"{MODE_WORDS[each_mode]}, {each_order}")
            raised = ~np.isfinite(values)
            if raised.any():
                left.plot(sizes[raised], np.zeros(raised.sum()), "x", color=MODE_COLORS[each_mode], ms=9, mew=2.5,
                          clip_on=False, zorder=5, label=raise_label)
                raise_label = None             # one legend entry for every x
    chosen = table.at(mode, order, batch_size)
    if np.isfinite(chosen):
        left.plot([batch_size], [chosen], "o", ms=13, mfc="none", mec="black", mew=1.5, zorder=6)
    else:
        left.annotate("raises ValueError", (batch_size, 0.0), xytext=(batch_size * 1.6, 0.18), fontsize=8,
                      arrowprops={"arrowstyle": "->", "lw": 0.8})
    _log_batch_axis(left, table.batch_sizes)
    chance_line(left, (0.0, 1.02))
    left.set(xlabel="test batch size (examples, log)", ylabel="test accuracy",
             title="One trained network, tested three ways")

    classes = np.arange(table.per_class[("eval", "shuffled")].shape[1])
    index = table.batch_sizes.index(batch_size)
    right.bar(classes, table.per_class[("eval", "shuffled")][index], width=0.8, fill=False,
              edgecolor="black", lw=1.0, label="eval() (any order, any batch size)")
    values = table.per_class[(mode, order)][index]
    if np.all(np.isfinite(values)):
        right.bar(classes, values, width=0.55, color=MODE_COLORS[mode], alpha=0.8, label="the chosen setting")
    else:
        message = table.error.replace(" when training,", " when training,\n")
        right.text(0.5, 0.5, f"training mode cannot normalize a batch of one; torch raises\nValueError: {message}",
                   ha="center", va="center", transform=right.transAxes, fontsize=8, color="#a00000",
                   bbox={"facecolor": "white", "edgecolor": "#a00000", "boxstyle": "round"})
    right.set_xticks(classes)
    right.set_ylim(0, 1.05)
    right.set(xlabel="digit class", ylabel="test accuracy on that class",
              title=f"{MODE_WORDS[mode]}, {order}, test batches of {batch_size}")
    legend_below(fig, ncol=3)
    return fig


@experiment_style
def plot_one_step(after_step: Mapping[int, np.ndarray], statistics_only: Mapping[int, np.ndarray],
                  before: float) -> Figure:
    """Test accuracy after one more training-mode forward on a random batch of b training digits, one dot per
    draw: with an SGD step (red) and with only the running-statistics update (blue), against b; the accuracy
    before it as a dotted line."""
    fig, axes = figure(1, 1, 7.5, 4.0, left=0.1, right=0.98, bottom=0.25, top=0.88)
    ax = axes[0, 0]
    sizes = sorted(after_step)
    positions = {size: index for index, size in enumerate(sizes)}
    rng = np.random.default_rng(0)  # horizontal jitter only
    for values, offset, color, label in ((statistics_only, -0.15, "tab:blue", "running statistics updated only"),
                                         (after_step, 0.15, "tab:red", "forward, backward and one SGD step")):
        for index, size in enumerate(sorted(values)):
            x = positions[size] + offset + rng.uniform(-0.06, 0.06, len(values[size]))
            ax.plot(x, values[size], "o", ms=3.5, alpha=0.75, color=color, label=label if index == 0 else None)
    ax.axhline(before, color="black", lw=1, ls=":", label=f"before: {before:.3f}")
    ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
    chance_line(ax, (0.0, 1.0))
    ax.set(xlabel="size b of the extra training batch", ylabel="test accuracy afterwards (eval())",
           title="One more update on a short batch (one dot per random batch)")
    legend_below(fig, ncol=3)
    return fig


@experiment_style
def plot_ema_grid(grids: Mapping[str, EmaGrid], layer: int = 0) -> Figure:
    """One panel per grid (e.g. per init): test accuracy against the run length t (log) with running
    statistics from an EMA at each momentum, raw (solid) and bias-corrected (dashed), and precise statistics
    (black). Last panel: layer ``layer``'s running variance (mean over units) at the smallest momentum, raw,
    corrected and precise, for every grid."""
    fig, axes = figure(1, len(grids) + 1, 4.4 * (len(grids) + 1), 4.4, left=0.05, right=0.99, bottom=0.3,
                       top=0.88, wspace=0.25)
    panels = axes[0]
    lowest = min(float(np.nanmin([g.raw.min(), g.corrected.min(), g.precise.min()])) for g in grids.values())
    for ax, (label, grid) in zip(panels, grids.items()):
        t = np.array(grid.steps, dtype=float)
        for index, w in enumerate(grid.momenta):
            color = MOMENTUM_COLORS[index % len(MOMENTUM_COLORS)]
            ax.plot(t, grid.raw[index], "-o", ms=3.5, color=color, label=f"EMA, momentum {w:g}")
            ax.plot(t, grid.corrected[index], "--", color=color, lw=1.3, label=f"EMA {w:g}, bias-corrected")
        ax.plot(t, grid.precise, "-", color="black", lw=2.2, label="precise (recomputed)")
        ax.set_xscale("log")
        ax.set_xticks(list(grid.steps), [str(s) for s in grid.steps])
        ax.minorticks_off()
        ax.set_ylim(max(0.0, lowest - 0.05), 1.0)
        ax.set(xlabel="training updates t (log)", ylabel="test accuracy", title=f"{label}: accuracy by statistics")
    var_ax = panels[-1]
    shades = ("tab:orange", "tab:olive", "tab:pink", "tab:gray")   # not the momentum colours of the other panels
    for index, (label, grid) in enumerate(grids.items()):
        t, color = np.array(grid.steps, dtype=float), shades[index % len(shades)]
        slow = int(np.argmin(grid.momenta))
        var_ax.plot(t, grid.raw_var[slow, :, layer], "-o", ms=3.5, color=color,
                    label=f"{label}: EMA {grid.momenta[slow]:g}, raw")
        var_ax.plot(t, grid.corrected_var[slow, :, layer], "--", color=color, label=f"{label}: bias-corrected")
        var_ax.plot(t, grid.precise_var[:, layer], ":", marker="*", ms=7, color=color, label=f"{label}: precise")
    var_ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    var_ax.set_xscale("log")
    first = next(iter(grids.values()))
    var_ax.set_xticks(list(first.steps), [str(s) for s in first.steps])
    var_ax.minorticks_off()
    var_ax.set(xlabel="training updates t (log)", ylabel="running_var, mean over the layer's units",
               title=f"Layer {layer + 1}: where the variance is (initial value 1)")
    legend_below(fig, ncol=4)
    return fig


@experiment_style
def plot_fine_tuning(outcomes: Mapping[str, FineTuneOutcome], before: float) -> Figure:
    """Test accuracy during continued training in small batches, one line per treatment of the batch norm
    layers (a treatment that does exactly what another does is drawn dotted on top of it)."""
    fig, axes = figure(1, 1, 8.5, 4.3, left=0.09, right=0.98, bottom=0.3, top=0.88)
    ax = axes[0, 0]
    colors = ("tab:red", "tab:orange", "tab:pink", "tab:green", "tab:blue")
    markers = ("o", "s", "^", "D", "v")
    styles = ("-", "-", "-", "-", "--")      # freeze_batchnorm dashed: it nearly coincides with "statistics frozen"
    seen: list[np.ndarray] = []
    for index, (treatment, outcome) in enumerate(outcomes.items()):
        curve = outcome.result.test_accuracy
        same = any(curve.shape == other.shape and np.array_equal(curve, other) for other in seen)
        ax.plot(outcome.result.steps, curve, ":" if same else styles[index % len(styles)],
                marker=markers[index % len(markers)], ms=3 if same else 4.5, mfc="none" if index % 2 else None,
                lw=2.6 if same else 1.6, color=colors[index % len(colors)],
                label=f"{treatment}: {outcome.accuracy:.3f}")
        seen.append(curve)
    ax.axhline(before, color="black", lw=0.9, ls=":", label=f"before: {before:.3f}")
    chance_line(ax, (0.0, 1.0))
    batch = next(iter(outcomes.values())).result.config.batch_size
    ax.set(xlabel="further training updates", ylabel="test accuracy (eval())",
           title=f"Further training in batches of {batch}, by treatment of the BN layers")
    legend_below(fig, ncol=3)
    return fig


@experiment_style
def plot_placement(runs: Mapping[tuple[str, str], Sequence[tuple[TrainResult, object]]]) -> Figure:
    """One panel per activation: each seed's final test accuracy with BN before and after the activation."""
    activations = list(dict.fromkeys(activation for activation, _ in runs))
    fig, axes = figure(1, len(activations), 4.3 * len(activations), 3.8, left=0.1, right=0.98, bottom=0.16,
                       top=0.87, wspace=0.3)
    for ax, activation in zip(axes[0], activations):
        placements = [placement for act, placement in runs if act == activation]
        for x, placement in enumerate(placements):
            values = [result.final_test_accuracy for result, _ in runs[(activation, placement)]]
            ax.plot(np.full(len(values), x) + np.linspace(-0.08, 0.08, len(values)), values, "o", ms=6,
                    color="tab:blue", alpha=0.85)
            ax.plot([x - 0.2, x + 0.2], [np.mean(values)] * 2, color="black", lw=1)
        ax.set_xticks(range(len(placements)), [f"BN {p} the\n{activation}" for p in placements])
        ax.set_xlim(-0.6, len(placements) - 0.4)
        ax.set(ylabel="test accuracy after 600 updates", title=f"{activation}: one dot per seed")
    return fig


@experiment_style
def plot_dropout(outcomes: Mapping[str, Sequence[DropoutOutcome]]) -> Figure:
    """Left: per batch norm layer, the variance of its input in eval mode over the running variance training
    stored (1 = no shift), one dot per seed and setting, the formula's prediction as an open diamond. Right:
    test accuracy as trained and after recomputing the statistics with dropout off, per seed."""
    fig, axes = figure(1, 2, 12.0, 4.3, left=0.07, right=0.99, bottom=0.3, top=0.88, wspace=0.25)
    left, right = axes[0]
    colors = ("gray", "tab:red", "tab:green")
    for index, (where, runs) in enumerate(outcomes.items()):
        color = colors[index % len(colors)]
        for seed_index, outcome in enumerate(runs):
            layers = np.arange(1, outcome.measured_ratio.size + 1) + 0.12 * (index - 1)
            left.plot(layers, outcome.measured_ratio, "o", color=color, ms=5, alpha=0.8,
                      label=f"dropout: {where}" if seed_index == 0 else None)
            if seed_index == 0:
                left.plot(layers, outcome.predicted_ratio, "D", mfc="none", mec=color, ms=8,
                          label=f"predicted ({where})" if where != "none" else "predicted (none: 1, no dropout)")
            right.plot([index - 0.15, index + 0.15], [outcome.accuracy, outcome.recalibrated], "-", color=color,
                       lw=0.8, alpha=0.7)
            right.plot([index - 0.15], [outcome.accuracy], "o", color=color, ms=5)
            right.plot([index + 0.15], [outcome.recalibrated], "s", mfc="none", mec=color, ms=6)
    left.axhline(1.0, color="black", lw=0.8, ls=":")
    left.set_xticks([1, 2, 3], ["BN 1", "BN 2", "BN 3"])
    left.set(ylabel="Var_eval(input) / running_var", title="Variance shift at each batch norm layer")
    right.set_xticks(range(len(outcomes)), [where.replace(" layer", "\nlayer") for where in outcomes], fontsize=8)
    right.set(ylabel="test accuracy", title="As trained (dot), statistics recomputed without dropout (square)")
    legend_below(fig, ncol=3)
    return fig


@experiment_style
def plot_final_layer(study: Mapping[str, Sequence[FinalLayerOutcome]]) -> Figure:
    """Left: the training-mode minibatch loss during training, one line per seed and variant (log axis), with
    the floor a standardized-logit network cannot go below. Right: per seed, test accuracy (dot) and mean
    largest softmax probability (square)."""
    fig, axes = figure(1, 2, 12.0, 4.3, left=0.07, right=0.99, bottom=0.3, top=0.88, wspace=0.22)
    left, right = axes[0]
    colors = ("black", "tab:blue", "tab:red")
    for index, (variant, outcomes) in enumerate(study.items()):
        color = colors[index % len(colors)]
        for seed_index, outcome in enumerate(outcomes):
            steps, loss = outcome.result.steps, outcome.result.train_loss_avg
            left.plot(steps[1:], loss[1:], "-", color=color, lw=1.2, alpha=0.85,
                      label=f"output layer, then {variant}" if seed_index == 0 and variant != "none"
                      else ("no BN on the logits" if seed_index == 0 else None))
            x = index + 0.1 * (seed_index - 1)
            right.plot([x - 0.15], [outcome.accuracy], "o", color=color, ms=5)
            right.plot([x + 0.15], [outcome.confidence], "s", mfc="none", mec=color, ms=6)
    floor = cross_entropy_floor()
    left.axhline(floor, color="tab:red", lw=0.9, ls=":", label=f"floor with standardized logits: {floor:.3f}")
    left.axhline(LN_10, color="gray", lw=0.8, ls=":", label="ln 10: a uniform guess over 10 classes")
    left.set_yscale("log")
    left.set(xlabel="training update", ylabel="training loss (mean over the previous 50 updates)",
             title="Training loss")
    right.set_xticks(range(len(study)), [variant.replace("BatchNorm1d", "BN") for variant in study], fontsize=8)
    right.set_ylim(0.5, 1.0)
    right.set(ylabel="test accuracy (dot) / mean top softmax prob. (square)", title="Accuracy and confidence")
    legend_below(fig, ncol=2)
    return fig
