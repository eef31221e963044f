"""Callbacks: hooks the loop calls, all no-ops by default, and the one state object they share.

Early stopping and checkpointing both watch one validation quantity, so they share a `Monitor`
(Keras 3's MonitorCallback): `monitor`, `mode` ("min"/"max", declared, never guessed), `min_delta`.
Stopping is a flag on the state that the loop reads between steps, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from nbtrain.training.checkpoint import save_checkpoint
from nbtrain.training.interrupts import deferred_interrupts


@dataclass
class RunState:
    """Everything that changes while a run trains (pytorch-ignite's State)."""

    epoch: int = 0                 # epochs finished
    step: int = 0                  # optimizer steps taken
    history: list = field(default_factory=list)   # one dict per epoch
    lrs: list = field(default_factory=list)       # the lr at every optimizer step
    best: float | None = None
    best_epoch: int = 0            # 0: the initial weights
    stop: bool = False
    stop_reason: str | None = None
    non_finite_step: int | None = None            # the step at which the loss was seen NaN or inf
    diagnoses: list = field(default_factory=list)  # the training doctor's findings so far, ranked (live)
    error: str | None = None                       # what ended the run when stop_reason is "error"

    def request_stop(self, reason: str) -> None:
        """Stop after the current step, for `reason` ("stopped" from a Stop button, "interrupted", ...);
        safe to call from another thread. The first request wins."""
        if not self.stop:
            self.stop, self.stop_reason = True, reason

    def fail(self, exc: BaseException) -> None:
        """An exception ended the run: it overrides any earlier stop reason."""
        self.stop, self.stop_reason = True, "error"
        self.error = f"{type(exc).__name__}: {exc}".rstrip(": ")


class Callback:
    """Override the hooks you need; each receives the loop's `RunState`. `attach` comes first and
    receives the `Loop` itself (model, loss_fn, optimizer, train/val batches) for callbacks that
    inspect them, such as the training doctor's."""

    def attach(self, loop) -> None: ...
    def on_fit_start(self, state: RunState) -> None: ...
    def on_step_end(self, state: RunState) -> None: ...
    def on_epoch_end(self, state: RunState) -> None: ...
    def on_fit_end(self, state: RunState) -> None: ...


class Monitor(Callback):
    """Tracks whether the monitored value improved by more than `min_delta`, in a declared direction."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.best: float | None = None

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def current(self, state: RunState) -> float:
        return float(state.history[-1][self.monitor])


class EarlyStopping(Monitor):
    """Stop when the monitored value has not improved for `patience` epochs."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.wait = patience, 0

    def on_epoch_end(self, state: RunState) -> None:
        value = self.current(state)
        if self.improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            state.request_stop("patience")


class BestCheckpoint(Monitor):
    """Save the best weights (and what loading them needs) at every improvement, atomically. The run
    state counts an epoch as the best only once its weights are safely on disk: if the write fails
    (a full disk), best.pt and best_epoch still agree, and the run restores what best.pt holds."""

    def __init__(self, monitor: str, mode: str, path: Path, snapshot, min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.path, self.snapshot = Path(path), snapshot  # snapshot(best_epoch, best): the dict to save

    def on_epoch_end(self, state: RunState) -> None:
        value = self.current(state)
        if not self.improved(value):
            return
        with deferred_interrupts():  # an interrupt waits until the file and the state agree
            save_checkpoint(self.path, self.snapshot(state.epoch, value))
            self.best = value
            state.best, state.best_epoch = value, state.epoch


class LastCheckpoint(Callback):
    """Save everything resume needs (weights, optimizer, scheduler, random states, history) at the end
    of every epoch, atomically, so a run killed at any moment resumes from its last whole epoch."""

    def __init__(self, path: Path, snapshot):
        self.path, self.snapshot = Path(path), snapshot  # snapshot(): the dict to save

    def on_epoch_end(self, state: RunState) -> None:
        save_checkpoint(self.path, self.snapshot())
