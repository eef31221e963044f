"""The training view in a notebook: progress with ETA, live curves, lr, best epoch, diagnoses, and
a Stop button that works while the cell is still running.

A widget's click reaches the kernel as a comm message, and the kernel does not read messages while
a cell executes. So the view polls for UI events between steps (jupyter-ui-poll), at most five
times a second, so polling costs nothing measurable. When the run ends the widgets give way to a
static summary (an HTML table and a PNG of the curves), which a saved notebook keeps.
"""

from __future__ import annotations

import contextlib
import html
import time

import ipywidgets as widgets
import pandas as pd
from IPython.display import HTML, Image, display

from nbtrain.training.callbacks import Callback, RunState
from nbtrain.training.progress import curves_png

POLL_SECONDS = 0.2
DRAW_SECONDS = 0.5  # redraw the curves at most this often: a fast epoch should not wait for matplotlib


def can_poll() -> bool:
    """Whether a running cell can read widget events here (jupyter-ui-poll needs ipykernel < 7)."""
    from IPython import get_ipython
    kernel = getattr(get_ipython(), "kernel", None)
    return kernel is not None and hasattr(kernel, "do_one_iteration")


class TrainingView(Callback):
    def __init__(self, epochs: int, monitor: str, request_stop):
        self.epochs, self.monitor, self.request_stop = epochs, monitor, request_stop
        self.title = widgets.HTML("<b>nbtrain</b>: starting…")
        self.progress = widgets.IntProgress(value=0, min=0, max=epochs, description="epoch 0",
                                            layout=widgets.Layout(width="60%"))
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop",
                                          tooltip="End the run after this step; the best weights are kept")
        self.stop_button.on_click(self._stop)
        self.status = widgets.HTML()
        self.curves = widgets.Image(format="png", layout=widgets.Layout(max_width="900px"))
        self.diagnoses = widgets.HTML()
        self.box = widgets.VBox([self.title, widgets.HBox([self.progress, self.stop_button]), self.status,
                                 self.curves, self.diagnoses], layout=widgets.Layout(border="1px solid #ddd",
                                                                                     padding="6px"))
        self._events = contextlib.ExitStack()
        self._poll = None
        self._handle = display(self.box, display_id=True)

    def _stop(self, _button) -> None:
        self.request_stop()
        self.stop_button.disabled, self.stop_button.description = True, "Stopping…"

    def on_fit_start(self, state: RunState) -> None:
        self.started, self.first_epoch, self.last_poll, self.last_draw = time.perf_counter(), state.epoch, 0.0, 0.0
        self.progress.value = state.epoch
        self.title.value = f"<b>nbtrain</b>: training, monitoring <code>{html.escape(self.monitor)}</code>"
        self._poll = None
        if can_poll():
            from jupyter_ui_poll import ui_events
            self._poll = self._events.enter_context(ui_events())
        else:
            self.stop_button.disabled = True
            self.stop_button.tooltip = ("This kernel cannot read clicks while a cell runs (ipykernel 7+). "
                                        "Use Kernel > Interrupt: the run ends the same way, best weights kept.")

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
        self.progress.value, self.progress.description = state.epoch, f"epoch {state.epoch}"
        best = (f"best <b>{self.monitor} {state.best:.4g}</b> at epoch {state.best_epoch}"
                if state.best_epoch else "no improvement yet")
        self.status.value = (f"train loss {record['train_loss']:.4g} · validation loss {record['val_loss']:.4g} · "
                             f"lr {record['lr']:.2e} · {best} · {elapsed:.0f} s, ETA {eta:.0f} s")
        if time.perf_counter() - self.last_draw > DRAW_SECONDS:
            self.last_draw = time.perf_counter()
            self.curves.value = curves_png(pd.DataFrame(state.history), state.best_epoch, self.monitor)
        found = getattr(state, "diagnoses", None) or []
        if found:
            self.diagnoses.value = "<ul>" + "".join(f"<li>{html.escape(str(d))}</li>" for d in found) + "</ul>"
        self.on_step_end(state)

    def on_fit_end(self, state: RunState) -> None:
        self._events.close()
        self._poll = None

    def finish(self, run) -> None:
        """Replace the live widgets, in place, with what a saved notebook can show without a kernel."""
        self._handle.update(HTML(run._repr_html_()))
        self.box.close()
        if not run.history.empty:
            display(Image(curves_png(run.history, run.best_epoch, run.monitor)))
