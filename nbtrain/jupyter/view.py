"""The training view in a notebook: progress with ETA, live curves, lr, best epoch, diagnoses, and
a Stop button that works while the run trains (how depends on the kernel: nbtrain.jupyter.kernel).

Core widgets only (ipywidgets 7.7, Colab's, and 8), updated by setting trait values. The same
display also carries the view as HTML and as text, updated in place by its display_id, for front
ends that render no widgets (nbconvert, GitHub, a front end without a widget manager); one with a
widget manager keeps showing the widgets (JupyterLab and Notebook 7 re-render nothing on such an
update; checked in tests/browser). Nothing is shown until training starts, so an option that fit()
rejects leaves no empty view. When the run ends the widgets give way to a static summary (an HTML
table and a PNG of the curves), which a saved notebook keeps.

A run on a worker thread (nbtrain.training.worker) hands every widget and display call back to
the thread awaiting it, so widget messages are only ever sent from that one thread.
"""

from __future__ import annotations

import base64
import contextlib
import html
import re
import time

import ipywidgets as widgets
import pandas as pd
from IPython.display import Image, display

from nbtrain.jupyter.kernel import INTERRUPT, stop_mechanism
from nbtrain.training.callbacks import Callback, RunState
from nbtrain.training.curves import curves_png
from nbtrain.training.worker import on_caller, on_worker

