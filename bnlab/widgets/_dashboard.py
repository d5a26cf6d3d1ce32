"""The dashboard base: controls, instructor tools, a status line, a visible error area and the figure.

A dashboard never needs a kernel to be driven: set a control's ``.value`` (or call :meth:`Dashboard.set`)
and read back ``last_params``, ``last_result``, ``figure``, ``status`` and ``last_error``; :meth:`run` trains
live. The figure is rendered to PNG (100 dpi, readable on a projector) into an ``ipywidgets.Image``, so what a
test reads is what the browser shows.

What a learner sees:

* A control move reads only caches (instant). A setting nobody computed yet says "not precomputed", greys
  the old figure (it no longer matches the controls) and enables *Train live*; a cached setting disables it.
* *Train live* trains in a background thread (the notebook stays responsive): the first seed alone, drawn as
  soon as it ends ("1 seed"), then the others. Controls are locked while it runs; *Cancel* stops it at the
  next update (seeds that finished stay cached). A progress bar counts the updates.
* A diverged or stalled run is a result: it is drawn, and the status line says so in words ("2 of 3 seeds
  diverged (updates 3, 3)"). A combination that cannot exist is a plain hint (:class:`SettingHint`), not an
  error. Controls that do nothing in the current setting are disabled.
* Anything unexpected is shown in a red error area with its traceback (and kept in ``last_error``), never
  swallowed: widgets drop exceptions raised in callbacks, so every callback here is wrapped.

Instructor tools: *Pin* keeps the current setting and overlays it on every following one; *Reset* returns
to the lecture's defaults; *Save PNG* / *Save SVG* write the current figure to the working folder.

A dashboard whose computation is instant (``trains = False``, e.g. lecture 2's forward explorer) has no
*Train live* or *Cancel* and computes on every move. Displayed in a notebook, a dashboard also carries a PNG
of its current figure and a line of text, which viewers without a kernel (GitHub, nbconvert, the static site)
show instead of the widget.
"""

from __future__ import annotations

import base64
import html
import io
import re
import threading
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bnlab.experiments import Experiment, NotCachedError, RunCancelled, SeedRuns, run, sweep

__all__ = ["DPI", "Dashboard", "SettingHint"]

DPI = 100  # readable on a projector
_CSS = ("<style>.bnlab-stale{opacity:0.35;filter:grayscale(100%);transition:opacity .2s}"
        ".bnlab-hint{color:#7a5c00}</style>")


class SettingHint(Exception):
    """Raised by ``compute`` for a combination of controls that cannot exist; shown as a plain hint."""


