"""Figures for lectures 3 and 4: gradient checking, the Jacobian, and speed."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bnlab.gradcheck import DEFAULT_TOLERANCE
from bnlab.jacobian import channel_jacobian
from bnlab.lessons.backward import FiniteDifferenceStudy, finite_difference_study


def plot_gradient_check_vs_step(study: FiniteDifferenceStudy | None = None) -> Figure:
    """Error of a centred-difference dx against the step h, float64 and float32, with the model K h^2 + eps/h.

    ``study`` comes from :func:`bnlab.lessons.backward.finite_difference_study` (computed with its defaults if
    omitted). Measured errors are dots, circled where every entry of the numerical dx is exactly 0 (relative
    error 1: the step was lost to rounding); the model of each dtype is a dashed line (eps is the dtype's
    machine epsilon), its predicted best step a triangle; the gray line is
    :func:`bnlab.gradcheck.check_forward_backward`'s tolerance.
    """
    study = finite_difference_study() if study is None else study
    fig, ax = plt.subplots(figsize=(9.0, 4.0), layout="constrained")
    colors = {"float64": "#4a78a8", "float32": "#b07a2a"}
    fine = np.logspace(np.log10(study.steps[0]), np.log10(study.steps[-1]), 200)
    for name, errors in study.errors.items():
        color = colors.get(name, "black")
        model = study.curvature * fine**2 + study.machine_eps[name] / fine
        ax.loglog(study.steps, errors, "o", color=color, ms=4, label=f"{name}, measured")
        all_zero = study.zero_fraction[name] == 1.0
        if all_zero.any():  # x +- h rounded back to x (or the outputs did not change): nothing was measured
            ax.loglog(study.steps[all_zero], errors[all_zero], "o", ms=9, mfc="none", mec=color, mew=1.5,
                      label=f"{name}: numerical dx exactly 0")
        ax.loglog(fine, model, "--", color=color, lw=1, label=f"{name}, model")
        h_star, floor = study.predicted[name]
        ax.plot([h_star], [floor], "v", color=color, ms=9, mec="black", label=f"{name}, predicted best step")
    ax.axhline(DEFAULT_TOLERANCE, color="gray", lw=0.8, ls=":")
    ax.text(study.steps[0], DEFAULT_TOLERANCE * 1.6, f"gradient-check tolerance {DEFAULT_TOLERANCE:.0e}",
            color="gray", fontsize=9)
    ax.set_ylim(top=3.0)
    ax.set_xlabel("finite-difference step h")
    ax.set_ylabel("relative error of numerical dx\n(rel_error against the exact dx)")
    ax.set_title("Centred differences: truncation $K h^2$ meets rounding $\\epsilon_\\mathrm{mach}/h$ "
                 f"(K = {study.curvature:.3f})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
    fig.colorbar(image, ax=ax, shrink=0.8, label=r"$\partial y_i / \partial x_j$")
    fig.tight_layout()
    return fig
