"""Figures of lecture 8 (batch size): the normalization batch against the SGD batch, BN against LN and GN."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
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
)

__all__ = ["TEST_STATISTICS", "plot_batch_size_sweep", "plot_nbs_by_sgd_batch", "plot_norm_batch_size"]

# what "BN at test time" can mean -> (recorded quantity, words)
TEST_STATISTICS = {
    "population": ("final_accuracy", "population statistics (eval())"),
    "batch": ("batch_stats_accuracy", "each test batch's own statistics (no eval())"),
}


def _log2_axis(ax: Axes, xs) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(xs), [str(int(x)) for x in xs])
    ax.minorticks_off()


def _final_loss(runs: Mapping[int, SeedRuns]) -> dict[int, SeedRuns]:
    """The same runs with ``final_train_loss`` (last record's mean training-mode minibatch loss) added."""
    return {key: SeedRuns(seeds=each.seeds,
                          arrays=tuple({**arrays, "final_train_loss": arrays["train_loss"][-1]}
                                       for arrays in each.arrays))
            for key, each in runs.items()}


@experiment_style
def plot_norm_batch_size(bn: Mapping[int, SeedRuns], others: Mapping[str, SeedRuns], batch_size: int,
                         selected: int | None = None, test_statistics: str = "population",
                         pinned: tuple[str, Mapping[int, SeedRuns]] | None = None) -> Figure:
    """At SGD batch ``batch_size``, three panels.

    Left: final test accuracy against the normalization batch size (NBS, log2 axis), BN tested with
    ``test_statistics`` (``"population"`` or ``"batch"``: test batches of NBS examples normalized by their
    own statistics), LayerNorm and GroupNorm (no batch: flat). Middle: the final training loss (training
    mode, what SGD minimized) against NBS. Right: training loss over training at the ``selected`` NBS.
    ``pinned`` = (label, {nbs: BN runs}) is overlaid in black on the left panel.
    """
    if test_statistics not in TEST_STATISTICS:
        raise ValueError(f"test_statistics must be one of {sorted(TEST_STATISTICS)}, got {test_statistics!r}")
    key, words = TEST_STATISTICS[test_statistics]
    fig, axes = figure(1, 3, 13.5, 4.2, left=0.05, right=0.99, bottom=0.3, top=0.86, wspace=0.28)
    acc, final_loss, curves = axes[0]
    xs = sorted(bn)
    seed_points(acc, bn, COLORS["BN"], f"BN, tested with {words}", name=key, jitter=0.06, log_x=True)
    if pinned is not None:
        seed_points(acc, pinned[1], COLORS["pinned"], f"pinned: {pinned[0]}", name=key, log_x=True, ls="--")
    for label, runs in others.items():
        acc.plot(xs, np.full(len(xs), runs.scored_accuracy()), color=COLORS[label], label=label)
        for value in runs.final_accuracies():
            acc.plot(xs[-1] * 1.3, value, "o", color=COLORS[label], ms=3.5, clip_on=False)
    if selected is not None:
        acc.axvline(selected, color="black", lw=0.8, ls=":")
    _log2_axis(acc, xs)
    chance_line(acc)
    acc.set(xlabel="normalization batch (examples, log2)", ylabel="test accuracy after training",
            title=f"Test accuracy, SGD batch {batch_size}")

    with_loss = _final_loss(bn)
    seed_points(final_loss, with_loss, COLORS["BN"], None, name="final_train_loss", jitter=0.06, log_x=True)
    for label, runs in _final_loss(others).items():
        final_loss.plot(xs, np.full(len(xs), np.nanmean(runs.values("final_train_loss"))), color=COLORS[label])
    final_loss.axhline(np.log(10), color="gray", lw=0.8, ls=":")
    log_or_note(final_loss, np.concatenate([each.values("final_train_loss") for each in with_loss.values()]),
                "no training loss recorded")
    _log2_axis(final_loss, xs)
    final_loss.set(xlabel="normalization batch (examples, log2)", ylabel="training loss (cross-entropy)",
                   title="Training loss at the end (training mode)")

    if selected is not None and selected in bn:
        seed_curves(curves, bn[selected], "train_loss", COLORS["BN"], None)
        for label, runs in others.items():
            seed_curves(curves, runs, "train_loss", COLORS[label], None)
        curves.set_title(f"Training loss over training, BN at NBS {selected}")
    else:
        curves.set_title("Training loss over training")
    curves.axhline(np.log(10), color="gray", lw=0.8, ls=":")
    shown = [bn[selected]] if selected in bn else []
    log_or_note(curves, np.concatenate([each.values("train_loss").ravel() for each in [*shown, *others.values()]]),
                "no training loss recorded")
    curves.set(xlabel="training step (SGD updates)", ylabel="training loss (cross-entropy)")
    legend_below(fig, ncol=4)
    fig.suptitle("dots: seeds; lines: seed means; dotted: chance (0.1) and ln 10 (a constant guess)", fontsize=10)
    return fig


@experiment_style
def plot_nbs_by_sgd_batch(by_batch: Mapping[int, Mapping[int, SeedRuns]]) -> Figure:
    """Final test accuracy of BN against the normalization batch, one line per SGD batch size: does the
    small-NBS collapse depend on the SGD batch?"""
    fig, axes = figure(1, 1, 7.0, 4.2, left=0.1, right=0.97, bottom=0.3, top=0.9)
    ax = axes[0][0]
    shades = ("#9ecae1", "#4292c6", "#2171b5", "#08306b")
    for shade, (batch_size, bn) in zip(shades, sorted(by_batch.items())):
        seed_points(ax, bn, shade, f"SGD batch {batch_size}", jitter=0.05, log_x=True)
    _log2_axis(ax, sorted({nbs for bn in by_batch.values() for nbs in bn}))
    chance_line(ax)
    ax.set(xlabel="normalization batch (examples, log2)", ylabel="test accuracy after training",
           title="BN: the normalization batch, at every SGD batch (600 updates)")
    legend_below(fig, ncol=4)
    return fig


@experiment_style
def plot_batch_size_sweep(sweeps: Mapping[str, Mapping[int, SeedRuns]],
                          title: str = "SGD batch size, same number of updates (600)") -> Figure:
    """Final test accuracy against the SGD batch size (log2 axis), one colour per method, a dot per seed."""
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
