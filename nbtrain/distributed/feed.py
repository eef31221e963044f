"""What rank 0 tells the notebook while it trains, through two files in the run's folder.

- epochs.jsonl: one line per finished epoch (the history record, the best epoch so far, the steps and their
  learning rates), appended and flushed at the epoch's end; the notebook reads whole lines only.
- result.json: written once the run ends, however it ends: the stop reason, the error, the time spent.
"""

from __future__ import annotations

import json
from pathlib import Path

from nbtrain.files import atomic_write, io_error
from nbtrain.training.callbacks import Callback, RunState

EPOCHS = "epochs.jsonl"
RESULT = "result.json"


class Feed(Callback):
    """Rank 0's callback: an epochs.jsonl line at every epoch's end, result.json at the run's end."""

    def __init__(self, folder: Path):
        self.folder, self.loop, self._steps_sent = Path(folder), None, 0

    def attach(self, loop) -> None:
        self.loop = loop

    def on_fit_start(self, state: RunState) -> None:
        self._steps_sent = len(state.lrs)

    def on_epoch_end(self, state: RunState) -> None:
        line = {"record": state.history[-1], "epoch": state.epoch, "step": state.step, "best": state.best,
                "best_epoch": state.best_epoch, "lrs": state.lrs[self._steps_sent:]}
        self._steps_sent = len(state.lrs)
        path = self.folder / EPOCHS
        try:
            with open(path, "a") as out:
                out.write(json.dumps(line) + "\n")
                out.flush()
        except OSError as exc:
            raise io_error(path, exc, "writing the run's epochs for the notebook") from exc

    def on_fit_end(self, state: RunState) -> None:
        result = {"stop_reason": state.stop_reason, "error": state.error, "epoch": state.epoch, "step": state.step,
                  "best": state.best, "best_epoch": state.best_epoch, "lrs": state.lrs, "history": state.history,
                  "non_finite_step": state.non_finite_step, "train_seconds": self.loop.train_seconds,
                  "data_seconds": self.loop.data_seconds}
        atomic_write(self.folder / RESULT, lambda out: out.write(json.dumps(result).encode()),
                     doing="writing the run's result for the notebook")


class Follower:
    """The notebook's reader of epochs.jsonl: the lines written since its last look."""

    def __init__(self, folder: Path):
        self.path, self.offset = Path(folder) / EPOCHS, 0

    def new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        whole = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next look
        self.offset += len(whole)
        return [json.loads(line) for line in whole.splitlines() if line.strip()]


def read_result(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / RESULT).read_text())
    except (FileNotFoundError, ValueError):
        return None
