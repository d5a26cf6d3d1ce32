"""Figures for lecture 5: running averages of a batch statistic, and a trained network's running statistics as
the moving average left them, bias-corrected, and recomputed (precise BN).

The data come from :mod:`bnlab.lessons.inference`; these functions only draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bnlab.lessons.inference import PreciseBNStudy, RunningAverages

__all__ = ["plot_precise_bn", "plot_running_averages"]

# Fixed margins (no tight_layout): the dashboard redraws on every slider move. Room on the right for the legend.
_WITH_LEGEND_RIGHT = {"left": 0.09, "right": 0.63, "bottom": 0.15, "top": 0.86}
_TWO_PANELS = {"left": 0.08, "right": 0.98, "bottom": 0.14, "top": 0.84, "wspace": 0.15}


def plot_running_averages(traces: RunningAverages) -> Figure:
    """A batch statistic over training steps, its truth, and three running averages of it.

    Shows the raw exponential moving average started at PyTorch's initial value, the same average
    bias-corrected, and the equal-weight average (``momentum=None``); the legend gives each one's final value.
    """
    t, name = traces.step, traces.statistic
    fig, ax = plt.subplots(figsize=(8.6, 3.6))
    fig.subplots_adjust(**_WITH_LEGEND_RIGHT)
    marker = {"marker": "o", "ms": 3} if t.size <= 40 else {}
    ax.plot(t, traces.batch, ".", color="0.72", ms=3, label=f"batch {name}s (fed to the EMA)")
    ax.plot(t, traces.truth, color="black", lw=1.2, label=f"truth: {traces.truth[-1]:.2f} at the end", **marker)
    ax.plot(np.concatenate([[0], t]), np.concatenate([[traces.initial], traces.ema]), color="C0", lw=2,
            label=f"EMA from {traces.initial:g} (PyTorch): {traces.ema[-1]:.2f}", **marker)
    ax.plot(t, traces.corrected, "--", color="C1", lw=1.8,
            label=f"EMA bias-corrected: {traces.corrected[-1]:.2f}", **marker)
    ax.plot(t, traces.equal, "-.", color="C2", lw=1.5,
            label=f"equal weights: {traces.equal[-1]:.2f}\n(momentum=None)", **marker)

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
                 f"{share:.2g}\nof its initial value {traces.initial:g}; drift {traces.drift:g}, "
                 f"batches of {traces.batch_size}", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8.5)
    return fig


def plot_precise_bn(studies: Sequence[PreciseBNStudy], layer: int = 0) -> Figure:
    """One panel per study: each unit's stored running variance of batch norm layer ``layer`` against the
    precise (recomputed) one, raw and bias-corrected, with the line the initial value's share predicts."""
    if not studies:
        raise ValueError("plot_precise_bn needs at least one PreciseBNStudy")
    fig, axes = plt.subplots(1, len(studies), figsize=(4.6 * len(studies), 4.0), squeeze=False, sharex=True,
                             sharey=True)
    fig.subplots_adjust(**_TWO_PANELS)
    for ax, study in zip(axes[0], studies):
        precise = study.running_var["precise"][layer]
        share = study.initial_share
        line = np.array([0.0, precise.max() * 1.1])
        ax.plot(line, line, color="black", lw=0.8, label="stored = precise")
        ax.plot(line, share * 1.0 + (1 - share) * line, ":", color="C0", lw=1.2,
                label=f"f·1 + (1 - f)·precise, f = {share:.2f}")
        ax.plot(precise, study.running_var["ema"][layer], "o", color="C0", ms=3.5, alpha=0.8, label="EMA, raw")
        ax.plot(precise, study.running_var["corrected"][layer], "x", color="C1", ms=4, alpha=0.9,
                label="EMA bias-corrected")
        acc = study.accuracy
        ax.set_title(f"momentum {study.momentum:g}: f = (1 - {study.momentum:g})^{study.steps} = {share:.2g}\n"
                     f"test acc. EMA {acc['ema']:.3f}, corrected {acc['corrected']:.3f}, "
                     f"precise {acc['precise']:.3f}", fontsize=9.5)
        ax.set_xlabel(f"precise running_var (layer {layer + 1}, one dot per unit)")
        ax.set_xlim(0, line[-1])
        ax.set_ylim(0, line[-1])
    axes[0][0].set_ylabel("running_var as stored")
    axes[0][0].legend(loc="upper left", fontsize=8)
    return fig
