"""Figures of lecture 8 (batch size): the normalization batch against the SGD batch, BN against LN and GN, and
why a normalization batch of two fails to train.

Colours: one per method (BN blue, LayerNorm green, GroupNorm purple, a pinned setting black). Where several BN
settings share a panel they are told apart by line style (population vs own test-batch statistics, the
selected normalization batch vs the whole SGD batch) or by a shade of blue (the SGD batch, light = small).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bnlab.experiments import SeedRuns
from bnlab.lessons.batch_size import GradientAtInit, final_train_loss, with_final_train_loss
from bnlab.plots._seed_runs import (
    COLORS,
    chance_line,
    experiment_style,
    figure,
    legend_below,
    log_or_note,
    seed_curves,
    seed_points,
)
from bnlab.train import TrainResult

__all__ = ["TEST_STATISTICS", "plot_batch_size_sweep", "plot_equal_examples", "plot_nbs_by_sgd_batch",
           "plot_norm_batch_size", "plot_pair_gradients"]

# what "BN at test time" can mean -> (recorded quantity, words)
TEST_STATISTICS = {
    "population": ("final_accuracy", "population statistics (eval())"),
    "batch": ("batch_stats_accuracy", "each test batch's own statistics (no eval())"),
}
# a shade of blue per SGD batch size, light = small (every figure of the lecture)
SGD_SHADES = {16: "#9ecae1", 64: "#4292c6", 128: "#2171b5", 256: "#08306b"}
LN_10 = float(np.log(10))  # the cross-entropy of a constant uniform guess over ten classes


def _shade(batch_size: int) -> str:
    return SGD_SHADES.get(batch_size, COLORS["BN"])


def _log2_axis(ax: Axes, xs) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(xs), [str(int(x)) for x in xs])
    ax.minorticks_off()


def _final_loss(runs: Mapping) -> dict:
    """{key: the same runs with ``final_train_loss`` added} (:func:`bnlab.lessons.batch_size.with_final_train_loss`)."""
    return {key: with_final_train_loss(each) for key, each in runs.items()}


def _flat_seeds(ax: Axes, xs, values: np.ndarray, color: str, label: str | None) -> None:
    """A method that does not depend on x: each seed's value as a thin flat line across the panel."""
    for index, value in enumerate(values):
        if np.isfinite(value):
            ax.plot([xs[0], xs[-1]], [value, value], color=color, lw=1.1, alpha=0.85,
                    label=label if index == 0 else None)


