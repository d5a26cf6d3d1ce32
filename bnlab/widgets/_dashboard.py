"""The dashboard base: controls, a Run button, a status line, a visible error area and the figure.

A dashboard never needs a kernel to be driven: set a control's ``.value`` (or call :meth:`Dashboard.update`)
and read back ``last_params``, ``last_result``, ``figure`` and ``last_error``; ``run_button.click()`` trains
live. The figure is rendered to PNG into an ``ipywidgets.Image``, so what a test reads is what the browser
shows.

Slider moves only read caches (instant). A setting nobody computed yet says so in the status line and waits
for *Train live*, which trains it with a ``tqdm.auto`` progress bar (inside the dashboard) and remembers it.
A dashboard whose computation is instant (``trains = False``, e.g. lecture 2's forward explorer) has no
*Train live* button and computes on every move.

Displayed in a notebook, a dashboard also carries a PNG of its current figure and a one-line text: viewers that
run no kernel (GitHub, nbconvert, the static site) and a notebook opened before it is run show that figure.

Widgets swallow exceptions raised in callbacks; here every callback is wrapped, and an exception is shown in
the red error area with its traceback (and kept in ``last_error``), never dropped.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import traceback
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bnlab.experiments import NotCachedError

__all__ = ["Dashboard"]


class Dashboard:
    """Base class: subclasses define ``compute(params, live)`` (data) and ``draw(params, result)`` (Figure).

    Attributes:
        controls: name -> value widget; ``params()`` reads them into a dict.
        run_button: trains the current setting live (anything not cached).
        status: one line saying where the numbers came from (cache / live / waiting).
        error: the error area (an HTML widget, empty when all is well).
        image: the rendered figure; progress: an Output holding live progress bars.
        widget: the whole dashboard (what a notebook displays).
        last_params, last_result, figure, last_error: what the last update used, computed, drew and raised.
    """

    title = "Dashboard"
    live_hint = "a few seconds"
    trains = True  # False: compute() is instant, runs on every move, and there is no Train live button
    base: Any = None  # the experiment config the controls modify (its ``seeds`` are trained on Train live)

    def __init__(self, controls: Mapping[str, widgets.ValueWidget], *, progress: bool = True,
                 update: bool = True):
        self.controls = dict(controls)
        self.progress_enabled = progress
        self.run_button = widgets.Button(description="Train live", icon="play", button_style="primary",
                                         tooltip="train this setting now (settings of the default grid are "
                                                 "precomputed)")
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 10px"))
        self.error = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.error.add_class("bnlab-error")
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.image.add_class("bnlab-figure")
        self.progress = widgets.Output()
        self.last_params: dict[str, Any] | None = None
        self.last_result: Any = None
        self.figure: Figure | None = None
        self.last_error: BaseException | None = None
        self.updates = 0  # how many figures were drawn (tests and the browser check watch it)

        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.run_button.on_click(self._on_run)
        rows = [widgets.HTML(f"<b>{html.escape(self.title)}</b>"),
                widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap")),
                widgets.HBox([self.run_button, self.status] if self.trains else [self.status]), self.error,
                self.progress, self.image]
        self.widget = widgets.VBox(rows)
        self.widget.add_class("bnlab-dashboard")
        if update:
            self.update()

    # -- to be defined by subclasses ---------------------------------------------------------------------
    def compute(self, params: dict[str, Any], live: bool) -> Any:
        """The data for ``params``; with ``live=False`` it must only read caches (raising NotCachedError)."""
        raise NotImplementedError

    def draw(self, params: dict[str, Any], result: Any) -> Figure:
        raise NotImplementedError

    # -- driving ------------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The controls' current values."""
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values: Any) -> None:
        """Set several controls, then update once (a test's or a notebook's shortcut)."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown control(s) {sorted(unknown)}; this dashboard has {sorted(self.controls)}")
        with self._held():
            for name, value in values.items():
                self.controls[name].value = value
        self.update()

    def update(self, live: bool = False) -> bool:
        """Compute (from caches only, unless ``live``) and redraw; returns True when a figure was drawn.

        A live run trains the first seed alone and draws it (a first answer in a few seconds), then the other
        seeds (in parallel on a multi-core machine) and draws the full spread. Any exception is shown in the
        error area and kept in ``last_error``.
        """
        params = self.params()
        live = live or not self.trains
        stages = self._live_stages() if live and self.trains else [None]
        for number, seeds in enumerate(stages, start=1):
            try:
                if live and self.trains:
                    self.status.value = f"training live ({len(seeds)} of {len(stages[-1])} seeds)…"
                    self.progress.outputs = ()  # (clear_output() would print escape codes outside a kernel)
                    with self.progress, self._seeds(seeds):
                        result = self.compute(params, live=True)
                    self.progress.outputs = ()
                else:
                    result = self.compute(params, live=live)
            except NotCachedError:
                self.status.value = (f"<i>not precomputed: press <b>Train live</b> to train it "
                                     f"({self.live_hint})</i>")
                return False
            except Exception as error:  # noqa: BLE001 - shown to the learner, never swallowed
                self._show_error(error, "computing")
                return False
            source = ("" if not self.trains else "from the cache" if not live
                      else "trained live (now cached)" if number == len(stages)
                      else f"trained live: {len(seeds)} seed shown, training the others…")
            if not self._show(params, result, source):
                return False
        return True

    def _show(self, params: dict[str, Any], result: Any, source: str) -> bool:
        try:
            figure = self.draw(params, result)
            png = self._render(figure)
        except Exception as error:  # noqa: BLE001
            self._show_error(error, "drawing")
            return False
        self.image.value = png
        self.figure, self.last_params, self.last_result = figure, params, result
        self.last_error, self.error.value = None, ""
        self.status.value = source
        self.updates += 1
        return True

    def _live_stages(self) -> list[tuple[int, ...] | None]:
        """Seeds to train in turn: the first alone, then all (a dashboard without ``base.seeds``: one stage)."""
        seeds = getattr(self.base, "seeds", None)
        if not seeds:
            return [None]
        return [seeds[:1], seeds] if len(seeds) > 1 else [seeds]

    @contextlib.contextmanager
    def _seeds(self, seeds: tuple[int, ...] | None):
        """Temporarily train only ``seeds`` (None: leave ``base`` alone)."""
        if seeds is None:
            yield
            return
        base = self.base
        self.base = replace(base, seeds=seeds)
        try:
            yield
        finally:
            self.base = base

    def run(self) -> bool:
        """Train the current setting live (what the Run button does)."""
        return self.update(live=True)

    # -- internals ----------------------------------------------------------------------------------------
    _holding = False

    @contextlib.contextmanager
    def _held(self):
        """Control changes inside do not update (``set`` updates once at the end)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def _on_change(self, change: dict) -> None:
        if not self._holding:
            self.update()

    def _on_run(self, button: widgets.Button) -> None:
        self.run()

    def _render(self, figure: Figure) -> bytes:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=72)
        plt.close(figure)  # the dashboard shows the PNG; no second copy in the cell output
        return buffer.getvalue()

    def _show_error(self, error: BaseException, stage: str) -> None:
        self.last_error = error
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-6))
        self.error.value = (
            f'<div style="color:#a00000;border:1px solid #a00000;padding:6px;background:#fff4f4">'
            f"<b>Error while {stage}: {html.escape(type(error).__name__)}: {html.escape(str(error))}</b>"
            f'<pre style="font-size:11px;white-space:pre-wrap">{html.escape(text)}</pre></div>')
        self.status.value = "<b style='color:#a00000'>failed, see the error below</b>"

    def _repr_mimebundle_(self, **kwargs):
        """The widget, plus a PNG of the current figure and a text line for viewers without a kernel.

        JupyterLab with a running kernel renders the widget (highest priority); anything else falls back to
        the PNG. ``tools/notebooks.py`` strips the widget view from stored notebooks, so they keep the figure.
        """
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = (f"{self.title}: an interactive dashboard (run the notebook to use its controls; "
                                f"the figure shows the setting {self.params()}).")
        if self.image.value:
            bundle["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        return bundle
