"""Drawing helpers shared by the experiment figures (lectures 7-9): every seed drawn, divergence marked.

Rules the figures follow (course-design, "Every claim has its control"): each seed is its own thin line or
dot, never hidden in a mean; a diverged seed is marked with an x where it diverged and counted at chance in
any mean line (the legend says so); a quantity with nothing positive to draw on a log axis says so in words
instead of failing; one colour per method in every panel; legends sit below the panels, off the data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    AutoLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullLocator,
)

from bnlab.experiments import CHANCE, SeedRuns

__all__ = ["CHANCE", "COLORS", "at_least_range", "chance_line", "experiment_style", "figure", "legend_below",
           "log_or_note", "positive", "seed_curves", "seed_points", "setting_color"]

# one colour per method, in every figure of lectures 7-9
COLORS = {
    "no norm": "#8c8c8c",
    "BN": "tab:blue",
    "LayerNorm": "tab:green",
    "GroupNorm": "tab:purple",
    "no norm, He init": "tab:red",
    "pinned": "black",
}
_OTHERS = ("tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")



def setting_color(label: str, index: int = 0) -> str:
    """The colour of a method: the first word(s) of ``label`` matched against :data:`COLORS`."""
    for name in sorted(COLORS, key=len, reverse=True):
        if label == name or label.startswith(name + ",") or label.startswith(name + " "):
            return COLORS[name]
    return _OTHERS[index % len(_OTHERS)]


def experiment_style(plot: Callable[..., Figure]) -> Callable[..., Figure]:
    """Give ``plot``'s figure the experiment figures' font sizes (titles that fit over three panels) and at
    most about five ticks per automatic axis, log axes without minor ticks and with plain labels ("1e-05",
    not mathtext): tick labels are most of what a dashboard's redraw costs, and five are enough to read a
    value.

    Applied to the finished figure rather than through ``plt.rc_context``: figures created inside an
    rc_context were not shown by the notebook's inline backend at the end of the cell.
    """
    @functools.wraps(plot)
    def styled(*args, **kwargs) -> Figure:
        fig = plot(*args, **kwargs)
        for ax in fig.axes:
            ax.title.set_fontsize(10)
            ax.xaxis.label.set_fontsize(9)
            ax.yaxis.label.set_fontsize(9)
            ax.tick_params(labelsize=8)
            for axis in (ax.xaxis, ax.yaxis):
                locator = axis.get_major_locator()
                if type(locator) is AutoLocator:
                    axis.set_major_locator(MaxNLocator(4))
                elif type(locator) is LogLocator:
                    low, high = sorted(abs(v) for v in axis.get_view_interval())
                    narrow = low > 0 and high / low < 100  # under two decades: label 1-2-5 steps too
                    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,), numticks=6))
                    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # no mathtext: cheaper
                    axis.set_minor_locator(NullLocator())
        return fig
    return styled


def figure(rows: int, cols: int, width: float, height: float, **adjust) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows`` x ``cols`` panels with fixed margins (no tight_layout: it costs as much as drawing,
    and the dashboards redraw on every move). Returns (figure, 2-D array of axes)."""
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(**adjust)
    return fig, axes


def legend_below(fig: Figure, handles: Sequence[Line2D] | None = None, ncol: int = 4, y: float = 0.0) -> None:
    """One legend for the whole figure, centred below the panels (off the data)."""
    if handles is None:
        seen: dict[str, Line2D] = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if not label.startswith("_"):
                    seen.setdefault(label, handle)
        handles = list(seen.values())
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(ncol, len(handles)), fontsize=9,
                   frameon=False, bbox_to_anchor=(0.5, y))


def chance_line(ax: Axes, ylim: tuple[float, float] = (0.0, 1.0)) -> None:
    ax.axhline(CHANCE, color="gray", lw=0.8, ls=":")
    ax.set_ylim(*ylim)


