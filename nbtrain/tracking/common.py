"""What the MLflow and W&B trackers share: quiet failure, run status, params, the run's bundle."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from nbtrain.errors import ConfigError, DataError, NbtrainWarning
from nbtrain.training.tracker import Tracker

# How a run ended, in the words trackers use (MLflow's run statuses; W&B reads FINISHED as exit code 0).
STATUS = {"interrupted": "KILLED", "stopped": "KILLED", "non_finite_loss": "FAILED", "error": "FAILED"}
_PARAM_CHARS = 500   # longer values are unreadable in the trackers' tables anyway


class QuietTracker(Tracker):
    """A tracker whose failures are one warning, after which nothing more is sent for the run."""

    service = "the tracker"
    errors: tuple = (OSError,)   # what a failed call of the service raises

    def __init__(self):
        self.stop_reason = None  # why the loop ended (on_fit_end runs whatever stopped it)
        self.finished = False    # finish() logged the run and ended the tracker's run
        self.failed = False      # a tracking error: warned once, then nothing more is sent

    def on_fit_end(self, state) -> None:
        self.stop_reason = state.stop_reason

    def _safely(self, action) -> None:
        if self.failed:
            return
        try:
            action()
        except self.errors as exc:
            self.failed = True
            warnings.warn(f"Logging to {self.service} failed ({exc}); nothing more is sent there for this run. "
                          "Training goes on, and the run is in the ledger (pipe.runs).", NbtrainWarning,
                          stacklevel=3)


def param_value(value) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else str(value)
    return text if len(text) <= _PARAM_CHARS else text[:_PARAM_CHARS - 3] + "..."


def best_metrics(run) -> dict:
    """The run's validation metrics at its best epoch, named best_<metric>."""
    return {f"best_{k.removeprefix('val_')}": v for k, v in run.best_metrics.items()}


def save_bundle(pipe, run, folder: Path) -> Path | None:
    """The run saved as a bundle in `folder`, or None where this kind cannot be bundled (nbtrain.bundle)."""
    try:
        return pipe.save(Path(folder) / f"{run.name}.nbtrain", run=run)
    except ConfigError:
        return None


def evidence_summary(evidence: dict) -> dict:
    """The evidence's headline facts as flat string values: trackers' tags and summaries hold no nesting."""
    split, validation, test = evidence["split"], evidence["validation"], evidence["test"]
    return {"split_method": split["method"], "split_seed": str(split["seed"]),
            "split_ratios": "/".join(f"{r:g}" for r in split["ratios"]),
            "preprocessing_fitted_on": f"train ({evidence['preprocessing']['train_rows']} rows)",
            "runs_compared": str(validation["runs_compared"]), "test_status": test["status"]}


def evidence_files(pipe, run, folder: Path) -> tuple[dict, list[Path]] | None:
    """The evidence behind the run's numbers (nbtrain.evidence), written to `folder` as evidence.json and
    README.md (the model card); None where the ledger cannot be read now (the tracker logs the rest)."""
    from nbtrain.evidence import collect
    from nbtrain.model_card import bundle_name, render
    from nbtrain.predictor import run_summary
    try:
        evidence = collect(pipe, run)
    except DataError as exc:
        warnings.warn(f"The evidence behind run {run.name!r} could not be read from the ledger ({exc}); the tracker "
                      "logs the run without it.", NbtrainWarning, stacklevel=4)
        return None
    classes = list(pipe.classes) if pipe.task in ("binary", "multiclass") else None
    card = render(run=run_summary(run), target=pipe.target, task=pipe.task, kind=pipe.kind, classes=classes,
                  evidence=evidence, bundle=bundle_name(pipe, run))
    folder = Path(folder)
    (folder / "evidence.json").write_text(json.dumps(evidence, indent=1, default=str), encoding="utf-8")
    (folder / "README.md").write_text(str(card), encoding="utf-8")
    return evidence, [folder / "evidence.json", folder / "README.md"]
