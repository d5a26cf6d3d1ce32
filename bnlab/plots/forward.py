"""Figures for lecture 2, the forward pass. The data come from :mod:`bnlab.lessons.forward`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bnlab.functional import batchnorm_forward
from bnlab.lessons.forward import BatchDependence, ExplorerResult, eps_gain, variance_precision

__all__ = ["plot_batch_dependence", "plot_eps_effect", "plot_forward_explorer", "plot_normalization_stages",
           "plot_variance_precision"]

_FEATURE_COLORS = ("tab:blue", "tab:orange")
_STAGE_TITLES = {"x": "input x", "xhat": r"normalized $\hat x$", "y": r"output $y = \gamma \hat x + \beta$"}
_STAGE_UNITS = {"x": "value (input units)", "xhat": r"value (units of $\sqrt{\sigma^2+\epsilon}$)",
                "y": r"value (output units: $\gamma\hat x + \beta$)"}
# Fixed margins instead of tight_layout: the explorer redraws on every slider move.
_EXPLORER_LAYOUT = {"left": 0.06, "right": 0.985, "bottom": 0.08, "top": 0.86, "wspace": 0.3, "hspace": 0.5}


def _stage_histogram(ax: Axes, values: np.ndarray, title: str, unit: str, labels: tuple[str, ...]) -> None:
    """Histogram of each column of ``values`` (m, C) on shared bins: one colour per feature."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12 * max(1.0, abs(low)):  # every value equal (gamma = 0): one visible bar
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, int(np.clip(len(values) // 3, 5, 40)) + 1)
    for column, (label, color) in enumerate(zip(labels, _FEATURE_COLORS)):
        ax.hist(values[:, column], bins=bins, alpha=0.6, color=color, label=label)
    ax.set_title(title)
    ax.set_xlabel(unit)
    ax.set_ylabel("count (examples)")


def plot_normalization_stages(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> Figure:
    """Histograms of two features of x (N, 2): raw, normalized (xhat), and after gamma and beta."""
    out, cache = batchnorm_forward(x, gamma, beta)
    stages = {"x": x, "xhat": cache.xhat, "y": out}
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    for ax, (name, values) in zip(axes, stages.items()):
        _stage_histogram(ax, values, _STAGE_TITLES[name], _STAGE_UNITS[name], ("feature 0", "feature 1"))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper right", ncol=2)
    fig.suptitle(f"Batch norm per feature: γ = {np.round(gamma, 2)}, β = {np.round(beta, 2)}", x=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def plot_forward_explorer(result: ExplorerResult) -> Figure:
    """The forward explorer's figure: histograms of x, xhat and y, and the two features before and after.

    Top row: the input, one small panel per feature with its own bins and axis (feature 1 is about a hundred
    times narrower than feature 0, so shared bins would show it as a single bar); then xhat and y, both
    features on shared bins (their scales are comparable by construction). Bottom row: feature 1 against
    feature 0 before (x) and after (y) batch norm, with their correlations, and a panel of the per-feature
    numbers.
    """
    fig = plt.figure(figsize=(11, 6.4))
    grid = fig.add_gridspec(2, 3, **_EXPLORER_LAYOUT)
    labels = tuple(f"feature {c}" for c in range(2))
    inputs = grid[0, 0].subgridspec(2, 1, hspace=1.0)
    for feature, (label, color) in enumerate(zip(labels, _FEATURE_COLORS)):
        ax = fig.add_subplot(inputs[feature])
        values = result.stages["x"][:, feature]
        low, high = float(values.min()), float(values.max())
        bins = np.linspace(low, high if high > low else low + 1.0, int(np.clip(len(values) // 3, 5, 40)) + 1)
        ax.hist(values, bins=bins, alpha=0.6, color=color, label=label)
        ax.set_title(f"input x, {label}", fontsize=10)
        if feature == 1:  # one x label for both (the panel above would run into this title)
            ax.set_xlabel("value (input units)", fontsize=9)
        ax.set_ylabel("count", fontsize=9)
    for column, name in ((1, "xhat"), (2, "y")):
        ax = fig.add_subplot(grid[0, column])
        _stage_histogram(ax, result.stages[name], _STAGE_TITLES[name], _STAGE_UNITS[name], labels)
    fig.legend(*ax.get_legend_handles_labels(), loc="upper right", ncol=2)

    for column, name in enumerate(("x", "y")):
        ax = fig.add_subplot(grid[1, column])
        values = result.stages[name]
        ax.scatter(values[:, 0], values[:, 1], s=8, alpha=0.6, color="tab:purple")
        corr = result.corr[name]
        corr_text = "undefined (constant feature)" if corr is None else f"{corr:+.3f}"
        ax.set_title(f"{'before' if name == 'x' else 'after'} BN: correlation {corr_text}", fontsize=10)
        unit = "input units" if name == "x" else "output units"
        ax.set_xlabel(f"feature 0 ({unit})")
        ax.set_ylabel(f"feature 1 ({unit})")

    ax = fig.add_subplot(grid[1, 2])
    ax.axis("off")
    def cells(values: np.ndarray) -> str:
        return "".join(f"{round(float(v), 3) + 0.0:12.3f}" for v in values)  # + 0.0 turns -0.0 into 0.0

    rows = [f"{'':9}{'feature 0':>12}{'feature 1':>12}"]
    for name in ("x", "xhat", "y"):
        rows.append(f"{'mean ' + name:9}" + cells(result.mean[name]))
        rows.append(f"{'std  ' + name:9}" + cells(result.std[name]))
    rows.append(f"{'gain':9}" + cells(result.gain))
    ax.text(0.0, 1.0, "\n".join(rows), family="monospace", fontsize=9, va="top", transform=ax.transAxes)
    ax.set_title("per feature (gain = 1/√(σ²+ε))", fontsize=10)

    fig.suptitle(f"m = {result.m} examples, ε = {result.eps:.0e}; feature 0: γ = {result.gamma[0]:.2f}, "
                 f"β = {result.beta[0]:.2f}; feature 1: γ = 1, β = 0", x=0.36)
    return fig


def plot_eps_effect(eps: float = 1e-5) -> Figure:
    """What eps does to features holding the values 1 - s, 1, 1 + s, against their standard deviation.

    Left: the normalized value at mean + one standard deviation (ideal 1). Right: the measured gain,
    output deviation / input deviation (:func:`bnlab.lessons.forward.eps_gain`), with its caps 1/sqrt(eps)
    (eps inside the root) and 1/eps (eps outside, the catalogued mistake ``eps_outside_sqrt``).
    """
    gains = eps_gain(np.logspace(-9, 0, 200), eps)
    std = gains["std"]
    fig, (value_ax, gain_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    inside_label, outside_label = r"$\epsilon$ inside: $(x-\mu)/\sqrt{\sigma^2+\epsilon}$", \
        r"$\epsilon$ outside: $(x-\mu)/(\sigma+\epsilon)$"
    value_ax.semilogx(std, gains["inside"] * std, label=inside_label)
    value_ax.semilogx(std, gains["outside"] * std, "--", label=outside_label)
    value_ax.set_ylabel(r"normalized value at $\mu + \sigma$")
    value_ax.set_title("output size of a feature with spread σ")
    gain_ax.loglog(std, gains["inside"])
    gain_ax.loglog(std, gains["outside"], "--")
    gain_ax.axhline(1 / np.sqrt(eps), color="gray", lw=0.8, ls=":")
    gain_ax.text(std[0], 1 / np.sqrt(eps) * 1.6, r"cap $1/\sqrt{\epsilon}$", color="gray")
    gain_ax.axhline(1 / eps, color="gray", lw=0.8, ls=":")
    gain_ax.text(std[0], 1 / eps * 1.6, r"cap $1/\epsilon$", color="gray")
    gain_ax.set_ylim(top=1 / eps * 10)
    gain_ax.set_ylabel("gain = output deviation / input deviation")
    gain_ax.set_title("how much a deviation is amplified")
    for ax in (value_ax, gain_ax):
        ax.axvline(np.sqrt(eps), color="gray", lw=0.8)
        ax.set_xlabel("feature's standard deviation σ (input units)")
    value_ax.text(np.sqrt(eps) * 1.3, 0.05, r"$\sigma=\sqrt{\epsilon}$", color="gray")
    fig.legend(*value_ax.get_legend_handles_labels(), loc="upper center", ncol=2)
    fig.suptitle(f"ε = {eps:g}", x=0.06, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def plot_variance_precision(offsets: np.ndarray | None = None, n: int = 10_000, seed: int = 0) -> Figure:
    """Relative error of one-pass and two-pass float32 variances of N(offset, 1) data, against the offset.

    The data are :func:`bnlab.lessons.forward.variance_precision`'s (same arguments). One-pass variances that
    came out negative are crossed, those that came out exactly 0 circled (both are relative error >= 1).
    """
    data = variance_precision(offsets, n, seed)
    offsets = data["offsets"]
    fig, ax = plt.subplots(figsize=(11, 4))
    floor = 1e-9  # a relative error of exactly 0 cannot be drawn on a log axis
    ax.loglog(offsets, np.maximum(data["one_pass_error"], floor), "o-", label=r"one pass: $E[x^2]-E[x]^2$")
    ax.loglog(offsets, np.maximum(data["two_pass_error"], floor), "s-", label=r"two passes: $E[(x-\mu)^2]$")
    negative = data["one_pass"] < 0
    if negative.any():
        ax.loglog(offsets[negative], data["one_pass_error"][negative], "rx", ms=10, mew=2,
                  label="one pass came out negative (NaN after the root)")
    zero = data["one_pass"] == 0
    if zero.any():
        ax.loglog(offsets[zero], data["one_pass_error"][zero], "o", ms=11, mfc="none", mec="red", mew=2,
                  label=r"one pass came out exactly 0 (gain $1/\sqrt{\epsilon}$)")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.text(offsets[0], 1.4, "error = 100%", color="gray")
    ax.set_xlabel("mean of the data (its standard deviation is 1)")
    ax.set_ylabel("relative error of the float32 variance")
    ax.set_title(f"Variance of {n:,} float32 values")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_batch_dependence(result: BatchDependence) -> Figure:
    """One example's training-mode output over random batches: its distribution per m, and its spread.

    Left: histograms of :attr:`BatchDependence.outputs` for each batch size, with the output population
    statistics would give. Right: the spread against m on log-log axes, with a 1/sqrt(m) line through the
    largest m.
    """
    sizes = sorted(result.outputs)
    fig, (hist_ax, spread_ax) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
    everything = np.concatenate([result.outputs[m] for m in sizes])
    bins = np.linspace(np.percentile(everything, 0.1), np.percentile(everything, 99.9), 80)
    for m in sizes:
        hist_ax.hist(result.outputs[m], bins=bins, histtype="step", lw=1.5, density=True,
                     label=f"m = {m}: spread {result.spreads[m]:.3f}")
    hist_ax.axvline(result.population_output, color="black", lw=1, ls="--",
                    label=f"population statistics: {result.population_output:.3f}")
    hist_ax.set_xlabel(f"output of the example x = {result.x0:g} (standard units)")
    hist_ax.set_ylabel("density over batches")
    hist_ax.set_title("the same example, normalized in different random batches")
    hist_ax.legend(loc="upper left", fontsize=8)

    spreads = np.array([result.spreads[m] for m in sizes])
    spread_ax.loglog(sizes, spreads, "o-", label=f"measured (fitted slope {result.slope:.2f})")
    reference = spreads[-1] * np.sqrt(sizes[-1] / np.array(sizes, dtype=float))
    spread_ax.loglog(sizes, reference, ":", color="gray", label=r"$\propto 1/\sqrt{m}$ (slope −0.5)")
    spread_ax.set_xlabel("batch size m")
    spread_ax.set_ylabel("spread (std over batches)")
    spread_ax.set_title("the noise shrinks like 1/√m")
    spread_ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
