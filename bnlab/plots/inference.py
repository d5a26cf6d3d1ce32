"""Figures for lecture 5: running averages of a synthetic batch statistic (the dashboard), the batch variances a
trained network's layer was fed and what its running variance kept (measured lag), and its running statistics as
the moving average left them, bias-corrected, and recomputed (precise BN).

The data come from :mod:`bnlab.lessons.inference`; these functions only draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bnlab.lessons.inference import SETTLE_STEPS, MeasuredLag, PreciseBNStudy, RunningAverages, synthetic_truth

__all__ = ["plot_measured_lag", "plot_precise_bn", "plot_running_averages"]

# Fixed margins (no tight_layout): the dashboard redraws on every slider move. Room below for the legend.
_WITH_LEGEND_BELOW = {"left": 0.08, "right": 0.98, "bottom": 0.33, "top": 0.87}
_TWO_PANELS = {"left": 0.08, "right": 0.98, "bottom": 0.14, "top": 0.9, "wspace": 0.15}
_MEASURED = {"left": 0.07, "right": 0.98, "bottom": 0.30, "top": 0.86, "wspace": 0.22}


def plot_running_averages(traces: RunningAverages) -> Figure:
    """A synthetic batch statistic over training steps, its truth, and three running averages of it.

    Shows the raw exponential moving average started at PyTorch's initial value, the same average
    bias-corrected, and the equal-weight average (``momentum=None``); the legend (below the axes) gives each
    one's final value and the truth's first and last value.
    """
    t, name = traces.step, traces.statistic
    fig, ax = plt.subplots(figsize=(8.6, 4.2))
    fig.subplots_adjust(**_WITH_LEGEND_BELOW)
    marker = {"marker": "o", "ms": 3} if t.size <= 40 else {}
    ax.plot(t, traces.batch, ".", color="0.72", ms=3, label=f"batch {name}s (fed to the EMA)")
    ax.plot(t, traces.truth, color="black", lw=1.2,
            label=f"truth (synthetic): {traces.truth[0]:.2f} at t = 1, {traces.truth[-1]:.2f} at the end", **marker)
    ax.plot([t[0]], [traces.truth[0]], "o", color="black", ms=4)
    ax.plot(np.concatenate([[0], t]), np.concatenate([[traces.initial], traces.ema]), color="C0", lw=2,
            label=f"EMA from {traces.initial:g} (PyTorch): {traces.ema[-1]:.2f}", **marker)
    ax.plot(t, traces.corrected, "--", color="C1", lw=1.8,
            label=f"EMA bias-corrected: {traces.corrected[-1]:.2f}", **marker)
    ax.plot(t, traces.equal, "-.", color="C2", lw=1.5,
            label=f"equal weights (momentum=None): {traces.equal[-1]:.2f}", **marker)

    curves = np.concatenate([traces.truth, traces.ema, traces.corrected, traces.equal, [traces.initial]])
    low, high = np.percentile(traces.batch, [1, 99]) if t.size > 1 else (traces.batch[0], traces.batch[0])
    low, high = min(low, curves.min()), max(high, curves.max())
    pad = 0.08 * (high - low) if high > low else 0.5
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlim(0, max(t[-1], 1) * 1.02)
    ax.set_xlabel("training step t (batches seen)")
    ax.set_ylabel(f"{name} of one channel")
    share = traces.initial_share[-1]
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    steps = f"{t[-1]} step" + ("s" if t[-1] > 1 else "")
    ax.set_title(f"momentum {traces.momentum:g}, {steps}: the raw EMA still holds (1 - momentum)^t = "
                 f"{share:.2g} of its initial value {traces.initial:g}\n"
                 f"synthetic truth: drift {traces.drift:g}, settling time {SETTLE_STEPS} steps; batches of "
                 f"{traces.batch_size}", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, fontsize=8.5, frameon=False)
    return fig


def plot_measured_lag(lag: MeasuredLag) -> Figure:
    """Two panels for one layer of a trained network (values are means over its units).

    Left: the batch variance the layer was fed at each training step, the running variance PyTorch kept
    (replayed from those values), the same bias-corrected, the equal-weight average (momentum=None), the
    precise statistics of the untrained and of the trained network, and the dashboard's synthetic truth for
    comparison. Right: the weight each step's batch has in the final value of three averages, with their mean
    age.
    """
    t = lag.step
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.3), gridspec_kw={"width_ratios": [1.6, 1]})
    fig.subplots_adjust(**_MEASURED)
    left.plot(t, lag.batch, ".", color="0.65", ms=3, label="batch variance fed at step t")
    left.plot(np.concatenate([[0], t]), np.concatenate([[1.0], lag.ema]), color="C0", lw=2,
              label=f"EMA at {lag.momentum:g} from 1 (stored): {lag.ema[-1]:.2f}")
    left.plot(t, lag.corrected, "--", color="C1", lw=1.8, label=f"EMA bias-corrected: {lag.corrected[-1]:.2f}")
    left.plot(t, lag.equal, "-.", color="C2", lw=1.5,
              label=f"equal weights (momentum=None in training): {lag.equal[-1]:.2f}")
    left.plot(t, synthetic_truth(t.size, "variance", 0.5), ":", color="0.3", lw=1.2,
              label="the dashboard's synthetic truth (drift 0.5)")
    left.plot([0], [lag.untrained], "s", color="black", ms=6, mfc="white",
              label=f"precise, untrained network: {lag.untrained:.2f}")
    left.plot([t[-1]], [lag.precise], "*", color="black", ms=11, label=f"precise, trained network: {lag.precise:.2f}")
    left.set_xlim(-5, t[-1] * 1.04)
    left.set_xlabel("training step t")
    left.set_ylabel(f"variance, layer {lag.layer + 1} (mean over units)")
    left.set_title(f"layer {lag.layer + 1}, seed {lag.seed}: what the running variance was fed, and what it kept",
                   fontsize=10)
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8, frameon=False)

    styles = {0: ("C1", "--"), 1: ("C3", "-"), 2: ("C2", "-.")}
    for index, (label, weights) in enumerate(lag.weights.items()):
        color, style = styles[index % 3]
        right.plot(t, weights, style, color=color, lw=1.6, label=f"{label}: mean age {lag.mean_age(label):.1f}")
    right.set_yscale("log")
    right.set_ylim(1e-4, 0.2)
    right.set_xlim(0, t[-1] * 1.02)
    right.set_xlabel("training step k of the batch")
    right.set_ylabel("weight in the final value")
    right.set_title(f"how much each batch counts at step {t[-1]}", fontsize=10)
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=8, frameon=False)
    return fig


def plot_precise_bn(studies: Sequence[PreciseBNStudy], layer: int = 0) -> Figure:
    """One panel per study: each unit's running variance of batch norm layer ``layer``, as stored (the EMA) and
    bias-corrected, against the precise (recomputed) one, with the line the initial value's share alone
    predicts (no lag): stored = f * 1 + (1 - f) * precise. The test accuracies are not repeated here: lecture 5
    prints them in a table."""
    if not studies:
        raise ValueError("plot_precise_bn needs at least one PreciseBNStudy")
    fig, axes = plt.subplots(1, len(studies), figsize=(4.6 * len(studies), 4.0), squeeze=False, sharex=True,
                             sharey=True)
    fig.subplots_adjust(**_TWO_PANELS)
    for ax, study in zip(axes[0], studies):
        precise = study.running_var["precise"][layer]
        share = study.initial_share
        line = np.array([0.0, precise.max() * 1.1])
        ax.plot(line, line, color="black", lw=0.8, label="= precise")
        ax.plot(line, share * 1.0 + (1 - share) * line, ":", color="C0", lw=1.2,
                label=f"no lag: f·1 + (1 - f)·precise, f = {share:.2f}")
        ax.plot(precise, study.running_var["ema"][layer], "o", color="C0", ms=3.5, alpha=0.8,
                label="stored EMA (running_var)")
        ax.plot(precise, study.running_var["corrected"][layer], "x", color="C1", ms=4, alpha=0.9,
                label="EMA bias-corrected")
        ax.set_title(f"momentum {study.momentum:g}: f = (1 - {study.momentum:g})^{study.steps} = {share:.2g}",
                     fontsize=10)
        ax.set_xlabel(f"precise running_var (layer {layer + 1}, one dot per unit)")
        ax.set_xlim(0, line[-1])
        ax.set_ylim(0, line[-1])
    axes[0][0].set_ylabel("running variance: stored or bias-corrected")
    axes[0][0].legend(loc="upper left", fontsize=8)
    return fig
