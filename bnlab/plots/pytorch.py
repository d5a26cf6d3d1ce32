"""Lecture 6's figure: bnlab.nn's plain batch norm against torch's fused kernel, several batch shapes."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def plot_torch_batch_norm_timings(timings: Mapping[tuple[int, ...], Mapping[str, float]]) -> Figure:
    """One panel per batch shape: bars of forward + backward milliseconds per implementation, the ratio on top.

    Args:
        timings: ``{shape: {implementation: ms}}`` as returned per shape by
            :func:`bnlab.timing.time_torch_batch_norms`; the first implementation is the one divided by the last
            in each panel's title.
    """
    if not timings:
        raise ValueError("plot_torch_batch_norm_timings needs timings for at least one shape, got none")
    fig, axes = plt.subplots(1, len(timings), figsize=(3.4 * len(timings), 3.0), squeeze=False)
    colors = ["#4a78a8", "#b07a2a", "#a8c4e0"]
    for ax, (shape, result) in zip(axes[0], timings.items()):
        names = list(result)
        values = [result[name] for name in names]
        short = [name.split(" (")[0] for name in names]  # "bnlab.nn (Python, closed form)" -> "bnlab.nn"
        ax.bar(range(len(names)), values, color=colors[: len(names)])
        for i, value in enumerate(values):
            ax.text(i, value, f"{value:.2g} ms", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), short, fontsize=8)
        ax.set_ylim(0, max(values) * 1.25)
        if ax is axes[0][0]:
            ax.set_ylabel("ms per forward + backward")
        ax.set_title(f"{shape}\n{short[0]} / {short[-1]} = {values[0] / values[-1]:.1f}", fontsize=10)
        ax.grid(axis="x", visible=False)
    fig.suptitle("float32 training-mode batch norm, one thread: best median of a few live runs", fontsize=11)
    fig.tight_layout()
    return fig
