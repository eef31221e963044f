"""MLflow tracking: each nbtrain run also becomes an MLflow run, where a team keeps its experiments.

`pipe.fit(..., tracker="mlflow")` logs, to one MLflow run:

- every validation epoch as it ends (step = epoch): train_loss, val_loss, lr and the val_ metrics;
- when training ends: the run's config as params (lr, batch_size, model, loss, ...), its best
  validation metrics as best_<metric>, tags (nbtrain.run, nbtrain.dataset, nbtrain.split,
  nbtrain.stop_reason, nbtrain.best_epoch, nbtrain.diagnoses), and two artifacts: the best
  checkpoint (checkpoint/best.pt) and the run saved as a bundle (bundle/<run>.nbtrain), which
  `nbtrain.load` reads without the training data.

Where: `tracking_uri=` (or `tracker=MLflow(uri=...)`), else $MLFLOW_TRACKING_URI, else a local
SQLite store `sqlite:///<workdir>/mlflow.db` with artifacts under `<workdir>/mlartifacts`. The
experiment is `MLflow(experiment=...)`, else "nbtrain-<target>". See it with the MLflow UI:
`mlflow ui --backend-store-uri sqlite:///<workdir>/mlflow.db` (the UI needs the full `mlflow`).

A tracking failure never costs the training: it becomes a warning, and the run stays in the ledger.
MLflow is optional: `pip install 'nbtrain[mlflow]'`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from nbtrain.errors import ConfigError, NbtrainWarning
from nbtrain.training.callbacks import Callback, RunState

TRACKERS = ("mlflow",)
_PARAM_CHARS = 500   # MLflow allows 6000; longer values are unreadable in its tables anyway
_STATUS = {"interrupted": "KILLED", "stopped": "KILLED", "non_finite_loss": "FAILED", "error": "FAILED"}


@dataclass(frozen=True)
class MLflow:
    """Where to log: a tracking URI and an experiment name (both optional)."""

    uri: str | None = None
    experiment: str | None = None


def make_tracker(pipe, tracker=None, tracking_uri: str | None = None) -> MLflowTracker | None:
    """The tracker for one fit: None when neither `tracker` nor `tracking_uri` is given."""
    if tracker is None and tracking_uri is None:
        return None
    if tracker is None or (isinstance(tracker, str) and tracker.lower() in TRACKERS):
        tracker = MLflow()
    if not isinstance(tracker, MLflow):
        raise ConfigError(f"tracker={tracker!r} is not a tracker; use 'mlflow' or "
                          "nbtrain.tracking.MLflow(uri=..., experiment=...).")
    uri = tracking_uri or tracker.uri or os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = None
    if uri is None:  # the default store lives in the work folder, next to the ledger
        folder = Path(pipe.workdir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        uri, artifacts = f"sqlite:///{folder / 'mlflow.db'}", (folder / "mlartifacts").as_uri()
    return MLflowTracker(uri, tracker.experiment or f"nbtrain-{pipe.target}", artifacts)


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ConfigError("tracker='mlflow' needs MLflow, which is not installed: pip install 'nbtrain[mlflow]'.") \
            from exc
    return MlflowClient(tracking_uri=uri)


class MLflowTracker(Callback):
    """Logs one nbtrain run as one MLflow run: epochs while it trains, the rest by `finish`."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        self.uri, self.experiment = uri, experiment
        self.client = _client(uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found is not None else \
            self.client.create_experiment(experiment, artifact_location=artifact_location)
        self.run_id: str | None = None
        self.stop_reason = None  # why the loop ended (on_fit_end runs whatever stopped it)
        self.finished = False    # finish() logged the run and ended the MLflow run
        self.failed = False      # a tracking error: warned once, then nothing more is sent

    def on_fit_start(self, state: RunState) -> None:
        self._safely(lambda: setattr(self, "run_id", self.client.create_run(self.experiment_id).info.run_id))

    def on_epoch_end(self, state: RunState) -> None:
        record = state.history[-1]
        self._safely(lambda: self._log_metrics(record, step=int(record["epoch"])))

    def on_fit_end(self, state: RunState) -> None:
        self.stop_reason = state.stop_reason

    def close(self) -> None:
        """End an MLflow run that finish() never reached (fit raised: an error, or a second Interrupt):
        FAILED, or KILLED for an interrupted run."""
        if self.run_id is not None and not self.finished:
            status = _STATUS.get(self.stop_reason, "FAILED")
            self._safely(lambda: self.client.set_terminated(self.run_id, status=status))

    def finish(self, pipe, run) -> None:
        """Params, best metrics, tags and artifacts of the finished run; then the MLflow run ends."""
        if self.run_id is None or self.failed:
            return
        self._safely(lambda: self._finish(pipe, run))
        self.finished = True
        if not self.failed:
            run.notes.append(f"Logged to MLflow: run {self.run_id} in experiment {self.experiment!r} at {self.uri}.")

    def _finish(self, pipe, run) -> None:
        from mlflow.entities import Param, RunTag
        params = [Param(str(k), _param_value(v)) for k, v in run.config.items() if k != "name"]
        tags = {"nbtrain.run": run.name, "nbtrain.dataset": pipe.fingerprint, "nbtrain.split": pipe.split_id,
                "nbtrain.stop_reason": run.stop_reason, "nbtrain.best_epoch": str(run.best_epoch),
                "nbtrain.diagnoses": ", ".join(d.code for d in run.diagnoses) or "none"}
        self.client.log_batch(self.run_id, params=params, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        best = {f"best_{k.removeprefix('val_')}": v for k, v in run.best_metrics.items()}
        self._log_metrics(best, step=run.best_epoch)
        if run.checkpoint is not None and Path(run.checkpoint).is_file():
            self.client.log_artifact(self.run_id, str(run.checkpoint), "checkpoint")
        if pipe.kind == "tabular":  # bundles hold tabular pipelines only in this version (nbtrain.bundle)
            with tempfile.TemporaryDirectory() as folder:
                bundle = pipe.save(Path(folder) / f"{run.name}.nbtrain", run=run)
                self.client.log_artifact(self.run_id, str(bundle), "bundle")
        self.client.update_run(self.run_id, name=run.name)
        self.client.set_terminated(self.run_id, status=_STATUS.get(run.stop_reason, "FINISHED"))

    def _log_metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(str(k), float(v), now, step) for k, v in values.items()
                   if k != "epoch" and isinstance(v, (int, float)) and not math.isnan(v)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def _safely(self, action) -> None:
        """Run one MLflow call; a failure is reported once and ends the logging, never the training."""
        if self.failed:
            return
        from mlflow.exceptions import MlflowException
        try:
            action()
        except (MlflowException, OSError) as exc:
            self.failed = True
            warnings.warn(f"MLflow logging to {self.uri} failed ({exc}); nothing more is sent to MLflow for this "
                          "run. Training goes on, and the run is in the ledger (pipe.runs).", NbtrainWarning,
                          stacklevel=2)


def _param_value(value) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else str(value)
    return text if len(text) <= _PARAM_CHARS else text[:_PARAM_CHARS - 3] + "..."