@experiment_style
def plot_norm_batch_size(bn: Mapping[int, SeedRuns], others: Mapping[str, SeedRuns], batch_size: int,
                         selected: int | None = None, test_statistics: str = "population",
                         pinned: tuple[str, Mapping[int, SeedRuns]] | None = None) -> Figure:
    """At SGD batch ``batch_size``, three panels.

    Left: final test accuracy against the normalization batch size (NBS, log2 axis) of BN tested with
    ``test_statistics``: ``"population"`` (eval()), ``"batch"`` (test batches of NBS examples, each normalized
    with its own statistics) or ``"both"`` (population solid, own dashed); the first line drawn is BN's (the
    population one for ``"both"``). LayerNorm and GroupNorm look at no batch: each seed is a flat line.
    Middle: the training loss at the end (training mode: what SGD minimized) against NBS. Right: the training
    loss over training at the ``selected`` NBS (solid) and, as the control, at NBS = ``batch_size`` (dashed).
    ``pinned`` = (label, {nbs: BN runs}) or (label, {nbs: BN runs}, statistics) is overlaid in black (dashed) on
    the left panel, tested with ``statistics`` if given, else with the statistics drawn first; its legend entry
    names them. The x-axis spans both the drawn and the pinned normalization batches.
    """
    if test_statistics not in (*TEST_STATISTICS, "both"):
        raise ValueError(f"test_statistics must be one of {sorted(TEST_STATISTICS) + ['both']}, "
                         f"got {test_statistics!r}")
    shown = ["population", "batch"] if test_statistics == "both" else [test_statistics]
    fig, axes = figure(1, 3, 13.5, 4.3, left=0.05, right=0.99, bottom=0.25, top=0.86, wspace=0.28)
    acc, final_loss, curves = axes[0]
    xs = sorted(bn)
    for which, ls in zip(shown, ("-", "--")):
        key, words = TEST_STATISTICS[which]
        seed_points(acc, bn, COLORS["BN"], f"BN, tested with {words}", name=key, jitter=0.06, log_x=True, ls=ls)
    every_x = xs
    if pinned is not None:
        label, pinned_bn, *rest = pinned
        which = rest[0] if rest else shown[0]
        if which not in TEST_STATISTICS:
            raise ValueError(f"pinned statistics must be one of {sorted(TEST_STATISTICS)}, got {which!r}")
        key, words = TEST_STATISTICS[which]
        seed_points(acc, pinned_bn, COLORS["pinned"], f"pinned: {label}, {words}", name=key, log_x=True,
                    ls="--")
        every_x = sorted({*xs, *pinned_bn})
    for label, runs in others.items():
        _flat_seeds(acc, every_x, runs.final_accuracies(), COLORS[label], f"{label} (a flat line per seed)")
    if selected is not None:
        acc.axvline(selected, color="black", lw=0.8, ls=":")
    _log2_axis(acc, every_x)
    chance_line(acc)
    acc.set(xlabel="normalization batch (examples, log2)", ylabel="test accuracy after training",
            title=f"Test accuracy, SGD batch {batch_size}")

    seed_points(final_loss, _final_loss(bn), COLORS["BN"], None, name="final_train_loss", jitter=0.06, log_x=True)
    for label, runs in others.items():
        _flat_seeds(final_loss, xs, final_train_loss(runs), COLORS[label], None)
    final_loss.axhline(LN_10, color="gray", lw=0.8, ls=":")
    log_or_note(final_loss, np.concatenate([final_train_loss(each) for each in [*bn.values(), *others.values()]]),
                "no training loss recorded")
    _log2_axis(final_loss, xs)
    final_loss.set(xlabel="normalization batch (examples, log2)", ylabel="training loss (cross-entropy)",
                   title="Training loss at the end (training mode)")

    drawn = []
    if selected is not None and selected in bn:
        seed_curves(curves, bn[selected], "train_loss", COLORS["BN"], None)
        drawn.append(bn[selected])
        control = max(bn)
        if control != selected:
            seed_curves(curves, bn[control], "train_loss", COLORS["BN"], None, ls="--", lw=1.0)
            drawn.append(bn[control])
            curves.set_title(f"Training loss: BN at NBS {selected} (solid), {control} (dashed)")
        else:
            curves.set_title(f"Training loss over training, BN at NBS {selected}")
    else:
        curves.set_title("Training loss over training")
    for label, runs in others.items():
        seed_curves(curves, runs, "train_loss", COLORS[label], None, lw=0.9, alpha=0.6)
    curves.axhline(LN_10, color="gray", lw=0.8, ls=":")
    log_or_note(curves, np.concatenate([each.values("train_loss").ravel() for each in [*drawn, *others.values()]]),
                "no training loss recorded")
    curves.set(xlabel="training step (SGD updates)", ylabel="training loss (cross-entropy)")
    legend_below(fig, ncol=2 if test_statistics == "both" else 3)
    fig.suptitle("dots: seeds; lines: seed means; dotted: chance (0.1) and ln 10 (a constant guess)", fontsize=10)
    return fig


@experiment_style
def plot_nbs_by_sgd_batch(by_batch: Mapping[int, Mapping[int, SeedRuns]]) -> Figure:
    """BN against the normalization batch, one shade of blue per SGD batch size (600 updates each). Left: final
    test accuracy (population statistics). Right: training loss at the end (training mode). Does the
    small-NBS collapse depend on the SGD batch?"""
    fig, axes = figure(1, 2, 11.0, 4.3, left=0.07, right=0.99, bottom=0.26, top=0.85, wspace=0.25)
    acc, loss = axes[0]
    for batch_size, bn in sorted(by_batch.items()):
        seed_points(acc, bn, _shade(batch_size), f"SGD batch {batch_size}", jitter=0.05, log_x=True)
        seed_points(loss, _final_loss(bn), _shade(batch_size), None, name="final_train_loss", jitter=0.05,
                    log_x=True)
    every_nbs = sorted({nbs for bn in by_batch.values() for nbs in bn})
    for ax in (acc, loss):
        _log2_axis(ax, every_nbs)
        ax.set_xlabel("normalization batch (examples, log2)")
    chance_line(acc)
    acc.set(ylabel="test accuracy after training", title="Test accuracy (population statistics)")
    loss.axhline(LN_10, color="gray", lw=0.8, ls=":")
    log_or_note(loss, np.concatenate([final_train_loss(runs) for bn in by_batch.values() for runs in bn.values()]),
                "no training loss recorded")
    loss.set(ylabel="training loss (cross-entropy)", title="Training loss at the end (training mode)")
    legend_below(fig, ncol=4)
    fig.suptitle("BN at every SGD batch, 600 updates; dots: seeds; dotted: chance (0.1) and ln 10", fontsize=10)
    return fig