class Dashboard:
    """Base class: subclasses define ``compute(params, live, seeds)`` (data) and ``draw(params, result,
    pinned)`` (a Figure), and may define ``describe``, ``disabled_controls`` and ``live_updates``.

    Attributes:
        controls: name -> value widget; ``params()`` reads them into a dict; ``defaults`` their first values.
        run_button, cancel_button: start and stop a live run.  pin_button, reset_button, save_buttons: tools.
        status: one line saying where the numbers came from and what they show.  error: the error area.
        image: the rendered figure.  progress_bar: counts a live run's updates.
        widget: the whole dashboard (what a notebook displays).
        last_params, last_result, figure, last_error: what the last update used, computed, drew and raised.
        pinned: (params, result) kept by the Pin button, or None.  running: a live run is going.
    """

    title = "Dashboard"
    live_hint = "a few seconds"
    trains = True  # False: compute() is instant, runs on every move, and there is no Train live button
    pins = True  # False: draw() ignores ``pinned``, so there is no Pin button
    base: Any = None  # the experiment config the controls modify (its ``seeds`` are trained on Train live)

    def __init__(self, controls: Mapping[str, widgets.ValueWidget], *, progress: bool = True,
                 update: bool = True, background: bool = True):
        self.controls = dict(controls)
        self.defaults = self.params()
        self.progress_enabled = progress
        self.background = background
        self.last_params: dict[str, Any] | None = None
        self.last_result: Any = None
        self.figure: Figure | None = None
        self.last_error: BaseException | None = None
        self.pinned: tuple[dict[str, Any], Any] | None = None
        self.running = False
        self.updates = 0  # how many figures were drawn (tests and the browser check watch it)
        self.saved: list[Path] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._draw_lock = threading.RLock()
        self._counted = 0
        self._count_lock = threading.Lock()

        self.run_button = widgets.Button(description="Train live", icon="play", button_style="primary",
                                         tooltip="train this setting now (settings of the default grid are "
                                                 "precomputed)")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                            disabled=True, tooltip="stop the live run at its next update")
        self.pin_button = widgets.ToggleButton(description="Pin", icon="thumb-tack", value=False,
                                               tooltip="keep this setting and overlay it on the next ones")
        self.reset_button = widgets.Button(description="Reset", icon="undo",
                                           tooltip="back to the lecture's default setting")
        self.save_buttons = {fmt: widgets.Button(description=f"Save {fmt.upper()}", icon="download",
                                                 tooltip=f"write the figure as {fmt.upper()} to the working folder")
                             for fmt in ("png", "svg")}
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 10px"))
        self.error = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.error.add_class("bnlab-error")
        self.progress_bar = widgets.IntProgress(value=0, min=0, max=1, description="updates",
                                                layout=widgets.Layout(display="none"))
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.image.add_class("bnlab-figure")

        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.run_button.on_click(self._callback(lambda: self.run(background=self.background)))
        self.cancel_button.on_click(self._callback(self.cancel))
        self.pin_button.observe(self._on_pin, names="value")
        self.reset_button.on_click(self._callback(self.reset))
        for fmt, button in self.save_buttons.items():
            button.on_click(self._callback(lambda fmt=fmt: self.save_figure(fmt=fmt)))

        live = [self.run_button, self.cancel_button] if self.trains else []
        tools = [self.pin_button] if self.pins else []
        tools += [self.reset_button, *self.save_buttons.values()]
        rows = [widgets.HTML(f"{_CSS}<b>{html.escape(self.title)}</b>"),
                widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap")),
                widgets.HBox([*live, *tools], layout=widgets.Layout(flex_flow="row wrap")),
                widgets.HBox([self.progress_bar, self.status]), self.error, self.image]
        self.widget = widgets.VBox(rows)
        self.widget.add_class("bnlab-dashboard")
        self._refresh_controls()
        if update:
            self.update()

    # -- to be defined by subclasses ---------------------------------------------------------------------
    def compute(self, params: dict[str, Any], live: bool, seeds: tuple[int, ...] | None = None) -> Any:
        """The data for ``params``: with ``live=False`` only from caches (NotCachedError otherwise); ``seeds``
        (live runs) the seeds to train and return, None for the config's own."""
        raise NotImplementedError

    def draw(self, params: dict[str, Any], result: Any, pinned: tuple[dict[str, Any], Any] | None = None
             ) -> Figure:
        raise NotImplementedError

    def describe(self, params: dict[str, Any], result: Any) -> str:
        """What the numbers show, in words, for the status line (e.g. diverged seeds)."""
        return ""

    def disabled_controls(self, params: dict[str, Any]) -> set[str]:
        """Controls that do nothing in this setting (shown disabled)."""
        return set()

    def live_updates(self, params: dict[str, Any], seeds: tuple[int, ...]) -> int:
        """About how many SGD updates a live run of ``seeds`` takes (the progress bar's length)."""
        return max(1, getattr(self.base, "steps", 1) * len(seeds))

    # -- helpers for subclasses ---------------------------------------------------------------------------
    def runs(self, config: Experiment, live: bool, seeds: tuple[int, ...] | None = None) -> SeedRuns:
        """:func:`bnlab.experiments.run` wired to this dashboard's Cancel button and progress bar."""
        return run(config, seeds=seeds, cached_only=not live, progress=False, stop=self._stop,
                   on_step=self._count_update)

    @staticmethod
    def cached(configs: Mapping[Any, Experiment]) -> dict[Any, SeedRuns]:
        """The runs of those ``configs`` that are cached (context drawn around the chosen setting)."""
        return sweep(configs, skip_missing=True)

    # -- driving ------------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The controls' current values."""
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values: Any) -> bool:
        """Set several controls, then update once (a test's or a notebook's shortcut)."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown control(s) {sorted(unknown)}; this dashboard has {sorted(self.controls)}")
        self._holding = True
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._holding = False
        return self.update()

    def reset(self) -> bool:
        """Back to the lecture's default setting (what the Reset button does); the pin stays."""
        return self.set(**self.defaults)

    def update(self, live: bool = False) -> bool:
        """Compute from caches (or live, if ``live`` or the dashboard does not train) and redraw; returns True
        when a figure was drawn. A live call trains in this thread (see :meth:`run`)."""
        if live and self.trains:
            return self.run(background=False)
        params = self.params()
        self._refresh_controls(params)
        try:
            result = self.compute(params, live=not self.trains)
        except SettingHint as hint:
            self._set_waiting(f"<span class='bnlab-hint'>{html.escape(str(hint))}</span>", can_train=False)
            return False
        except NotCachedError:
            self._set_waiting(f"<i>not precomputed: press <b>Train live</b> to train it ({self.live_hint})</i>",
                              can_train=True)
            return False
        except Exception as error:  # noqa: BLE001 - shown to the learner, never swallowed
            self._show_error(error, "computing")
            return False
        self.run_button.disabled = True
        return self._show(params, result, "from the cache" if self.trains else "")

    def run(self, background: bool = False) -> bool:
        """Train the current setting live (the Train live button): the first seed alone, drawn, then all of
        them. With ``background`` the run goes in a thread (the button's way; :meth:`wait` joins it)."""
        if not self.trains:
            return self.update()
        if self.running:
            return False
        params = self.params()
        self._stop.clear()
        self.running = True
        self._refresh_controls(params)
        if background:
            self._thread = threading.Thread(target=self._train_live, args=(params,), daemon=True)
            self._thread.start()
            return True
        return self._train_live(params)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background live run to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def cancel(self) -> None:
        """Stop a live run at its next update (the Cancel button)."""
        if self.running:
            self._stop.set()
            self.status.value = "<i>cancelling…</i>"

    def save_figure(self, path: str | Path | None = None, fmt: str = "png", dpi: int = 150) -> Path:
        """Write the current figure (PNG or SVG) and return its path; by default a file named after the title
        and setting in the working folder."""
        if fmt not in ("png", "svg"):
            raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
        if self.figure is None:
            raise RuntimeError("nothing drawn yet: there is no figure to save")
        if path is None:
            setting = "-".join(f"{k}={v}" for k, v in (self.last_params or {}).items())
            path = Path.cwd() / f"{re.sub(r'[^A-Za-z0-9=._-]+', '_', self.title[:40] + '-' + setting)}.{fmt}"
        path = Path(path)
        with self._draw_lock:
            self.figure.savefig(path, format=fmt, dpi=dpi)
        self.saved.append(path)
        self.status.value = f"{self.status.value} · saved <code>{html.escape(path.name)}</code>"
        return path

    # -- internals ----------------------------------------------------------------------------------------
    _holding = False

    def _train_live(self, params: dict[str, Any]) -> bool:
        seeds = tuple(getattr(self.base, "seeds", None) or ())
        stages = [seeds[:1], seeds] if len(seeds) > 1 else [seeds or None]
        drawn = False
        try:
            for number, stage in enumerate(stages, start=1):
                count = len(stage) if stage else 1
                self._start_progress(self.live_updates(params, stage or (0,)))
                self.status.value = (f"training live: seed 1 of {len(seeds)}…" if number == 1 and len(stages) > 1
                                     else f"training live ({count} seed{'s' if count > 1 else ''})…")
                result = self.compute(params, live=True, seeds=stage)
                last = number == len(stages)
                source = ("trained live (now cached)" if last
                          else f"trained live: 1 seed shown, training the other {len(seeds) - 1}…")
                drawn = self._show(params, result, source)
                if not drawn:
                    return False
            self.run_button.disabled = True
            return True
        except RunCancelled:
            self.status.value = ("cancelled: seeds that finished are cached"
                                 + ("; the figure shows the first seed" if drawn else ""))
            self.run_button.disabled = False
            return False
        except SettingHint as hint:
            self._set_waiting(html.escape(str(hint)), can_train=False)
            return False
        except Exception as error:  # noqa: BLE001
            self._show_error(error, "training")
            return False
        finally:
            self.running = False
            self.progress_bar.layout.display = "none"
            self._refresh_controls(params)

    def _start_progress(self, total: int) -> None:
        with self._count_lock:
            self._counted = 0
        self.progress_bar.max, self.progress_bar.value = total, 0
        self.progress_bar.layout.display = "" if self.progress_enabled else "none"

    def _count_update(self, seed: int, update: int) -> None:
        with self._count_lock:
            self._counted += 1
            counted = self._counted
        if counted % 25 == 0:
            self.progress_bar.value = min(counted, self.progress_bar.max)

    def _refresh_controls(self, params: dict[str, Any] | None = None) -> None:
        off = self.disabled_controls(params or self.params())
        for name, control in self.controls.items():
            control.disabled = self.running or name in off
        self.cancel_button.disabled = not self.running
        for button in (self.reset_button, self.pin_button):
            button.disabled = self.running
        if self.running:
            self.run_button.disabled = True

    def _set_waiting(self, message: str, can_train: bool) -> None:
        """The controls name a setting the figure does not show: grey the figure and say why."""
        self.status.value = message
        self.run_button.disabled = not can_train or self.running
        self.last_error, self.error.value = None, ""
        self.image.add_class("bnlab-stale")

    def _show(self, params: dict[str, Any], result: Any, source: str) -> bool:
        pinned = self.pinned if self.pinned is not None and self.pinned[0] != params else None
        try:
            with self._draw_lock:
                figure = self.draw(params, result, pinned)
                png = self._render(figure)
            words = self.describe(params, result)
        except Exception as error:  # noqa: BLE001
            self._show_error(error, "drawing")
            return False
        self.image.value = png
        self.image.remove_class("bnlab-stale")
        self.figure, self.last_params, self.last_result = figure, params, result
        self.last_error, self.error.value = None, ""
        self.status.value = " · ".join(part for part in (source, html.escape(words)) if part)
        self.updates += 1
        return True

    def _callback(self, action):
        """A button handler that shows any exception instead of letting the widget swallow it."""
        def handler(*_):
            try:
                action()
            except Exception as error:  # noqa: BLE001
                self._show_error(error, "handling the button")
        return handler

    def _on_change(self, change: dict) -> None:
        if not self._holding and not self.running:
            self.update()

    def _on_pin(self, change: dict) -> None:
        if change["new"]:
            if self.last_result is None:
                self.pin_button.value = False
                self.status.value = "nothing drawn yet to pin"
                return
            self.pinned = (dict(self.last_params), self.last_result)
            self.pin_button.description = "Unpin"
        else:
            self.pinned = None
            self.pin_button.description = "Pin"
        if self.last_result is not None and self.last_params == self.params():
            self._show(self.last_params, self.last_result, self.status.value.split(" · ")[0])

    def _render(self, figure: Figure) -> bytes:
        """The figure as PNG at :data:`DPI`. Text is most of a redraw's cost; unhinted glyphs render about 20%
        faster and look the same at this resolution, and light compression saves another 20 ms."""
        buffer = io.BytesIO()
        with mpl.rc_context({"text.hinting": "none"}):
            figure.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
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
        the PNG. ``bnlab build lectures`` strips the widget view from stored notebooks, so they keep the figure.
        """
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = (f"{self.title}: an interactive dashboard (run the notebook to use its controls; "
                                f"the figure shows the setting {self.params()}).")
        if self.image.value:
            bundle["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        return bundle
