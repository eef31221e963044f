"""`Run`: what one call of `fit` produced, readable as text and as HTML."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from torch import nn

from nbtrain.report import Report

STOP_REASONS = {
    "patience": "early stopping: the monitored metric stopped improving",
    "max_epochs": "it reached the epoch limit",
    "interrupted": "it was interrupted (KeyboardInterrupt)",
    "stopped": "a stop was requested",
    "pruned": "its sweep's pruner judged it hopeless (its validation metric trailed the earlier trials')",
    "non_finite_loss": "the training loss became NaN or infinite",
    "error": "an error ended it (run.error says which; the best weights so far were kept)",
    "incomplete": "its process ended before the run did (killed, a kernel restart); resume it from its folder",
    "running": "it has not stopped: another process is still training it",
}


@dataclass(repr=False)
class Run(Report):
    """One training run: its config, per-epoch history, where it stopped and why, its best weights."""

    title = "Run"
    name: str = ""
    config: dict = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)  # epoch, train_loss, val_loss, lr, val_*
    monitor: str = "val_loss"
    best_epoch: int = 0                  # 0: no epoch improved on the initial weights
    best_value: float | None = None
    stop_reason: str = ""
    checkpoint: Path | None = None       # the best weights (None when no epoch improved)
    last_checkpoint: Path | None = None  # where resume= continues from (last.pt: written every epoch)
    folder: Path | None = None           # <workdir>/runs/<name>: checkpoints, TensorBoard events, run.json
    error: str | None = None             # what ended the run when stop_reason is "error"
    model: nn.Module | None = None       # holds the best weights
    diagnoses: list = field(default_factory=list)  # the training doctor's Diagnosis objects, most important first
    lrs: list = field(default_factory=list)   # the lr at every optimizer step
    wall_seconds: float = 0.0
    samples_per_s: float = 0.0
    notes: list = field(default_factory=list)   # e.g. how it compares with the tree baseline
    warnings: list = field(default_factory=list)

    @property
    def kind(self) -> str:
        """"nn" for a trained network, "baseline" for the tree baseline."""
        return self.config.get("kind", "nn")

    @property
    def best_metrics(self) -> dict:
        """Validation loss and metrics at the best epoch."""
        if not self.best_epoch:
            return {}
        row = self.history.set_index("epoch").loc[self.best_epoch]
        return {k: float(v) for k, v in row.items() if k.startswith("val_")}

    def record(self, dataset_id: str, split_id: str, cell_text: str | None = None) -> dict:
        """The run as a row of the ledger's runs table (the error, if any, is kept in its config)."""
        return {"name": self.name, "dataset_id": dataset_id, "split_id": split_id, "kind": self.kind,
                "model": self.config.get("model", ""), "parameters": self.config.get("parameters"),
                "config": {**self.config, **({"error": self.error} if self.error else {})}, "monitor": self.monitor, "mode": self.config.get("mode", "min"),
                "best_epoch": self.best_epoch, "best_value": self.best_value, "best_metrics": self.best_metrics,
                "stop_reason": self.stop_reason, "wall_seconds": self.wall_seconds,
                "samples_per_s": self.samples_per_s, "cell_text": cell_text,
                "diagnoses": [asdict(d) for d in self.diagnoses]}

    def _summary(self) -> list[str]:
        if self.kind == "baseline":
            scores = ", ".join(f"{k} {v:.4g}" for k, v in self.best_metrics.items())
            return [f"Baseline {self.name!r} ({self.config.get('model')}), fitted on the train split in "
                    f"{self.wall_seconds:.1f} s. Validation: {scores}.", *self.notes]
        epochs = len(self.history)
        lines = [f"Run {self.name!r}: {epochs} epochs; stopped because {STOP_REASONS.get(self.stop_reason, self.stop_reason)}."]
        lines += [f"Error: {self.error}"] if self.error else []
        if self.best_epoch:
            lines.append(f"Best {self.monitor} {self.best_value:.4g} at epoch {self.best_epoch}; "
                         "those weights are in run.model.")
        else:
            lines.append("No epoch improved on the initial weights; run.model holds the initial weights.")
        # the training doctor's profile note gives the throughput with where the time went: say it once
        speed = ("" if any("samples/s" in note for note in self.notes) else
                 f"{self.samples_per_s:,.0f} train samples/s on {self.config.get('device', '?')}; ")
        lines.append(f"Loss: {self.config.get('loss_reason', '?')}. {speed}{self.wall_seconds:.1f} s in all.")
        return lines + self.notes

    def _sections(self):
        if self.history.empty or self.kind == "baseline":
            return []
        shown = self.history.set_index("epoch")
        shown = shown.round(4).assign(lr=shown["lr"].map("{:.2e}".format))
        keep = list(shown.index)
        if len(shown) > 12:
            keep = sorted({*shown.index[:3], *shown.index[-8:], *([self.best_epoch] if self.best_epoch else [])})
        diagnoses = [("Diagnoses (most important first)", [str(d) for d in self.diagnoses])] if self.diagnoses else []
        return [("History (best epoch marked *)", _with_gaps(shown, keep, self.best_epoch)), *diagnoses]


def _with_gaps(history: pd.DataFrame, keep: list, best_epoch: int) -> pd.DataFrame:
    """The kept epochs, each row labelled by its epoch (the best marked *), and a row saying how many
    epochs are left out wherever the kept ones are not consecutive."""
    parts, previous = [], None
    for epoch in keep:
        if previous is not None and epoch - previous > 1:
            skipped = epoch - previous - 1
            parts.append(pd.DataFrame([["…"] * history.shape[1]], columns=history.columns,
                                      index=[f"… {skipped} epoch{'s' if skipped > 1 else ''}"]))
        parts.append(history.loc[[epoch]].rename(index=lambda e: f"{e}*" if e == best_epoch else str(e)))
        previous = epoch
    return pd.concat(parts) if parts else history
