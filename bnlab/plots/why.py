"""Figures of lecture 11 (why does batch norm work?): noisy BN, internal covariate shift measured through
gradients, the loss landscape along the gradient, the loss after one step at initialization, and rank collapse.

Colours as in lectures 7-9: the plain net (He init) red, BN blue, LayerNorm green; BN's two halves alone
(centring; scaling by the std, by the RMS) orange, brown and purple. The noise of section 1 is drawn by line style: none solid, mild dashed,
strong dotted. Every seed is its own line; a diverged seed's curve ends in an x.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bnlab.experiments import SeedRuns
from bnlab.lessons.why import Collapse, OneStepProbes, distribution_shift
from bnlab.plots._seed_runs import (
    COLORS,
    chance_line,
    experiment_style,
    figure,
    legend_below,
    log_or_note,
    positive,
    seed_curves,
)

__all__ = ["NET_COLORS", "NORMALIZE_COLORS", "plot_collapse", "plot_ics", "plot_landscape", "plot_noisy_bn",
           "plot_one_step"]

NET_COLORS = {"no BN": COLORS["no norm, He init"], "BN": COLORS["BN"]}
NORMALIZE_COLORS = {"none": COLORS["no norm, He init"], "center": "tab:orange", "scale": "tab:brown",
                    "rms": "tab:purple", "batch": COLORS["BN"], "layer": COLORS["LayerNorm"]}
NORMALIZE_LABELS = {"none": "no norm", "center": "centring only", "scale": "scaling by std",
                    "rms": "scaling by RMS", "batch": "BN", "layer": "LayerNorm"}
_NOISE_STYLES = {"": "-", "mild noise": "--", "noise": ":"}


def _net_style(label: str) -> dict:
    """Colour from the net (the label's start: "no BN" or "BN"), line style from the noise (its end)."""
    net, _, noise = label.partition(" + ")
    return {"color": NET_COLORS.get(net, "tab:gray"), "ls": _NOISE_STYLES.get(noise, "-.")}


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over ``window`` steps (NaN-aware; the first values average what there is)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    total = np.cumsum(np.where(finite, values, 0.0))
    count = np.cumsum(finite)
    total[window:] = total[window:] - total[:-window]
    count[window:] = count[window:] - count[:-window]
    with np.errstate(all="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@experiment_style
def plot_noisy_bn(nets: Mapping[str, SeedRuns], unit_nets: tuple[str, ...] = ("no BN", "BN", "BN + noise"),
                  window: int = 10, control: str = "no BN, frozen") -> Figure:
    """Four panels for :func:`bnlab.lessons.why.run_nets`'s ``{label: runs}`` (labels "no BN", "BN", each
    optionally followed by " + mild noise" or " + noise"; ``control``, the frozen plain net, only as a
    reference line). Top left: the training loss (mean training-mode minibatch loss since the previous record,
    noise included), a line per seed, an x where a seed diverged. Top right: test accuracy (eval mode: the noise
    is off; the running statistics training left). Bottom left: how far the hidden units' input distributions
    move per step on the fixed probe batch, |mu_t - mu_{t-1}| / sigma_{t-1}, mean over units and layers,
    running mean over ``window`` steps (log axis; dotted: the frozen plain net's move from one minibatch to the
    next, minibatch sampling alone). Bottom right: one unit (unit 0 of hidden layer 5) of seed 0 of each net of
    ``unit_nets`` over the last 20 steps: the median of its input over each step's minibatch (a hollow dot for
    a noisy net) and a bar from the 15th to the 85th percentile, with its own legend."""
    fig, axes = figure(2, 2, 12.5, 7.6, left=0.07, right=0.99, bottom=0.14, top=0.95, wspace=0.22, hspace=0.42)
    loss_ax, acc_ax = axes[0]
    shift_ax, unit_ax = axes[1]
    losses = []
    for label, runs in nets.items():
        if label == control:
            continue
        style = _net_style(label)
        seed_curves(loss_ax, runs, "train_loss", label=label, **style)
        seed_curves(acc_ax, runs, "test_accuracy", label=None, diverged_at=0.1, **style)
        losses.append(runs.values("train_loss").ravel())
        with warnings.catch_warnings():  # a diverged seed's rows are all NaN: nothing to average, not an error
            warnings.simplefilter("ignore", RuntimeWarning)
            shift = np.nanmean(runs.values("probe_mean_shift"), axis=2)  # (S, T - 1)
        for row in shift:
            shift_ax.plot(np.arange(2, row.size + 2), _smooth(row, window), lw=1.2, alpha=0.9, **style)
    log_or_note(loss_ax, np.concatenate(losses), "no training loss to draw")
    loss_ax.axhline(np.log(10), color="gray", lw=0.8, ls=":")
    loss_ax.set(xlabel="training step (SGD updates)", ylabel="training loss (dotted: ln 10)",
                title="Training loss (noise on, as SGD sees it)")
    chance_line(acc_ax)
    acc_ax.set(xlabel="training step (SGD updates)", ylabel="test accuracy (eval mode, noise off)",
               title="Test accuracy (running statistics as training left them)")
    title = f"Move per step on the probe batch ({window}-step mean"
    if control in nets:
        shift_ax.axhline(float(np.nanmean(distribution_shift(nets[control], where="minibatch")[0])), color="gray",
                         lw=0.8, ls=":")
        title += "; dotted: sampling alone"
    shift_ax.set_yscale("log")
    shift_ax.set(xlabel="training step (SGD updates)", ylabel="|mean move| / std, per step (log)", title=title + ")")
    last = 20
    handles, names = [], []
    for offset, label in enumerate(unit_nets):
        if label not in nets:
            continue
        bands = nets[label].values("unit_percentiles")[0]  # (T, 3) of seed 0
        steps = np.arange(1, bands.shape[0] + 1)[-last:] + 0.27 * (offset - 1)
        low, mid, high = bands[-last:].T
        style = _net_style(label)
        handles.append(unit_ax.errorbar(steps, mid, yerr=[mid - low, high - mid], fmt="o", ms=3, lw=1.0, capsize=0,
                                        color=style["color"], mfc="white" if style["ls"] != "-" else style["color"]))
        names.append(label)
    unit_ax.set(xlabel="training step (SGD updates)", ylabel="input of unit 0, hidden layer 5",
                title=f"One unit's input, last {last} steps (seed 0; dot: median, bar: 15-85th pct.)")
    legend_below(fig, ncol=6)
    if handles:
        unit_ax.legend(handles, names, fontsize=8, loc="upper left", frameon=False, ncol=len(handles))
    return fig


@experiment_style
def plot_ics(nets: Mapping[str, SeedRuns], labels: tuple[str, ...] = ("no BN", "BN")) -> Figure:
    """Internal covariate shift measured through gradients (:func:`bnlab.lessons.why.gradient_ics`), for the
    probed nets ``labels``. Left: ||G - G'|| / ||G|| at each probe, median over the weight layers 2..L+1, a line
    per seed. Middle: cos(G, G'), the same way. Right: ||G - G'|| / ||G|| per layer, median over the probes
    after initialization, a line per seed."""
    later_steps = []
    fig, axes = figure(1, 3, 13.5, 4.2, left=0.06, right=0.99, bottom=0.26, top=0.88, wspace=0.3)
    rel_ax, cos_ax, layer_ax = axes[0]
    for label in labels:
        runs = nets[label]
        color = NET_COLORS.get(label, "tab:gray")
        steps, ics = runs.values("probe_steps"), runs.values("ics")  # (S, P), (S, P, L, 3)
        for index, (x, one) in enumerate(zip(steps, ics)):
            name = label if index == 0 else None
            rel_ax.plot(x, np.median(one[..., 1], axis=1), color=color, marker="o", ms=3, lw=1.3, label=name)
            cos_ax.plot(x, np.median(one[..., 2], axis=1), color=color, marker="o", ms=3, lw=1.3)
            later = one[x >= 1]
            later_steps.extend(x[x >= 1])
            layer_ax.plot(np.arange(2, one.shape[1] + 2), np.median(later[..., 1], axis=0), color=color,
                          marker="o", ms=3, lw=1.3)
    rel_ax.set(xlabel="training step (SGD updates)", ylabel="||G - G'|| / ||G|| (median over layers)",
               title="Gradient change from the layers below")
    rel_ax.set_ylim(bottom=0)
    cos_ax.axhline(0, color="gray", lw=0.8, ls=":")
    cos_ax.set(xlabel="training step (SGD updates)", ylabel="cos(G, G') (median over layers)",
               title="Direction kept (1: unchanged)")
    cos_ax.set_ylim(-1.0, 1.0)
    layer_ax.set(xlabel="weight layer (11 = output layer)", ylabel="||G - G'|| / ||G|| (median over probes)",
                 title=(f"Per layer, median over updates {min(later_steps):.0f}-{max(later_steps):.0f}"
                        if later_steps else "Per layer"))
    layer_ax.set_ylim(bottom=0)
    layer_ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    legend_below(fig, ncol=2)
    return fig


@experiment_style
def plot_landscape(nets: Mapping[str, SeedRuns], labels: tuple[str, ...] = ("no BN", "BN")) -> Figure:
    """The loss landscape along the gradient (:func:`bnlab.lessons.why.gradient_probe`) of the probed nets
    ``labels``, a line per seed. Left: the range of the loss (max - min) over the probe steps, at each probe.
    Middle: the largest change of the gradient, ||grad(theta - eta g) - g||, over the step sizes. Right: the
    gradient change relative to ||g|| against the step size eta (median over the probes after initialization;
    log-log; the dotted vertical is the training rate 0.1)."""
    fig, axes = figure(1, 3, 13.5, 4.2, left=0.06, right=0.99, bottom=0.26, top=0.88, wspace=0.3)
    range_ax, change_ax, eta_ax = axes[0]
    ranges, changes, relative = [], [], []
    for label in labels:
        runs = nets[label]
        color = NET_COLORS.get(label, "tab:gray")
        steps = runs.values("probe_steps")
        losses = np.concatenate([runs.values("loss0")[..., None], runs.values("probe_losses")], axis=2)
        change, norm, lrs = runs.values("grad_change"), runs.values("grad_norm"), runs.values("probe_lrs")[0]
        for index, (x, loss, moved, size) in enumerate(zip(steps, losses, change, norm)):
            name = label if index == 0 else None
            spread = np.ptp(loss, axis=1)
            range_ax.plot(x, spread, color=color, marker="o", ms=3, lw=1.3, label=name)
            change_ax.plot(x, moved.max(axis=1), color=color, marker="o", ms=3, lw=1.3)
            per_norm = np.median((moved / size[:, None])[x >= 1], axis=0)
            eta_ax.plot(lrs, per_norm, color=color, marker="o", ms=3, lw=1.3)
            ranges.append(spread)
            changes.append(moved.max(axis=1))
            relative.append(per_norm)
    log_or_note(range_ax, np.concatenate(ranges), "nothing to draw")
    range_ax.set(xlabel="training step (SGD updates)", ylabel="loss range along -g",
                 title="Loss range over the probe steps")
    log_or_note(change_ax, np.concatenate(changes), "nothing to draw")
    change_ax.set(xlabel="training step (SGD updates)", ylabel="max ||grad(θ - ηg) - g||",
                  title="Largest gradient change")
    eta_ax.set_xscale("log")
    log_or_note(eta_ax, np.concatenate(relative), "nothing to draw", min_ratio=2.0)
    eta_ax.axvline(0.1, color="gray", lw=0.8, ls=":")
    eta_ax.set(xlabel="step size η along -g (log)", ylabel="||grad(θ - ηg) - g|| / ||g||",
               title="Gradient change vs step size")
    legend_below(fig, ncol=2)
    return fig


@experiment_style
def plot_one_step(probes: Mapping[str, OneStepProbes], growth_label: tuple[str, str] = ("no BN, depth 30",
                                                                                      "BN, depth 30"),
                  growth_lr: float = 0.316) -> Figure:
    """Left: the loss after one SGD step from initialization over the loss before, against the learning rate
    (log-log), a line per setting through the seed median and a dot per seed (an overflow drawn at the top
    edge as a triangle). Colour by net (no BN red, BN blue), line style by depth (10 solid, 30 dashed); other
    settings (init controls) purple and olive, dash-dotted and dotted. Right: for the two settings ``growth_label`` at ``growth_lr``, each hidden
    layer's output RMS after the step over before (log), a line per seed."""
    fig, axes = figure(1, 2, 12.5, 4.4, left=0.07, right=0.99, bottom=0.25, top=0.88, wspace=0.25)
    ratio_ax, growth_ax = axes[0]
    finite = np.concatenate([p.ratio[np.isfinite(p.ratio)].ravel() for p in probes.values()] + [np.ones(1)])
    top = float(finite.max()) * 10
    controls_style = iter((("tab:purple", "-."), ("tab:olive", ":"), ("tab:gray", "-."), ("black", ":")))
    for label, probe in probes.items():
        net = "BN" if label.startswith("BN") else "no BN" if label.startswith("no BN") else None
        controls = "init" in label
        if controls or net is None:
            color, ls = next(controls_style)
        else:
            color, ls = NET_COLORS[net], "--" if "depth 30" in label else "-"
        lrs = np.array(probe.lrs)
        shown = np.where(np.isfinite(probe.ratio), probe.ratio, top)
        ratio_ax.plot(lrs, np.median(shown, axis=1), color=color, ls=ls, lw=1.6, label=label)
        for column in shown.T:
            overflow = ~np.isfinite(probe.ratio).all(axis=1)
            ratio_ax.plot(lrs, column, ls="none", marker="o", ms=3, color=color, alpha=0.7)
            if overflow.any():
                ratio_ax.plot(lrs[overflow], np.full(overflow.sum(), top), ls="none", marker="^", ms=7, color=color)
    ratio_ax.axhline(1, color="gray", lw=0.8, ls=":")
    ratio_ax.set_xscale("log")
    ratio_ax.set_yscale("log")
    ratio_ax.set(xlabel="learning rate of the one step (log)", ylabel="loss after / loss before (log)",
                 title="One SGD step from initialization (dotted: no change)")
    lr_shown = growth_lr
    for label in growth_label:
        if label not in probes:
            continue
        probe = probes[label]
        row = int(np.argmin(np.abs(np.log(np.array(probe.lrs)) - np.log(growth_lr))))
        net = "BN" if label.startswith("BN") else "no BN"
        for growth in probe.growth[row]:
            growth_ax.plot(np.arange(1, growth.size + 1), positive(growth), color=NET_COLORS[net], lw=1.3,
                           marker="o", ms=2.5)
        lr_shown = probe.lrs[row]
    log_or_note(growth_ax, np.concatenate([probes[l].growth.ravel() for l in growth_label if l in probes]),
                "nothing to draw", min_ratio=3.0)
    growth_ax.axhline(1, color="gray", lw=0.8, ls=":")
    growth_ax.set(xlabel="hidden layer", ylabel="output RMS after / before the step (log)",
                  title=f"What the step did to each layer (lr {lr_shown:.3g}, depth 30)")
    legend_below(fig, ncol=4)
    return fig


@experiment_style
def plot_collapse(relu: Mapping[str, Collapse], linear: Mapping[str, Collapse] | None = None,
                  width: int = 100) -> Figure:
    """Rank collapse at initialization (:func:`bnlab.lessons.why.collapse_by_depth`), a line per seed, one
    colour per normalization. Left: ReLU nets, mean cosine similarity between the test digits at each hidden
    layer (dotted: 1/pi, independent centred features after a ReLU). Middle: ReLU nets, effective rank of each
    layer's representation (log). Right: the same for linear nets (``linear``), with sqrt(width) dotted (for
    orientation only: Daneshmand et al.'s lower bound of that order is on their own rank measure, not on the
    effective rank)."""
    panels = 3 if linear else 2
    fig, axes = figure(1, panels, 4.5 * panels, 4.3, left=0.06, right=0.99, bottom=0.26, top=0.88, wspace=0.28)
    sim_ax, rank_ax = axes[0][:2]
    for name, collapse in relu.items():
        color = NORMALIZE_COLORS.get(collapse.normalize, "tab:gray")
        layers = np.arange(1, collapse.similarity.shape[1] + 1)
        for index, (sim, rank) in enumerate(zip(collapse.similarity, collapse.rank)):
            sim_ax.plot(layers, sim, color=color, lw=1.2, label=name if index == 0 else None)
            rank_ax.plot(layers, rank, color=color, lw=1.2)
    sim_ax.axhline(1 / np.pi, color="gray", lw=0.8, ls=":")
    sim_ax.set_ylim(0, 1.02)
    sim_ax.set(xlabel="hidden layer", ylabel="mean cosine similarity of examples",
               title="ReLU: how alike the examples look")
    rank_ax.set_yscale("log")
    rank_ax.set(xlabel="hidden layer", ylabel="effective rank (log)", title="ReLU: effective rank")
    if linear:
        lin_ax = axes[0][2]
        for name, collapse in linear.items():
            color = NORMALIZE_COLORS.get(collapse.normalize, "tab:gray")
            layers = np.arange(1, collapse.rank.shape[1] + 1)
            for index, rank in enumerate(collapse.rank):
                lin_ax.plot(layers, rank, color=color, lw=1.2, label=name if name not in relu and index == 0
                            else None)
        lin_ax.axhline(np.sqrt(width), color="gray", lw=0.8, ls=":")
        lin_ax.set_yscale("log")
        lin_ax.set(xlabel="hidden layer", ylabel="effective rank (log)", title="Linear nets: effective rank")
    legend_below(fig, ncol=5)
    return fig