@experiment_style
def plot_batch_size_sweep(sweeps: Mapping[str, Mapping[int, SeedRuns]],
                          title: str = "SGD batch size, same number of updates (600)") -> Figure:
    """Final test accuracy against the SGD batch size (log2 axis), one colour per method, a dot per seed; the
    two BN settings share blue (solid: NBS = SGD batch, dashed: NBS 16)."""
    fig, axes = figure(1, 1, 7.0, 4.2, left=0.1, right=0.97, bottom=0.32, top=0.9)
    ax = axes[0][0]
    styles = {"BN, normalization batch = SGD batch": (COLORS["BN"], "-"),
              "BN, normalization batch 16": (COLORS["BN"], "--")}
    for label, by_batch in sweeps.items():
        color, ls = styles.get(label, (COLORS.get(label, "tab:orange"), "-"))
        seed_points(ax, by_batch, color, label, jitter=0.05, log_x=True, ls=ls)
    _log2_axis(ax, sorted(next(iter(sweeps.values()))))
    ax.set_ylim(0.8, 1.0)
    ax.set(xlabel="SGD batch size (examples per update, log2)", ylabel="test accuracy after training", title=title)
    legend_below(fig, ncol=2)
    return fig


def _accuracy_by(ax: Axes, runs: SeedRuns, scale: float, color: str, label: str | None, **style) -> None:
    """Each seed's test accuracy against updates times ``scale`` (from update 1 on: the untrained 0.1 is off
    the axis)."""
    steps = runs.values("steps")
    for index, (x, y) in enumerate(zip(steps, runs.values("test_accuracy"))):
        keep = x > 0
        ax.plot(x[keep] * scale, y[keep], color=color, label=label if index == 0 else None, lw=1.2, alpha=0.9,
                **style)


@experiment_style
def plot_equal_examples(plain: Mapping[int, SeedRuns], ghost: Mapping[int, SeedRuns] | None = None,
                        ghost_nbs: int = 16, marks: tuple[int, ...] = (12_800, 38_400),
                        train_size: int = 4000) -> Figure:
    """BN test accuracy during training, one shade of blue per SGD batch B (``plain[B]``: NBS = B), each seed a
    line; ``ghost[B]`` (NBS ``ghost_nbs``) dashed. Left: against updates (equal updates compare vertically).
    Right: against training examples seen, updates x B (equal epochs compare vertically, at ``marks``)."""
    fig, axes = figure(1, 2, 12.0, 4.3, left=0.06, right=0.99, bottom=0.27, top=0.88, wspace=0.2)
    by_updates, by_examples = axes[0]
    for batch_size, runs in sorted(plain.items()):
        for ax, scale in ((by_updates, 1.0), (by_examples, batch_size / 1000)):
            _accuracy_by(ax, runs, scale, _shade(batch_size),
                         f"SGD batch {batch_size}, NBS {batch_size}" if ax is by_updates else None)
    for batch_size, runs in sorted((ghost or {}).items()):
        for ax, scale in ((by_updates, 1.0), (by_examples, batch_size / 1000)):
            _accuracy_by(ax, runs, scale, _shade(batch_size),
                         f"SGD batch {batch_size}, NBS {ghost_nbs} (ghost BN)" if ax is by_updates else None,
                         ls="--", dashes=(3, 2))
    for examples in marks:
        by_examples.axvline(examples / 1000, color="black", lw=0.8, ls=":")
        by_examples.annotate(f" {examples / train_size:.1f} epochs", (examples / 1000, 0.853), fontsize=8,
                             ha="left", va="bottom")
    by_examples.set_xscale("log")
    for ax in (by_updates, by_examples):
        ax.set_ylim(0.85, 0.96)
        ax.grid(alpha=0.3)
    by_updates.set(xlabel="SGD updates", ylabel="test accuracy (population statistics)",
                   title="Equal updates: read vertically")
    by_examples.set(xlabel="training examples seen (thousands, log; 4 = one epoch)",
                    title="Equal examples (epochs): read vertically", )
    legend_below(fig, ncol=3)
    fig.suptitle("BN, lr 0.1 at every SGD batch, no momentum; each seed a line", fontsize=10, y=0.99)
    return fig


