"""Figures of lecture 13 (batch norm across processes): local against full-batch statistics, the agreement of
synchronized BN with the full batch, and what synchronizing costs.

Colours: rank 0 blue, rank 1 orange; synchronized BN green and local BN (each rank's own statistics, the
control) red; a prediction is a black line.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bnlab.lessons.distributed import (
    QUANTITIES,
    LocalStatistics,
    StepCosts,
    predicted_mean_spread,
)
from bnlab.plots._seed_runs import figure, legend_below

__all__ = ["plot_agreement", "plot_local_statistics", "plot_split_statistics", "plot_step_costs"]

RANK_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
VARIANT_COLORS = {"sync": "tab:green", "local": "tab:red"}
FLOAT_EPS = {"float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps)}
_ZERO = 1e-18  # where an exact 0 is drawn on a log axis


def plot_local_statistics(stats: LocalStatistics, spread: Mapping[int, float], total: int) -> Figure:
    """Three panels: (a) each rank's mean deviation ``(mean_k - mean) / std`` per channel, as histograms;
    (b) each rank's variance over the full batch's, per channel; (c) the RMS mean deviation of a rank holding
    n of the ``total`` examples (``spread``: {n: RMS}, from :func:`bnlab.lessons.distributed.spread_by_share`, over
    channels and random splits) against the sampling prediction ``sqrt((N - n) / (n (N - 1)))``."""
    fig, axes = figure(1, 3, 12.0, 3.6, left=0.06, right=0.98, bottom=0.27, top=0.86, wspace=0.3)
    a, b, c = axes[0]
    deviation, ratio = stats.mean_deviation(), stats.var_ratio()
    bins_a = np.linspace(-np.abs(deviation).max(), np.abs(deviation).max(), 25)
    bins_b = np.linspace(ratio.min(), ratio.max(), 25)
    for rank in range(len(stats.sizes)):
        color = RANK_COLORS[rank % len(RANK_COLORS)]
        label = f"rank {rank} ({stats.sizes[rank]} examples)"
        a.hist(deviation[rank], bins=bins_a, color=color, alpha=0.5, label=label)
        b.hist(ratio[rank], bins=bins_b, color=color, alpha=0.5, label=label)
    a.axvline(0, color="gray", lw=0.8)
    a.set(title="(a) local mean minus full-batch mean", xlabel="(mean_k - mean) / std, per channel",
          ylabel="channels")
    b.axvline(1, color="gray", lw=0.8)
    b.set(title="(b) local variance / full-batch variance", xlabel="var_k / var, per channel", ylabel="channels")
    shares = np.array(sorted(spread))
    grid = np.arange(1, total)
    c.plot(grid, [predicted_mean_spread(int(n), total) for n in grid], color="black", lw=1.2,
           label="prediction, sampling without replacement")
    c.plot(shares, [spread[int(n)] for n in shares], "o", color="tab:gray",
           label="measured (RMS over channels and splits)")
    c.set(title=f"(c) a rank holding n of {total} examples", xlabel="n, examples on the rank",
          ylabel="RMS of (mean_k - mean) / std", ylim=(0, None))
    legend_below(fig, ncol=4)
    return fig


def plot_split_statistics(stats: LocalStatistics) -> Figure:
    """The dashboard's figure: a batch split into W shares of n examples (all ranks pooled). (a) Histogram of
    every rank's and channel's mean deviation ``(mean_k - mean) / std``, with the predicted RMS
    ``sqrt((N - n) / (n (N - 1)))`` and the measured one as vertical lines at plus and minus their value;
    (b) histogram of the variance ratios ``var_k / var``."""
    fig, axes = figure(1, 2, 10.0, 3.6, left=0.07, right=0.98, bottom=0.27, top=0.86, wspace=0.25)
    a, b = axes[0]
    world, share, total = len(stats.sizes), stats.sizes[0], sum(stats.sizes)
    deviation, ratio = stats.mean_deviation().ravel(), stats.var_ratio().ravel()
    reach = max(float(np.abs(deviation).max()), 1e-3)
    a.hist(deviation, bins=np.linspace(-reach, reach, 31), color="tab:blue", alpha=0.6)
    predicted = predicted_mean_spread(share, total) if total > 1 else 0.0
    measured = float(np.sqrt(np.mean(deviation ** 2)))
    for sign in (-1, 1):
        a.axvline(sign * predicted, color="black", lw=1.2, label="predicted RMS" if sign > 0 else None)
        a.axvline(sign * measured, color="tab:blue", lw=1.2, ls="--", label="measured RMS" if sign > 0 else None)
    a.set(title=f"(a) {world} process(es) x {share} examples: local mean - full mean",
          xlabel="(mean_k - mean) / std, per rank and channel", ylabel="count")
    high = max(float(ratio.max()), 1.001)
    b.hist(ratio, bins=np.linspace(min(float(ratio.min()), 0.999), high, 31), color="tab:orange", alpha=0.6)
    b.axvline(1, color="gray", lw=0.8)
    b.set(title="(b) local variance / full-batch variance", xlabel="var_k / var, per rank and channel",
          ylabel="count")
    legend_below(fig, ncol=2)
    return fig


def plot_agreement(errors: Mapping[str, Mapping[str, float]]) -> Figure:
    """Relative error against batch norm on the full batch, per quantity (``out``, ``dx``, ``dgamma``, ...),
    one bar per setting of ``errors`` ({label: {quantity: error}}): labels containing "local" red, the others
    (synchronized) in shades of green, "float32" ones hatched; on a log axis with float32's and float64's machine
    epsilon. An exact 0 is drawn at the bottom of the axis and marked "0"."""
    fig, axes = figure(1, 1, 10.0, 3.8, left=0.08, right=0.98, bottom=0.3, top=0.9)
    ax = axes[0, 0]
    labels = list(errors)
    width = 0.8 / len(labels)
    x = np.arange(len(QUANTITIES))
    synced = [label for label in labels if "local" not in label]
    greens = plt.get_cmap("Greens")(np.linspace(0.9, 0.45, max(len(synced), 1)))
    for index, label in enumerate(labels):
        values = np.array([errors[label][q] for q in QUANTITIES], dtype=float)
        color = VARIANT_COLORS["local"] if "local" in label else greens[synced.index(label)]
        alpha = 1.0
        shown = np.where(values > 0, values, _ZERO)
        positions = x + (index - (len(labels) - 1) / 2) * width
        ax.bar(positions, shown, width=width * 0.9, color=color, alpha=alpha, label=label,
               hatch="//" if "float32" in label else None, edgecolor="white")
        for position, value in zip(positions, values):
            if value == 0:
                ax.text(position, _ZERO * 3, "0", ha="center", va="bottom", fontsize=8)
    for (name, eps), style in zip(FLOAT_EPS.items(), (":", "--")):
        ax.axhline(eps, color="gray", lw=0.8, ls=style, label=f"{name} machine epsilon ({eps:.1e})")
    ax.set_yscale("log")
    ax.set_ylim(_ZERO, 10)
    ax.set_xticks(x, [q.replace("running_", "running ") for q in QUANTITIES])
    ax.set(title="Batch norm on two processes against batch norm on the whole batch",
           ylabel="relative error (max |a - b| / max |b|)")
    legend_below(fig, ncol=3)
    return fig


def plot_step_costs(costs: StepCosts) -> Figure:
    """Two panels: (a) one data-parallel training step with synchronized and with local BN (rank 0): each
    repeat's time as a dot, and the medians of the time spent outside and inside all-reduce calls as stacked
    bars; (b) the all-reduce calls of one step, split into the gradients' one and batch norm's forward and
    backward ones."""
    fig, axes = figure(1, 2, 11.0, 3.6, left=0.07, right=0.98, bottom=0.27, top=0.86, wspace=0.3)
    a, b = axes[0]
    for index, variant in enumerate(("local", "sync")):
        outside, inside = costs.median_outside_ms(variant), costs.median_inside_ms(variant)
        a.bar(index, outside, width=0.5, color="tab:gray", alpha=0.5,
              label="median time outside all-reduce (computing)" if index == 0 else None)
        a.bar(index, inside, bottom=outside, width=0.5, color=VARIANT_COLORS[variant], alpha=0.5,
              label=None if index == 0 else "median time inside all-reduce calls")
        times = costs.ms[variant]
        jitter = np.linspace(-0.15, 0.15, len(times))
        a.plot(index + jitter, times, "o", ms=3, alpha=0.7, color=VARIANT_COLORS[variant],
               label="each step (total)" if index == 1 else None)
    a.set_xticks([0, 1], ["local BN\n(own statistics)", "synchronized BN"])
    a.set(title="(a) one training step (rank 0)", ylabel="milliseconds", ylim=(0, None), xlim=(-0.6, 1.6))
    forward = {v: costs.calls[v][0] for v in ("local", "sync")}
    step = {v: costs.calls[v][1] for v in ("local", "sync")}
    gradients = {v: 1 if step[v] > 0 else 0 for v in step}
    backward = {v: step[v] - forward[v] - gradients[v] for v in step}
    bottom = np.zeros(2)
    for name, counts, color in (("parameter gradients", gradients, "tab:gray"),
                                ("BN forward", forward, "tab:green"), ("BN backward", backward, "tab:olive")):
        heights = np.array([counts["local"], counts["sync"]], dtype=float)
        b.bar([0, 1], heights, bottom=bottom, color=color, label=name, width=0.5)
        bottom += heights
    b.set_xticks([0, 1], ["local BN", "synchronized BN"])
    b.set(title=f"(b) all-reduce calls per step ({costs.bn_layers} BN layers)", ylabel="calls")
    legend_below(fig, ncol=3)
    return fig
