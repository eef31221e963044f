"""A sweep in a notebook: a line above the trials (trial k of n, the best so far, how many were pruned),
each trial's live training view with its Stop button (which ends the whole sweep: nbtrain.sweep), and,
when a trial ends, one line in place of its view; at the end, the sweep's report (table, plot, cell).

The line is plain HTML updated in place by its display_id, so every front end shows it, widgets or not.
Like the training view, every display call goes through `on_caller`: a sweep on a worker thread
(ipykernel 7.4+, nbtrain.training.worker) leaves them to the thread that awaits it.
"""

from __future__ import annotations

import html

from IPython.display import display

from nbtrain.jupyter.view import TrainingView
from nbtrain.sweep_report import progress_line
from nbtrain.training.worker import on_caller


class SweepView:
    def __init__(self, state, request_stop):
        self.state, self.request_stop = state, request_stop
        self._handle = None

    def trial_view(self, trial):
        return TrialView(self.state, trial, self.request_stop)

    def trial_started(self, trial) -> None:
        best = self.state.best
        said = f"trial {trial.number} of {self.state.planned} training"
        if best is not None:
            said += f"; best so far trial {best.number} ({best.run.name}) {self.state.metric.removeprefix('val_')} " \
                    f"{self.state.value(best):.4g}"
        on_caller(self._header, said)

    def trial_done(self, trial) -> None:
        on_caller(self._header, progress_line(self.state, trial.number, trial.run))

    def finish(self, report) -> None:
        on_caller(self._finish, report)

    def _header(self, text: str) -> None:
        plain = f"nbtrain {self.state.id} ({self.state.method}): {text}"
        shown = {"text/html": f"<b>nbtrain</b> {html.escape(plain.removeprefix('nbtrain '))}", "text/plain": plain}
        if self._handle is None:
            self._handle = display(shown, raw=True, display_id=True)
        else:
            self._handle.update(shown, raw=True)

    def _finish(self, report) -> None:
        self._header(report.ending().split(": ", 1)[1])
        display(report)


class TrialView(TrainingView):
    """The training view of one trial, titled with it; it leaves one line behind instead of the run's summary."""

    def __init__(self, state, trial, request_stop):
        super().__init__(1, "val_loss", request_stop)  # the loop sets both (attach)
        self.state, self.trial = state, trial

    def _show(self, mechanism, why) -> None:
        self.shown["title"] = (f"trial {self.trial.number} of {self.state.planned} ({html.escape(self.state.id)}); "
                               f"{self.shown['title']} · Stop ends the sweep, finished trials are kept")
        super()._show(mechanism, why)

    def _finish(self, run) -> None:
        line = progress_line(self.state, self.trial.number, run)
        summary = {"text/html": f"<div>{html.escape(line)}</div>", "text/plain": line}
        if self.box is None:
            display(summary, raw=True)
        else:
            self._handle.update(summary, raw=True)
            self._close()
