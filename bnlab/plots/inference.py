"""Figures for lecture 5: how running statistics follow a batch statistic that drifts during training."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bnlab.running_stats import moving_average


def plot_running_average_lag(steps: int = 300, noise: float = 0.3, seed: int = 0) -> Figure:
    """Running means under several momenta tracking a batch mean that drifts from 0 to 1 during training.

    The batch mean at step t is ``t / steps`` plus Gaussian noise of std ``noise`` (batch-to-batch sampling
    noise); the true statistic of the final network is 1.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(1, steps + 1)
    batch_means = t / steps + noise * rng.standard_normal(steps)
    fig, ax = plt.subplots()
    ax.plot(t, batch_means, ".", color="lightgray", ms=3, label="batch means")
    for momentum, style in ((0.1, "-"), (0.01, "--"), (0.001, ":")):
        running, trace = 0.0, []
        for value in batch_means:
            running = moving_average(running, value, momentum)
            trace.append(running)
        ax.plot(t, trace, style, lw=1.8, label=f"PyTorch momentum {momentum}" + (" (= Keras 0.99)" if momentum == 0.01 else ""))
    cumulative = np.cumsum(batch_means) / t
    ax.plot(t, cumulative, "-.", lw=1.5, label="momentum=None (equal weights)")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.text(steps * 0.72, 1.03, "statistic of the final network", fontsize=9)
    ax.set_xlabel("training step")
    ax.set_ylabel("running mean of one channel")
    ax.set_ylim(-0.8, 2.2)
    ax.set_title("Moving averages trade noise for lag; equal weights average over the whole drift")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    return fig
