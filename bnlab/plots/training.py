"""Figures of training runs recorded by :func:`bnlab.train.train`: curves, activation percentiles, gradients,
and lecture 1's spread of pre-activations over examples and units.

Where a function takes a :class:`~bnlab.lessons.problem.UnitRecord` instead of a ``TrainResult``, it draws that
record's training-mode percentiles (batch norm using the batch statistics of the test digits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bnlab._validation import check_index
from bnlab.lessons.problem import UnitRecord
from bnlab.train import TrainResult

__all__ = [
    "SIGMOID_SATURATION",
    "plot_accuracy_panels",
    "plot_gradient_norms",
    "plot_layer_percentiles",
    "plot_preactivation_spread",
    "plot_test_accuracy",
    "plot_unit_percentiles",
]

SIGMOID_SATURATION = 3.0  # |z| beyond which sigmoid'(z) < 0.05: the unit passes almost no gradient


def _saturation_lines(ax: Axes, saturation: float | None) -> None:
    if saturation is not None:
        for sign in (-1, 1):
            ax.axhline(sign * saturation, color="tab:red", ls="--", lw=0.8,
                       label="sigmoid saturates" if sign > 0 else None)


def _finish_panels(fig: Figure, first: Axes, ylabel: str, title: str) -> Figure:
    """A row of percentile panels: y label on the first, one legend below them all, the title on top."""
    first.set_ylabel(ylabel)
    handles, labels = first.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_layer_percentiles(result: TrainResult | UnitRecord, title: str,
                           saturation: float | None = SIGMOID_SATURATION,
                           ylim: tuple[float, float] | None = None) -> Figure:
    """One panel per hidden layer: 15th-85th percentile band and median of the nonlinearity's input over steps,
    **pooled over all the layer's units** (``result.percentiles``, shape (K, L, 3): a TrainResult's are
    measured in eval mode, a UnitRecord's in training mode).

    A pooled band mixes two spreads: how one unit's input varies from example to example, and how the units
    differ from each other. :func:`plot_unit_percentiles` shows one unit, as the paper does.
    ``saturation`` draws dashed lines at +-saturation (the sigmoid's flat region); None for other activations.
    """
    percentiles = result.percentiles  # (records, layers, 3)
    layers = percentiles.shape[1]
    fig, axes = plt.subplots(1, layers, figsize=(2.6 * layers + 0.6, 3.2), sharey=True, squeeze=False)
    for layer, ax in enumerate(axes[0]):
        low, mid, high = percentiles[:, layer].T
        ax.fill_between(result.steps, low, high, alpha=0.3, color="tab:blue", label="15th-85th percentile")
        ax.plot(result.steps, mid, color="tab:blue", label="median")
        _saturation_lines(ax, saturation)
        ax.set_title(f"hidden layer {layer + 1}")
        ax.set_xlabel("training step")
        if ylim is not None:
            ax.set_ylim(*ylim)
    return _finish_panels(fig, axes[0][0], "sigmoid input z\n(all units of the layer pooled)", title)


def plot_unit_percentiles(results: Mapping[str, TrainResult | UnitRecord], layer: int = -1,
                          title: str = "One sigmoid input of the last hidden layer (as in the paper's figure 1)",
                          saturation: float | None = SIGMOID_SATURATION,
                          ylim: tuple[float, float] | None = None,
                          units: Mapping[str, int] | None = None) -> Figure:
    """One panel per labelled run: the 15th, 50th and 85th percentiles over the test set of the input of
    **one unit** of hidden layer ``layer`` (default: the last), against training step.

    This is what figure 1(b, c) of Ioffe & Szegedy (2015) plots. A ``TrainResult`` shows its tracked unit
    (``config.tracked_unit``, eval mode, from ``result.unit_percentiles`` (K, L, 3)); a ``UnitRecord`` shows
    unit ``units[label]`` in training mode (from ``record.per_unit`` (K, L, C, 3)), so ``units`` must name one
    for each UnitRecord.
    """
    if not results:
        raise ValueError("results must hold at least one labelled TrainResult or UnitRecord, got none")
    units = dict(units or {})
    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results) + 0.6, 3.2), sharey=True,
                             squeeze=False)
    for ax, (label, result) in zip(axes[0], results.items()):
        values = result.per_unit if isinstance(result, UnitRecord) else result.unit_percentiles
        num_layers = values.shape[1]
        index = check_index(layer, "layer", num_layers, f" (run {label!r} has {num_layers} hidden layers)")
        if isinstance(result, UnitRecord):
            unit, count = units.get(label), values.shape[2]
            if not isinstance(unit, int) or isinstance(unit, bool) or not 0 <= unit < count:
                raise ValueError(f"units[{label!r}] must name a unit in [0, {count - 1}] of the UnitRecord, got "
                                 f"{unit!r}")
            values = values[:, :, unit]
        else:
            unit = result.config.tracked_unit
        low, mid, high = values[:, index].T
        for line, level, style in ((high, "85th", ":"), (mid, "50th", "-"), (low, "15th", "--")):
            ax.plot(result.steps, line, color="tab:blue", ls=style, label=f"{level} percentile")
        _saturation_lines(ax, saturation)
        ax.set_title(f"{label}\n(hidden layer {index + 1}, unit {unit})")
        ax.set_xlabel("training step")
        if ylim is not None:
            ax.set_ylim(*ylim)
    return _finish_panels(fig, axes[0][0], "sigmoid input z of one unit", title)


def _seed_label(label: str, runs: list[TrainResult]) -> str:
    seeds = ", ".join(str(run.config.seed) for run in runs)
    return f"{label} (seed{'s' if len(runs) > 1 else ''} {seeds})"


def _accuracy_lines(ax: Axes, results: Mapping[str, TrainResult | Sequence[TrainResult]],
                    colors: Mapping[str, str] | None = None) -> None:
    """Every run of every label as its own line (one legend entry per label), the chance level, x axis."""
    for label, runs in results.items():
        runs = [runs] if isinstance(runs, TrainResult) else list(runs)
        if not runs:
            raise ValueError(f"label {label!r} has no runs")
        color = (colors or {}).get(label)
        for i, result in enumerate(runs):
            line, = ax.plot(result.steps, result.test_accuracy, marker="o", ms=2.5, lw=1.2, color=color,
                            label=_seed_label(label, runs) if i == 0 else None)
            color = line.get_color()
    ax.axhline(0.1, color="gray", lw=0.8, ls=":")
    ax.text(1.0, 0.03, "chance (10 classes): 0.1", color="gray", fontsize=8, ha="right",
            transform=ax.get_yaxis_transform())
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")


def plot_test_accuracy(results: Mapping[str, TrainResult | Sequence[TrainResult]],
                       title: str = "Test accuracy") -> Figure:
    """Test accuracy against training step, one colour per label, a marker at each recorded step.

    A label may map to one run or to a sequence of runs (seeds): each seed is drawn as its own line in the
    label's colour, so no seed is averaged away; the legend (right of the axes) names each label's seeds.
    """
    if not results:
        raise ValueError("results must hold at least one labelled run, got none")
    fig, ax = plt.subplots(figsize=(8.0, 3.6))
    _accuracy_lines(ax, results)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_panels(panels: Mapping[str, Mapping[str, TrainResult | Sequence[TrainResult]]],
                         title: str = "Test accuracy") -> Figure:
    """One panel per setting (panel title -> its labelled runs, as for :func:`plot_test_accuracy`), side by side.

    A label keeps its colour in every panel (e.g. "no BN" and "BN"); each panel's legend names its seeds.
    """
    if not panels or any(not runs for runs in panels.values()):
        raise ValueError("panels must map at least one panel title to a non-empty mapping of labelled runs")
    labels = list(dict.fromkeys(label for runs in panels.values() for label in runs))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.4), sharey=True, squeeze=False)
    for ax, (panel, runs) in zip(axes[0], panels.items()):
        _accuracy_lines(ax, runs, colors)
        ax.set_title(panel, fontsize=10)
        ax.legend(loc="center right", fontsize=7)
    axes[0][0].set_ylabel("test accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_gradient_norms(results: Mapping[str, TrainResult], record: int = 0,
                        title: str = "Gradient norm per layer at initialization") -> Figure:
    """Bars of each weight layer's gradient norm at one record (default: step 0), one group per run, log scale.

    A legend names the runs when there are several; a single run's label is not drawn (say it in the title).
    """
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
    if len(results) > 1:
        ax.legend()
    return fig


def plot_preactivation_spread(within: np.ndarray, between: np.ndarray,
                              title: str = "Spread of the sigmoid inputs per layer") -> Figure:
    """Two lines over the hidden layers, log scale: the spread of a unit's input over examples (``within``)
    and the spread of the units' mean inputs (``between``), both (L,) as from
    :func:`bnlab.lessons.problem.preactivation_spread`.
    """
    within, between = np.asarray(within, dtype=float), np.asarray(between, dtype=float)
    if within.ndim != 1 or within.shape != between.shape or within.size == 0:
        raise ValueError(f"within and between must be two 1-d arrays of the same length (one value per layer), "
                         f"got shapes {within.shape} and {between.shape}")
    layers = np.arange(1, within.size + 1)
    fig, ax = plt.subplots()
    ax.plot(layers, within, marker="o", label="within a unit: std over the test digits (RMS over units)")
    ax.plot(layers, between, marker="s", label="between units: std of the units' mean inputs")
    ax.set_yscale("log")
    ax.set_xticks(layers)
    ax.set_xlabel("hidden layer (input side on the left)")
    ax.set_ylabel("standard deviation of z")
    ax.set_title(title)
    ax.legend(loc="lower left")
    return fig