@experiment_style
def plot_pair_gradients(at_init: Mapping[int, GradientAtInit], trained: Mapping[int, TrainResult],
                        eps: float = 1e-5) -> Figure:
    """Why a normalization batch of two cannot train, three panels.

    Left: at g = 2, |dL/dz| of each (example, unit) of layer 1 at initialization against the gap |z - z'| to
    its partner (log-log); a dotted line at the tie width 2 sqrt(eps). Middle: the share of the squared
    gradient carried by the largest entries, per normalization batch in ``at_init``. Right: layer 1's weight
    norm over training for the runs in ``trained`` ({g: TrainResult}).
    """
    fig, axes = figure(1, 3, 13.5, 4.3, left=0.06, right=0.99, bottom=0.25, top=0.9, wspace=0.3)
    scatter, shares, norms = axes[0]
    shades = {2: "#08306b", 4: "#2171b5", 8: "#4292c6", 16: "#6baed6", 32: "#9ecae1", 128: "#bdd7e7"}
    pair = at_init.get(2)
    if pair is not None and pair.pair_gap is not None:
        grad = np.abs(pair.pre_norm_grad).ravel()
        gap = pair.pair_gap.ravel()
        keep = (grad > 0) & (gap > 0)
        scatter.loglog(gap[keep], grad[keep], ".", color=COLORS["BN"], ms=2, alpha=0.35)
        scatter.axvline(2 * np.sqrt(eps), color="black", lw=0.8, ls=":")
        scatter.annotate(r"$2\sqrt{\epsilon}$", (2 * np.sqrt(eps), 0.97), xycoords=("data", "axes fraction"),
                         ha="left", va="top", fontsize=9)
        control = at_init.get(max(at_init))
        if control is not None and control.norm_batch_size != 2:
            low, high = np.percentile(np.abs(control.pre_norm_grad), [5, 95])
            scatter.axhspan(low, high, color="gray", alpha=0.2, lw=0,
                            label=f"NBS {control.norm_batch_size}: middle 90% of |dL/dz|")
        scatter.set_title("NBS 2, layer 1 at init: gradient vs gap to partner")
    else:
        scatter.text(0.5, 0.5, "no normalization batch of 2 given", transform=scatter.transAxes, ha="center")
    scatter.set(xlabel="|z - z of its partner|", ylabel="|dL/dz| (one dot per example and unit)")

    fractions = np.logspace(-4, 0, 60)
    for g, grads in sorted(at_init.items()):
        squared = np.sort((grads.pre_norm_grad ** 2).ravel())[::-1]
        cumulative = np.cumsum(squared) / squared.sum()
        counts = np.maximum(1, np.round(fractions * squared.size).astype(int)) - 1
        shares.plot(fractions, cumulative[counts], color=shades.get(g, COLORS["BN"]), label=f"NBS {g}")
    shares.plot(fractions, fractions, color="gray", lw=0.8, ls=":", label="an evenly spread gradient")
    shares.axvline(0.01, color="black", lw=0.6, ls=":")
    shares.set_xscale("log")
    shares.set_ylim(0, 1.02)
    shares.set(xlabel="largest entries of dL/dz (fraction, log)", ylabel="share of the squared gradient",
               title="How concentrated layer 1's gradient is (init)")

    for g, result in sorted(trained.items()):
        steps = np.maximum(result.steps, 0.5)  # update 0 drawn at 0.5 on the log axis
        norms.plot(steps, result.weight_norms[:, 0], marker=".", color=shades.get(g, COLORS["BN"]),
                   label=None if g in at_init else f"NBS {g}")
    norms.set_xscale("log")
    norms.set_yscale("log")
    norms.set(xlabel="SGD update (log; 0 drawn at 0.5)", ylabel="||W1|| (Frobenius)",
              title="Layer 1's weight norm during training")
    legend_below(fig, ncol=6)
    return fig
