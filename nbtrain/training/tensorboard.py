"""TensorBoard logging: one event folder per run, `<workdir>/runs/<run name>/`.

Per epoch: loss/train, loss/val and val/<metric>; per optimizer step: lr (written in bulk at each
epoch's end, so logging costs nothing inside the step loop). The run's hyperparameters and best
results go through the HParams plugin into the run's own folder, so `tensorboard --logdir
<workdir>/runs` lists runs by name and compares them side by side.
"""

from __future__ import annotations

import math
from pathlib import Path

from nbtrain.training.callbacks import Callback, RunState

_HPARAM_TYPES = (int, float, str, bool)


class TensorBoardLogger(Callback):
    def __init__(self, logdir: Path, config: dict):
        self.logdir, self.config = Path(logdir), config
        self.writer = None
        self.logged_steps = 0

    def on_fit_start(self, state: RunState) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when a run starts
        self.writer = SummaryWriter(log_dir=str(self.logdir))
        self.logged_steps = len(state.lrs)  # a resumed run already logged its earlier steps

    def on_epoch_end(self, state: RunState) -> None:
        record = state.history[-1]
        for key, value in record.items():
            if key in ("epoch", "lr") or not math.isfinite(value):
                continue
            tag = {"train_loss": "loss/train", "val_loss": "loss/val"}.get(key, key.replace("val_", "val/", 1))
            self.writer.add_scalar(tag, value, record["epoch"])
        self._write_lrs(state)

    def on_fit_end(self, state: RunState) -> None:
        try:
            self._write_results(state)
        finally:  # whatever happened: a writer left open keeps a thread and an open file per run
            self.writer.close()

    def _write_results(self, state: RunState) -> None:
        from torch.utils.tensorboard.summary import hparams
        self._write_lrs(state)
        best = state.history[state.best_epoch - 1] if state.best_epoch else {}
        results = {f"hparam/{k}": v for k, v in best.items() if k.startswith("val_") and math.isfinite(v)}
        settings = {k: v for k, v in self.config.items() if isinstance(v, _HPARAM_TYPES) and v is not None}
        if results:
            # written into this run's own folder (SummaryWriter.add_hparams would start a new one)
            for summary in hparams(settings, results):
                self.writer.file_writer.add_summary(summary)
            for tag, value in results.items():
                self.writer.add_scalar(tag, value, state.best_epoch)

    def _write_lrs(self, state: RunState) -> None:
        for step in range(self.logged_steps, len(state.lrs)):
            self.writer.add_scalar("lr", state.lrs[step], step + 1)
        self.logged_steps = len(state.lrs)
