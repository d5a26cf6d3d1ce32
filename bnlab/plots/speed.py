"""Figures for lectures 4 and 6: measured times in pass-equivalents beside the passes counted on paper."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bnlab.timing import CopyControlled

__all__ = ["plot_pass_equivalents"]

_COLORS = ["#4a78a8", "#a8c4e0", "#6a9f58", "#b07a2a", "#d9a35f", "#8c6bb1"]


def _duration(ms: float) -> str:
    """1.234 -> '1.23 ms', 0.0123 -> '12.3 µs'."""
    return f"{ms * 1e3:.3g} µs" if ms < 1 else f"{ms:.3g} ms"


def _size(nbytes: int) -> str:
    """51200 -> '50 KiB', 2**24 -> '16 MiB'."""
    return f"{nbytes / 2**10:.3g} KiB" if nbytes < 2**20 else f"{nbytes / 2**20:.3g} MiB"


def _passes(value: float) -> str:
    """Pass-equivalents: whole numbers from 10 on, two significant digits below (a tiny op's 0.0039)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def plot_pass_equivalents(results: Mapping[tuple[int, ...], CopyControlled],
                          counts: Mapping[str, tuple[int, str]], title: str,
                          ratios: Sequence[tuple[str, str]] = ()) -> Figure:
    """One panel per batch shape: each implementation's time in pass-equivalents, its passes marked on the bar.

    Args:
        results: ``{shape: CopyControlled}``, e.g. from :func:`bnlab.lessons.closed_form.time_closed_form`; each
            panel shows its shape's implementations in their order, one colour per name across panels.
        counts: ``{implementation: (passes, kind)}``, kind ``"counted"`` (passes the code makes on paper) or
            ``"floor"`` (the least any implementation can make); drawn as a black tick on that bar.
        title: the figure's title.
        ratios: pairs ``(a, b)`` whose time ratio a / b is written in each panel's title.

    Each bar is labelled with its pass-equivalents, its time and its minor page faults per call; each panel's
    title gives the shape, the array's size and the copy's bandwidth measured in the same run.
    """
    if not results:
        raise ValueError("plot_pass_equivalents needs results for at least one shape, got none")
    names = list(dict.fromkeys(name for result in results.values() for name in result.ms))
    colors = {name: _COLORS[i % len(_COLORS)] for i, name in enumerate(names)}
    fig, axes = plt.subplots(len(results), 1, figsize=(10.0, 0.55 * len(names) * len(results) + 1.6),
                             squeeze=False, layout="constrained")
    for ax, (shape, result) in zip(axes[:, 0], results.items()):
        shown = list(result.ms)
        values = [result.pass_equivalents(name) for name in shown]
        ax.barh(range(len(shown)), values, color=[colors[name] for name in shown], height=0.65)
        for i, name in enumerate(shown):
            faults = result.faults.get(name, math.nan)
            fault_text = "" if math.isnan(faults) else f", {faults:,.0f} page faults"
            right = max(values[i], counts[name][0] if name in counts else 0.0)  # clear of the tick
            ax.text(right, i, f"  {_passes(values[i])} pass-eq. = {_duration(result.ms[name])}{fault_text}",
                    va="center", fontsize=9)
            if name in counts:
                passes, kind = counts[name]
                ax.plot([passes, passes], [i - 0.42, i + 0.42], color="black", lw=2.5)
                ax.text(passes, i - 0.45, f"{kind} {passes}", ha="center", va="bottom", fontsize=8)
        ax.set_yticks(range(len(shown)), shown, fontsize=10)
        ax.invert_yaxis()
        ax.set_xlim(0, max(values + [counts[n][0] for n in shown if n in counts]) * 1.75)
        ax.set_xlabel("time in pass-equivalents (time / half the time of a copy of the array)")
        ax.grid(axis="y", visible=False)
        ratio_text = "".join(f";  {a} / {b} = {result.ms[a] / result.ms[b]:.1f}" for a, b in ratios
                             if a in result.ms and b in result.ms)
        ax.set_title(f"{shape}, {_size(result.array_bytes)} per array: copy {result.bandwidth / 1e9:.0f} GB/s"
                     f" ({_duration(result.copy_ms)}){ratio_text}", fontsize=10, loc="left")
    fig.suptitle(title, fontsize=11)
    return fig
