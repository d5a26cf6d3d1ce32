"""Figures for lecture 2, the forward pass."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bnlab.functional import batchnorm_forward
from bnlab.gradcheck import rel_error
from bnlab.mistakes import forward_with
from bnlab.numerics import one_pass_variance, two_pass_variance


def plot_normalization_stages(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> Figure:
    """Histograms of two channels of x (N, 2): raw, normalized (xhat), and after gamma and beta."""
    out, cache = batchnorm_forward(x, gamma, beta)
    stages = [("input x", x), (r"normalized $\hat x$", cache.xhat), (r"output $\gamma \hat x + \beta$", out)]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    for ax, (title, values) in zip(axes, stages):
        for channel, color in zip(range(2), ("tab:blue", "tab:orange")):
            ax.hist(values[:, channel], bins=30, alpha=0.6, color=color, label=f"channel {channel}")
        ax.set_title(title)
        ax.set_xlabel("value (input units)" if values is x else "value")
        ax.set_ylabel("count")
    axes[0].legend()
    fig.suptitle(f"Batch norm per channel: γ = {np.round(gamma, 2)}, β = {np.round(beta, 2)}")
    fig.tight_layout()
    return fig


def plot_eps_effect(eps: float = 1e-5) -> Figure:
    """Normalized value of a point one standard deviation above the mean, against the channel's spread.

    Each channel holds the three values 1 - s, 1, 1 + s; the curves come from
    :func:`bnlab.functional.batchnorm_forward` (eps inside the square root, right) and from the catalogued
    mistake ``eps_outside_sqrt`` (:func:`bnlab.mistakes.forward_with`).
    """
    spreads = np.logspace(-7, 0, 200)
    x = np.stack([1 - spreads, np.ones_like(spreads), 1 + spreads])  # (3, channels)
    std = spreads * np.sqrt(2 / 3)
    ones, zeros = np.ones(len(spreads)), np.zeros(len(spreads))
    inside = batchnorm_forward(x, ones, zeros, eps)[0][2] * np.sqrt(2 / 3)  # value at mean + std, ideal 1
    outside = forward_with("eps_outside_sqrt", x, eps=eps)[2] * np.sqrt(2 / 3)
    fig, ax = plt.subplots()
    ax.semilogx(std, inside, label=r"$(x-\mu)/\sqrt{\sigma^2+\epsilon}$ (right)")
    ax.semilogx(std, outside, "--", label=r"$(x-\mu)/(\sigma+\epsilon)$ (eps outside)")
    ax.axvline(np.sqrt(eps), color="gray", lw=0.8)
    ax.text(np.sqrt(eps) * 1.3, 0.1, r"$\sigma=\sqrt{\epsilon}$", color="gray")
    ax.set_xlabel("channel standard deviation σ (input units)")
    ax.set_ylabel(r"normalized value at $\mu + \sigma$")
    ax.set_title(f"ε = {eps:g} switches normalization off smoothly for near-constant channels")
    ax.legend(loc="center right")
    return fig


def plot_unbiased_variance_error(batch_sizes: tuple[int, ...] = (2, 3, 4, 6, 8, 16, 32, 64, 128),
                                 seed: int = 0) -> Figure:
    """Relative error of the output when the training forward uses the unbiased (m - 1) variance, against m."""
    rng = np.random.default_rng(seed)
    errors = []
    for m in batch_sizes:
        x = rng.standard_normal((m, 8)) * 3 + 5
        errors.append(rel_error(forward_with("unbiased_variance", x), batchnorm_forward(x, np.ones(8), np.zeros(8))[0]))
    fig, ax = plt.subplots()
    ax.loglog(batch_sizes, errors, "o-")
    ax.set_xlabel("values per channel m")
    ax.set_ylabel("relative error of the output")
    ax.set_title("Unbiased variance in the training forward: invisible at large m, large at small m")
    return fig


def plot_variance_precision(offsets: np.ndarray | None = None, n: int = 10_000, seed: int = 0) -> Figure:
    """Relative error of one-pass and two-pass float32 variances of N(offset, 1) data, against the offset."""
    offsets = np.logspace(0, 5, 21) if offsets is None else offsets
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, 1))
    one_pass, two_pass, negative = [], [], []
    for offset in offsets:
        x64 = noise + offset
        exact = x64.var()
        x32 = x64.astype(np.float32)
        v1, v2 = float(one_pass_variance(x32)[0]), float(two_pass_variance(x32)[0])
        one_pass.append(abs(v1 - exact) / exact)
        two_pass.append(abs(v2 - exact) / exact)
        negative.append(v1 < 0)
    fig, ax = plt.subplots()
    floor = 1e-9  # a relative error of exactly 0 cannot be drawn on a log axis
    ax.loglog(offsets, np.maximum(one_pass, floor), "o-", label=r"one pass: $E[x^2]-E[x]^2$")
    ax.loglog(offsets, np.maximum(two_pass, floor), "s-", label=r"two passes: $E[(x-\mu)^2]$")
    neg = np.array(negative)
    if neg.any():
        ax.loglog(offsets[neg], np.maximum(np.array(one_pass)[neg], floor), "rx", ms=10,
                  label="one pass came out negative")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("mean of the data (its standard deviation is 1)")
    ax.set_ylabel("relative error of the float32 variance")
    ax.set_title(f"Variance of {n:,} float32 values")
    ax.legend()
    return fig
