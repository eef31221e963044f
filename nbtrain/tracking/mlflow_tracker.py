"""MLflow tracking: each nbtrain run also becomes an MLflow run, where a team keeps its experiments.

`pipe.fit(..., tracker="mlflow")` logs, to one MLflow run:

- every validation epoch as it ends (step = epoch): train_loss, val_loss, lr and the val_ metrics;
- when training ends: the run's config as params (lr, batch_size, model, loss, ...), its best
  validation metrics as best_<metric>, tags (nbtrain.run, nbtrain.dataset, nbtrain.split,
  nbtrain.stop_reason, nbtrain.best_epoch, nbtrain.diagnoses), and two artifacts: the best
  checkpoint (checkpoint/best.pt) and the run saved as a bundle (bundle/<run>.nbtrain), which
  `nbtrain.load` reads without the training data;
- the evidence behind the numbers (nbtrain.evidence): tags nbtrain.evidence.* (split method, seed and
  ratios, rows preprocessing was fitted on, runs compared on validation, test status) and the files
  evidence/evidence.json and evidence/README.md (the model card, nbtrain.model_card).

Where: `tracking_uri=` (or `tracker=MLflow(uri=...)`), else $MLFLOW_TRACKING_URI, else a local
SQLite store `sqlite:///<workdir>/mlflow.db` with artifacts under `<workdir>/mlartifacts`. The
experiment is `MLflow(experiment=...)`, else "nbtrain-<target>". See it with the MLflow UI:
`mlflow ui --backend-store-uri sqlite:///<workdir>/mlflow.db` (the UI needs the full `mlflow`).

MLflow is optional: `pip install 'nbtrain[mlflow]'`.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nbtrain.errors import ConfigError
from nbtrain.tracking.common import (STATUS, QuietTracker, best_metrics, evidence_files, evidence_summary, param_value,
                                    save_bundle)
from nbtrain.training.callbacks import RunState


@dataclass(frozen=True)
class MLflow:
    """Where to log: a tracking URI and an experiment name (both optional)."""

    uri: str | None = None
    experiment: str | None = None


def mlflow_tracker(pipe, spec: MLflow, tracking_uri: str | None = None) -> MLflowTracker:
    """The MLflow tracker for one fit of `pipe`: where to log, from `spec`, `tracking_uri` or the default."""
    uri = tracking_uri or spec.uri or os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = None
    if uri is None:  # the default store lives in the work folder, next to the ledger
        folder = Path(pipe.workdir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        uri, artifacts = f"sqlite:///{folder / 'mlflow.db'}", (folder / "mlartifacts").as_uri()
    return MLflowTracker(uri, spec.experiment or f"nbtrain-{pipe.target}", artifacts)


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ConfigError("tracker='mlflow' needs MLflow, which is not installed: pip install 'nbtrain[mlflow]'.") \
            from exc
    return MlflowClient(tracking_uri=uri)


class MLflowTracker(QuietTracker):
    """Logs one nbtrain run as one MLflow run: epochs while it trains, the rest by `finish`."""

    name = "mlflow"

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        super().__init__()
        self.client = _client(uri)
        from mlflow.exceptions import MlflowException
        self.uri, self.experiment = uri, experiment
        self.service, self.errors = f"MLflow at {uri}", (MlflowException, OSError)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found is not None else \
            self.client.create_experiment(experiment, artifact_location=artifact_location)
        self.run_id: str | None = None

    def on_fit_start(self, state: RunState) -> None:
        self._safely(lambda: setattr(self, "run_id", self.client.create_run(self.experiment_id).info.run_id))

    def on_epoch_end(self, state: RunState) -> None:
        record = state.history[-1]
        self._safely(lambda: self._log_metrics(record, step=int(record["epoch"])))

    def close(self) -> None:
        """End an MLflow run that finish() never reached (fit raised: an error, or a second Interrupt):
        FAILED, or KILLED for an interrupted run."""
        if self.run_id is not None and not self.finished:
            status = STATUS.get(self.stop_reason, "FAILED")
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
        params = [Param(str(k), param_value(v)) for k, v in run.config.items() if k != "name"]
        tags = {"nbtrain.run": run.name, "nbtrain.dataset": pipe.fingerprint, "nbtrain.split": pipe.split_id,
                "nbtrain.stop_reason": run.stop_reason, "nbtrain.best_epoch": str(run.best_epoch),
                "nbtrain.diagnoses": ", ".join(d.code for d in run.diagnoses) or "none"}
        self.client.log_batch(self.run_id, params=params, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self._log_metrics(best_metrics(run), step=run.best_epoch)
        if run.checkpoint is not None and Path(run.checkpoint).is_file():
            self.client.log_artifact(self.run_id, str(run.checkpoint), "checkpoint")
        with tempfile.TemporaryDirectory() as folder:
            bundle = save_bundle(pipe, run, Path(folder))
            if bundle is not None:
                self.client.log_artifact(self.run_id, str(bundle), "bundle")
            self._log_evidence(pipe, run, Path(folder) / "evidence")
        self.client.update_run(self.run_id, name=run.name)
        self.client.set_terminated(self.run_id, status=STATUS.get(run.stop_reason, "FINISHED"))

    def _log_evidence(self, pipe, run, folder: Path) -> None:
        """The evidence behind the numbers: nbtrain.evidence.* tags and evidence/ (evidence.json, README.md)."""
        from mlflow.entities import RunTag
        folder.mkdir()
        found = evidence_files(pipe, run, folder)
        if found is None:
            return
        evidence, files = found
        tags = [RunTag(f"nbtrain.evidence.{k}", v) for k, v in evidence_summary(evidence).items()]
        self.client.log_batch(self.run_id, tags=tags)
        for path in files:
            self.client.log_artifact(self.run_id, str(path), "evidence")

    def _log_metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(str(k), float(v), now, step) for k, v in values.items()
                   if k != "epoch" and isinstance(v, (int, float)) and not math.isnan(v)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
