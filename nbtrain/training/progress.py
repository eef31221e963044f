"""How a run shows itself while it trains: a text view for terminals, scripts and CI logs, and the
hook that picks the notebook's widget view when there is one (nbtrain.jupyter.view).

A view is a Callback with an optional `finish(run)` that leaves a summary behind.
"""

from __future__ import annotations

import sys
import time

from nbtrain.errors import ConfigError
from nbtrain.training.callbacks import Callback, RunState
from nbtrain.training.run import STOP_REASONS


class TextProgress(Callback):
    """One line per epoch: losses, the monitored value, lr, elapsed time and an ETA."""

    def __init__(self, epochs: int, monitor: str, stream=None):
        self.epochs, self.monitor, self.stream = epochs, monitor, stream or sys.stdout

    def on_fit_start(self, state: RunState) -> None:
        self.started, self.first_epoch = time.perf_counter(), state.epoch

    def on_epoch_end(self, state: RunState) -> None:
        record = state.history[-1]
        done = state.epoch - self.first_epoch
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.epochs - state.epoch)
        best = " *" if state.best_epoch == state.epoch else ""
        monitored = f" {self.monitor} {record[self.monitor]:.4g}" if self.monitor != "val_loss" else ""
        print(f"epoch {state.epoch}/{self.epochs}: train_loss {record['train_loss']:.4g} val_loss "
              f"{record['val_loss']:.4g}{monitored} lr {record['lr']:.2e} [{elapsed:.0f}s, eta {eta:.0f}s]{best}",
              file=self.stream, flush=True)

    def finish(self, run) -> None:
        print(f"{run.name}: stopped because {STOP_REASONS.get(run.stop_reason, run.stop_reason)}; best "
              f"{run.monitor} {run.best_value if run.best_value is not None else float('nan'):.4g} at epoch "
              f"{run.best_epoch} (weights restored).", file=self.stream, flush=True)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where widgets render); False in terminal IPython or a script."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def make_view(view, epochs: int, monitor: str, request_stop):
    """"auto": widgets in a notebook, text elsewhere; "text"; None for silence; or a Callback."""
    if view is None or isinstance(view, Callback):
        return view
    if view == "auto" and in_notebook():
        from nbtrain.jupyter.view import TrainingView  # only where a kernel runs: the core needs no IPython
        return TrainingView(epochs, monitor, request_stop)
    if view in ("auto", "text"):
        return TextProgress(epochs, monitor)
    raise ConfigError(f"view={view!r} is not 'auto', 'text', None or a Callback.")