def seed_curves(ax: Axes, runs: SeedRuns, name: str, color: str, label: str | None,
                diverged_at: float | None = None, **style) -> None:
    """Each seed's curve of ``name`` over ``steps`` (one label for all), the x-axis spanning every recorded
    step even when a run ended early. A diverged seed's curve ends where it diverged, marked with an x at its
    last value; a seed with no value at all gets its x at ``diverged_at`` (e.g. chance on an accuracy axis),
    or none."""
    steps = runs.values("steps")
    values = runs.values(name)
    style = {"lw": 1.3, "alpha": 0.9, **style}
    for index, (x, y) in enumerate(zip(steps, values)):
        few = np.isfinite(y).sum() < 3  # a run that ended at once: show its points
        ax.plot(x, y, color=color, label=label if index == 0 else None, marker="o" if few else None, ms=4,
                **style)
    for update, y in zip(runs.diverged_at(), values):
        if np.isfinite(update):
            finite = y[np.isfinite(y)]
            where = finite[-1] if finite.size else diverged_at
            if where is not None:
                ax.plot([update], [where], "x", color=color, ms=9, mew=2.5, clip_on=False, zorder=5)
    ax.set_xlim(0, max(float(np.nanmax(steps)), 1.0))


def seed_points(ax: Axes, results: Mapping[float, SeedRuns], color: str, label: str | None,
                name: str = "final_accuracy", jitter: float = 0.0, log_x: bool = False, **style) -> None:
    """A sweep ``{x: runs}`` of a scalar: one dot per seed, an x at chance for a diverged seed, and a line
    through the mean that counts diverged seeds at chance. The points may have different numbers of seeds
    (a live run's first stage, one seed, beside cached points with three)."""
    xs = sorted(results)
    scored = [np.where(np.isfinite(results[x].diverged_at()), CHANCE, results[x].values(name)) for x in xs]
    ax.plot(np.array(xs, dtype=float), [float(np.nanmean(v)) if v.size else np.nan for v in scored], color=color,
            lw=1.8, label=label, **style)  # the mean line first: the figure's first line is the summary
    dots, crosses = [], []
    for x in xs:
        values, diverged = results[x].values(name), np.isfinite(results[x].diverged_at())
        for seed, (value, gone) in enumerate(zip(values, diverged)):
            offset = x * (1 + jitter * (seed - 1)) if log_x else x + jitter * (seed - 1)
            (crosses if gone else dots).append((offset, CHANCE if gone else value))
    for points, marker in ((dots, {"marker": "o", "ms": 3.5, "alpha": 0.8}),
                           (crosses, {"marker": "x", "ms": 9, "mew": 2.5, "zorder": 5})):
        if points:
            ax.plot(*np.array(points).T, ls="none", color=color, **marker)


def log_or_note(ax: Axes, values: np.ndarray, missing: str, min_ratio: float = 10.0) -> bool:
    """Put ``ax`` on a log y-axis if ``values`` hold positive finite numbers spanning at least ``min_ratio``
    (a narrower range reads better on a linear axis); with nothing positive to draw, write ``missing`` in
    the panel instead of failing (e.g. a run that diverged before its first update). Returns whether it went
    log."""
    values = np.asarray(values, dtype=float)
    shown = values[np.isfinite(values) & (values > 0)]
    if shown.size == 0:
        ax.text(0.5, 0.5, missing, transform=ax.transAxes, ha="center", va="center", color="#a00000",
                wrap=True)
        return False
    if shown.max() >= min_ratio * shown.min():
        ax.set_yscale("log")
        return True
    return False


def at_least_range(ax: Axes, span: float) -> None:
    """Widen a linear y-axis to at least ``span`` around its centre, so rounding-level wiggles (a loss
    stuck at ln 10 +- 0.001) do not fill the panel and look like a trend."""
    if ax.get_yscale() != "linear":
        return
    low, high = ax.get_ylim()
    if high - low < span:
        centre = (low + high) / 2
        ax.set_ylim(centre - span / 2, centre + span / 2)


def positive(values: np.ndarray) -> np.ndarray:
    """``values`` with zeros and negatives replaced by NaN (what a log axis can show)."""
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, values, np.nan)
