"""Figures of training runs recorded by :func:`bnlab.train.train`: curves, activation percentiles, gradients."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bnlab.train import TrainResult

SIGMOID_SATURATION = 3.0  # |z| beyond which sigmoid'(z) < 0.05: the unit passes almost no gradient


def plot_layer_percentiles(result: TrainResult, title: str, saturation: float | None = SIGMOID_SATURATION,
                           ylim: tuple[float, float] | None = None) -> Figure:
    """One panel per hidden layer: 15th-85th percentile band and median of the nonlinearity's input over steps.

    ``saturation`` draws dashed lines at +-saturation (the sigmoid's flat region); None for other activations.
    """
    percentiles = result.percentiles  # (records, layers, 3)
    layers = percentiles.shape[1]
    fig, axes = plt.subplots(1, layers, figsize=(2.6 * layers + 0.6, 3.0), sharey=True, squeeze=False)
    for layer, ax in enumerate(axes[0]):
        low, mid, high = percentiles[:, layer].T
        ax.fill_between(result.steps, low, high, alpha=0.3, color="tab:blue", label="15th-85th percentile")
        ax.plot(result.steps, mid, color="tab:blue", label="median")
        if saturation is not None:
            for sign in (-1, 1):
                ax.axhline(sign * saturation, color="tab:red", ls="--", lw=0.8,
                           label="sigmoid saturates" if sign > 0 else None)
        ax.set_title(f"hidden layer {layer + 1}")
        ax.set_xlabel("training step")
        if ylim is not None:
            ax.set_ylim(*ylim)
    axes[0][0].set_ylabel("input of the nonlinearity")
    axes[0][-1].legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_test_accuracy(results: Mapping[str, TrainResult], title: str = "Test accuracy") -> Figure:
    """Test accuracy against training step, one line per labelled run."""
    fig, ax = plt.subplots()
    for label, result in results.items():
        ax.plot(result.steps, result.test_accuracy, marker="o", ms=3, label=label)
    ax.axhline(0.1, color="gray", lw=0.8, ls=":")
    ax.text(0, 0.12, "chance (10 classes)", color="gray", fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_gradient_norms(results: Mapping[str, TrainResult], record: int = 0,
                        title: str = "Gradient norm per layer at initialization") -> Figure:
    """Bars of each weight layer's gradient norm at one record (default: step 0), one group per run, log scale."""
    fig, ax = plt.subplots()
    width = 0.8 / len(results)
    for i, (label, result) in enumerate(results.items()):
        names = result.layer_names
        positions = np.arange(len(names)) + i * width
        ax.bar(positions, result.grad_norms[record], width=width, label=label)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_yscale("log")
    ax.set_xlabel("weight layer (input side on the left)")
    ax.set_ylabel("gradient norm (Frobenius)")
    ax.set_title(title)
    ax.legend()
    return fig