POLL_SECONDS = 0.2   # read widget events (ipykernel 6) at most this often: it costs nothing measurable
DRAW_SECONDS = 0.5   # redraw the curves at most this often: a fast epoch should not wait for matplotlib
HTML_SECONDS = 2.0   # refresh the HTML/text copy for widget-less front ends at most this often
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class TrainingView(Callback):
    def __init__(self, epochs: int, monitor: str, request_stop):
        self.epochs, self.monitor, self.request_stop = epochs, monitor, request_stop
        self.box = None
        self.shown = {"epoch": 0, "status": "starting…", "png": None, "diagnoses": [], "title": "starting…"}
        self._events = contextlib.ExitStack()
        self._poll = None

    def attach(self, loop) -> None:
        self.epochs, self.monitor = loop.epochs, loop.monitor  # what fit resolved and checked

    # ---- hooks: called where the run trains (possibly a worker thread) ------------------------------

    def on_fit_start(self, state: RunState) -> None:
        self.started, self.first_epoch = time.perf_counter(), state.epoch
        self.last_poll = self.last_draw = 0.0
        mechanism, why = stop_mechanism(on_worker())
        self.shown.update(epoch=state.epoch, status="training…",
                          title=f"training, monitoring <code>{html.escape(self.monitor)}</code>")
        on_caller(self._show, mechanism, why)
        if mechanism == "poll":  # on the kernel's own thread: ipykernel 6 and jupyter-ui-poll
            from jupyter_ui_poll import ui_events
            self._poll = self._events.enter_context(ui_events())

    def on_step_end(self, state: RunState) -> None:
        now = time.perf_counter()
        if self._poll is not None and now - self.last_poll > POLL_SECONDS:
            self.last_poll = now
            self._poll(20)

    def on_epoch_end(self, state: RunState) -> None:
        record = state.history[-1]
        done = max(1, state.epoch - self.first_epoch)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.epochs - state.epoch)
        best = (f"best <b>{html.escape(self.monitor)} {state.best:.4g}</b> at epoch {state.best_epoch}"
                if state.best_epoch else "no improvement yet")
        status = (f"train loss {record['train_loss']:.4g} · validation loss {record['val_loss']:.4g} · "
                  f"lr {record['lr']:.2e} · {best} · {elapsed:.0f} s, ETA {eta:.0f} s")
        drawn = None
        if time.perf_counter() - self.last_draw > DRAW_SECONDS:
            self.last_draw = time.perf_counter()
            drawn = curves_png(pd.DataFrame(state.history), state.best_epoch, self.monitor)
        # always, even when empty: a diagnosis that no longer holds must leave the screen
        diagnoses = [str(d) for d in getattr(state, "diagnoses", None) or []]
        on_caller(self._update, state.epoch, status, drawn, diagnoses)
        self.on_step_end(state)

    def on_fit_end(self, state: RunState) -> None:
        self._events.close()
        self._poll = None
        on_caller(self._ended, state.stop_reason)

    def finish(self, run) -> None:
        """Replace the live widgets, in place, with what a saved notebook can show without a kernel."""
        self._events.close()
        on_caller(self._finish, run)

    # ---- on the thread that owns the widgets ----------------------------------------------------------

    def _show(self, mechanism: str | None, why: str) -> None:
        self.title = widgets.HTML(f"<b>nbtrain</b>: {self.shown['title']}")
        self.progress = widgets.IntProgress(value=self.shown["epoch"], min=0, max=self.epochs,
                                            description=f"epoch {self.shown['epoch']}",
                                            layout=widgets.Layout(width="60%"))
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop",
                                          tooltip="End the run after this step; the best weights are kept")
        self.stop_button.on_click(self._stop)
        self.note = widgets.HTML()
        if mechanism is None:
            self.stop_button.disabled, self.stop_button.description = True, "Stop: use Kernel > Interrupt"
            self.stop_button.layout.width = "auto"  # the whole label, not its first 148 px
            self.stop_button.tooltip = f"{why} {INTERRUPT}"
            self.note.value = f"<small>{html.escape(why)} {INTERRUPT}</small>"
        self.status = widgets.HTML(self.shown["status"])
        self.curves = widgets.Image(format="png", layout=widgets.Layout(max_width="900px", display="none"))
        self.diagnoses = widgets.HTML()
        self.parts = [self.title, self.progress, self.stop_button, self.note, self.status, self.curves,
                      self.diagnoses]
        self.box = widgets.VBox([self.title, widgets.HBox([self.progress, self.stop_button]), self.note,
                                 self.status, self.curves, self.diagnoses],
                                layout=widgets.Layout(border="1px solid #ddd", padding="6px"))
        self.parts += [self.box, self.box.children[1]]
        self.last_html = time.perf_counter()
        self._handle = display(self._bundle(), raw=True, display_id=True)

    def _update(self, epoch: int, status: str, png: bytes | None, diagnoses: list) -> None:
        self.shown.update(epoch=epoch, status=status, diagnoses=diagnoses, **({"png": png} if png else {}))
        self.progress.value, self.progress.description = epoch, f"epoch {epoch}"
        self.status.value = status
        if png:
            self.curves.value = png
            self.curves.layout.display = ""
        self.diagnoses.value = _list_html(diagnoses)
        if time.perf_counter() - self.last_html > HTML_SECONDS:
            self.last_html = time.perf_counter()
            self._handle.update(self._bundle(), raw=True)

    def _ended(self, stop_reason: str | None) -> None:
        if self.box is None:
            return
        self.stop_button.disabled = True
        self.shown["title"] = f"run ended ({html.escape(str(stop_reason))}); writing its summary…"
        self.title.value = f"<b>nbtrain</b>: {self.shown['title']}"
        self._handle.update(self._bundle(), raw=True)

    def _finish(self, run) -> None:
        summary = {"text/html": run._repr_html_(), "text/plain": repr(run)}
        if self.box is None:
            display(summary, raw=True)
        else:
            self._handle.update(summary, raw=True)
            self._close()
        if not run.history.empty:
            display(Image(curves_png(run.history, run.best_epoch, run.monitor)))

    def _close(self) -> None:
        for part in self.parts:  # and their layout and style models: no comm is left open
            for model in (getattr(part, "layout", None), getattr(part, "style", None), part):
                if model is not None:
                    model.close()

    def _stop(self, _button) -> None:
        self.request_stop()
        self.stop_button.disabled, self.stop_button.description = True, "Stopping…"

    def _bundle(self) -> dict:
        """The widgets, and the same view as HTML and as text for front ends without widgets."""
        return {WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": self.box.model_id},
                "text/html": self._html(), "text/plain": self._text()}

    def _html(self) -> str:
        shown = self.shown
        image = (f'<br><img style="max-width:900px" src="data:image/png;base64,'
                 f'{base64.b64encode(shown["png"]).decode()}">' if shown["png"] else "")
        return (f'<div style="border:1px solid #ddd;padding:6px"><b>nbtrain</b>: {shown["title"]}<br>'
                f'epoch {shown["epoch"]} of {self.epochs} <progress value="{shown["epoch"]}" max="{self.epochs}">'
                f'</progress><br>{shown["status"]}{image}{_list_html(shown["diagnoses"])}</div>')

    def _text(self) -> str:
        status = html.unescape(re.sub(r"<[^>]+>", "", self.shown["status"]))
        return f"nbtrain: epoch {self.shown['epoch']} of {self.epochs}: {status}"


def _list_html(items: list) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>" if items else ""
