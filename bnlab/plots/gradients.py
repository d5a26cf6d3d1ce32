"""Figures for lectures 3 and 4: gradient checking, the Jacobian, and speed."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bnlab.functional import batchnorm_backward, batchnorm_forward
from bnlab.gradcheck import numerical_gradient, rel_error
from bnlab.jacobian import channel_jacobian


def plot_gradient_check_vs_step(steps: np.ndarray | None = None, shape: tuple[int, int] = (5, 3),
                                seed: int = 0) -> Figure:
    """Relative error of a centred-difference dx against the exact one, in float64 and float32, against h."""
    steps = np.logspace(-9, -1, 17) if steps is None else steps
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.uniform(0.5, 2, shape[1]), rng.standard_normal(shape[1])
    dout = rng.standard_normal(shape)
    _, cache = batchnorm_forward(x, gamma, beta)
    exact, _, _ = batchnorm_backward(dout, cache)
    curves = {}
    for dtype in (np.float64, np.float32):
        g, b = gamma.astype(dtype), beta.astype(dtype)
        curves[dtype.__name__] = [
            rel_error(exact, numerical_gradient(lambda v: batchnorm_forward(v, g, b)[0], x.astype(dtype), dout, h))
            for h in steps
        ]
    fig, ax = plt.subplots()
    for name, errors in curves.items():
        ax.loglog(steps, errors, "o-", label=name)
    ax.axhline(1e-7, color="gray", lw=0.8, ls="--")
    ax.text(steps[0], 1.5e-7, "pass threshold 1e-7", color="gray", fontsize=9)
    ax.set_xlabel("finite-difference step h")
    ax.set_ylabel("relative error of numerical dx")
    ax.set_title("Finite differences: float64 reaches 1e-10, float32 never passes")
    ax.legend()
    return fig


def plot_jacobian(x: np.ndarray, gamma: float = 1.0, eps: float = 1e-5) -> Figure:
    """Heat map of the Jacobian d out / d x of one channel holding the values ``x`` (m,), entries annotated."""
    jacobian = channel_jacobian(x, gamma, eps)
    m = jacobian.shape[0]
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    limit = np.abs(jacobian).max()
    image = ax.imshow(jacobian, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for (i, j), value in np.ndenumerate(jacobian):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=10)
    ax.set_xticks(range(m), [f"$x_{k + 1}$" for k in range(m)])
    ax.set_yticks(range(m), [f"$y_{k + 1}$" for k in range(m)])
    ax.set_xlabel("input")
    ax.set_ylabel("output")
    ax.grid(False)
    ax.set_title(r"Jacobian $\partial y_i / \partial x_j$ of one channel")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def plot_timings(timings: dict[str, float], shape: tuple[int, ...], what: str = "forward + backward") -> Figure:
    """Horizontal bars of milliseconds per implementation; ``what`` names the timed work in the axis label."""
    fig, ax = plt.subplots(figsize=(7, 2.4))
    names = list(timings)
    ax.barh(names, [timings[n] for n in names], color=["#a8c4e0", "#4a78a8", "#b07a2a"][: len(names)])
    for i, name in enumerate(names):
        ax.text(timings[name], i, f" {timings[name]:.2f} ms", va="center")
    ax.invert_yaxis()
    ax.set_xlabel(f"{what} time (ms, median, one thread)")
    ax.set_title(f"float32 batch of shape {shape}")
    ax.set_xlim(0, max(timings.values()) * 1.3)
    return fig
