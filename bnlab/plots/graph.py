"""The computational graph of training-mode batch norm, drawn with the local derivative on every edge."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

# node: (x, y, label); the labels use the names of bnlab.functional's code (std, inv) or their usual symbols
# (mu for mu, x_c for xc, sigma^2 for var, x-hat for xhat)
NODES = {
    "x": (0.0, 0.0, r"$x$"),
    "mu": (1.8, 1.4, r"$\mu=\frac{1}{m}\sum x$"),
    "xc": (3.6, 0.0, r"$x_c = x-\mu$"),
    "sq": (5.0, 1.4, r"$x_c^2$"),
    "var": (7.5, 1.4, r"$\sigma^2=\frac{1}{m}\sum x_c^2$"),
    "std": (10.4, 1.4, r"$\mathrm{std}=\sqrt{\sigma^2+\epsilon}$"),
    "inv": (13.2, 1.4, r"$\mathrm{inv} = 1/\mathrm{std}$"),
    "xhat": (13.2, 0.0, r"$\hat x = x_c\cdot\mathrm{inv}$"),
    "out": (15.8, 0.0, r"$y=\gamma\hat x+\beta$"),
    "gamma": (15.1, -1.3, r"$\gamma$"),
    "beta": (16.5, -1.3, r"$\beta$"),
}
# the forward's step (bnlab.functional._train_forward and the notebooks' plain forward) and variable per node
CODE = {"mu": "1: mu", "xc": "2: xc", "sq": "3: xc**2", "var": "3: var", "std": "4: std", "inv": "5: inv",
        "xhat": "6: xhat", "out": "7: out"}
# nodes holding one value per channel: broadcast over the batch in the forward, summed over it in the backward
PER_CHANNEL = ("mu", "var", "std", "inv")
PARAMETERS = ("gamma", "beta")
STYLES = {  # face and edge colour of a node's box
    "example": ("#eef4fb", "#4a78a8"),
    "channel": ("#e9f5e9", "#3d8a3d"),
    "parameter": ("#fbf3e6", "#b07a2a"),
}
# (from, to, local derivative d to / d from)
EDGES = [
    ("x", "xc", r"$1$"),
    ("x", "mu", r"$\frac{1}{m}$"),
    ("mu", "xc", r"$-1$"),
    ("xc", "sq", r"$2x_c$"),
    ("sq", "var", r"$\frac{1}{m}$"),
    ("var", "std", r"$\frac{1}{2\,\mathrm{std}}$"),
    ("std", "inv", r"$-\frac{1}{\mathrm{std}^2}$"),
    ("inv", "xhat", r"$x_c$"),
    ("xc", "xhat", r"$\mathrm{inv}$"),
    ("xhat", "out", r"$\gamma$"),
    ("gamma", "out", r"$\hat x$"),
    ("beta", "out", r"$1$"),
]


def draw_batchnorm_graph() -> Figure:
    """Forward runs left to right; the backward multiplies the edge labels right to left and sums at forks.

    Under each node: its step number and variable name in :func:`bnlab.functional._train_forward` (and in
    lecture 2's plain forward), e.g. ``4: std``.

    Blue nodes hold one value per example (m per channel: an (N, C) array in a fully connected layer), green ones
    one value per channel (shape (1, C): broadcast in the forward, so their gradients sum over the batch),
    orange ones are the learned parameters.
    """
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(13, 3.9))
    artists = {}
    for name, (x, y, label) in NODES.items():
        kind = "channel" if name in PER_CHANNEL else "parameter" if name in PARAMETERS else "example"
        face, edge = STYLES[kind]
        style = dict(boxstyle="round,pad=0.35", fc=face, ec=edge)
        artists[name] = ax.text(x, y, label, ha="center", va="center", fontsize=11, bbox=style, zorder=3)
        if name in CODE:  # step number and variable name in the code: above the top row, below the bottom one
            above = y > 0 or name == "out"  # (gamma and beta's edges arrive under out)
            ax.text(x, y + (0.36 if above else -0.36), CODE[name], ha="center", va="bottom" if above else "top",
                    fontsize=8.5, family="monospace", color="#666", zorder=3)
    fig.canvas.draw()  # lay the boxes out so the arrows can be clipped to their outlines
    for start, end, derivative in EDGES:
        (x0, y0, _), (x1, y1, _) = NODES[start], NODES[end]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=5,
                    arrowprops=dict(arrowstyle="-|>", color="#555", lw=1.2, shrinkA=1, shrinkB=1,
                                    patchA=artists[start].get_bbox_patch(), patchB=artists[end].get_bbox_patch()))
        if x0 == x1:  # vertical edge: label to its right
            position, align = ((x0 + 0.15, (y0 + y1) / 2)), "left"
        elif y0 == y1:  # horizontal edge: label above
            position, align = ((x0 + x1) / 2, y0 + 0.12), "center"
        else:  # diagonal edge: label beside its middle
            position, align = ((x0 + x1) / 2 - 0.25, (y0 + y1) / 2), "right"
        ax.text(*position, derivative, ha=align, va="bottom" if y0 == y1 else "center", fontsize=11,
                color="#a03030", zorder=4)
    legend = [Patch(fc=STYLES["example"][0], ec=STYLES["example"][1], label="one value per example, (N, C)"),
              Patch(fc=STYLES["channel"][0], ec=STYLES["channel"][1],
                    label="one value per channel, (1, C): broadcast forward, summed backward"),
              Patch(fc=STYLES["parameter"][0], ec=STYLES["parameter"][1], label="learned parameter, (C,)")]
    ax.legend(handles=legend, loc="lower left", fontsize=9, frameon=False)
    ax.set_xlim(-0.6, 17.4)
    ax.set_ylim(-2.2, 2.2)
    ax.axis("off")
    ax.set_title("Batch norm as a computational graph; red: the local derivative on each edge; "
                 "grey: the step and variable in the code")
    return fig
