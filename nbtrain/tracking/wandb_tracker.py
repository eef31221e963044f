"""Weights & Biases tracking: each nbtrain run also becomes a W&B run.

`pipe.fit(..., tracker="wandb")` logs, to one W&B run:

- every validation epoch as it ends (step = epoch): train_loss, val_loss, lr and the val_ metrics;
- when training ends: the run's config, its best validation metrics as best_<metric> in the summary,
  the stop reason and best epoch, the doctor's diagnoses (a table: code, severity, evidence, fix), and
  two artifacts of type "model": the best checkpoint (`<run>-checkpoint`) and the run saved as a
  bundle (`<run>-bundle`, which `nbtrain.load` reads without the training data);
- the evidence behind the numbers (nbtrain.evidence): evidence/<fact> in the summary (split method, seed
  and ratios, rows preprocessing was fitted on, runs compared on validation, test status) and an
  artifact `<run>-evidence` of type "evidence" holding evidence.json and README.md (the model card).

It never waits for a login. With `WANDB_MODE` set, W&B's own rules apply. Without it, and without
credentials (`WANDB_API_KEY`, or a `wandb login` entry in ~/.netrc), the run is written offline under
`<workdir>/wandb/` (or `$WANDB_DIR`), and the run's notes say where and how to upload it later
(`wandb sync <folder>`). The project is `WandB(project=...)`, else $WANDB_PROJECT, else "nbtrain-<target>".

W&B is optional: `pip install 'nbtrain[wandb]'`.
"""

from __future__ import annotations

import math
import netrc
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from nbtrain.errors import ConfigError
from nbtrain.tracking.common import STATUS, QuietTracker, best_metrics, evidence_files, evidence_summary, save_bundle
from nbtrain.training.callbacks import RunState

_DEFAULT_HOST = "https://api.wandb.ai"


@dataclass(frozen=True)
class WandB:
    """Where to log: a project, an entity (team or user) and a mode ("online", "offline"); all optional."""

    project: str | None = None
    entity: str | None = None
    mode: str | None = None


def has_credentials() -> bool:
    """Whether wandb.init could log in without asking: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", _DEFAULT_HOST)).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_tracker(pipe, spec: WandB) -> WandbTracker:
    """The W&B tracker for one fit of `pipe`: offline unless a mode is set or credentials exist."""
    try:
        import wandb  # noqa: F401  (imported here to fail early, before training starts)
    except ImportError as exc:
        raise ConfigError("tracker='wandb' needs Weights & Biases, which is not installed: "
                          "pip install 'nbtrain[wandb]'.") from exc
    mode = spec.mode or os.environ.get("WANDB_MODE") or ("online" if has_credentials() else "offline")
    folder = Path(os.environ.get("WANDB_DIR") or Path(pipe.workdir).resolve())
    project = spec.project or os.environ.get("WANDB_PROJECT") or f"nbtrain-{pipe.target}"
    return WandbTracker(project, spec.entity, mode, folder,
                        asked=bool(spec.mode or os.environ.get("WANDB_MODE")))


class WandbTracker(QuietTracker):
    """Logs one nbtrain run as one W&B run: epochs while it trains, the rest by `finish`."""

    name = "wandb"
    # any failure of W&B's client or its service process (MailboxClosedError when the service is gone is
    # not a wandb.Error): tracking must never end a run
    errors = (Exception,)

    def __init__(self, project: str, entity: str | None, mode: str, folder: Path, asked: bool = True):
        super().__init__()
        self.project, self.entity, self.mode, self.folder, self.asked = project, entity, mode, folder, asked
        self.service = f"W&B ({mode}, project {project!r})"
        self.run = None

    def on_fit_start(self, state: RunState) -> None:
        import wandb
        self.folder.mkdir(parents=True, exist_ok=True)
        # console="off": W&B must not wrap the notebook's output streams; silent: no banner in the cell
        settings = wandb.Settings(silent=True, console="off", save_code=False, disable_git=True)
        self._safely(lambda: setattr(self, "run", wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, dir=str(self.folder),
            settings=settings, reinit="create_new")))

    def on_epoch_end(self, state: RunState) -> None:
        record = state.history[-1]
        values = {k: float(v) for k, v in record.items()
                  if k != "epoch" and isinstance(v, (int, float)) and not math.isnan(v)}
        if self.run is not None:
            self._safely(lambda: self.run.log(values, step=int(record["epoch"])))

    def close(self) -> None:
        """End a W&B run that finish() never reached (fit raised: an error, or a second Interrupt) as failed."""
        if self.run is not None and not self.finished:
            self._safely(lambda: self.run.finish(exit_code=1))
            self.run = None

    def finish(self, pipe, run) -> None:
        """Config, best metrics, diagnoses and artifacts of the finished run; then the W&B run ends."""
        if self.run is None or self.failed:
            return
        folder = Path(self.run.dir).parent  # offline-run-<time>-<id>, the folder `wandb sync` takes
        self._safely(lambda: self._finish(pipe, run))
        self.finished = True
        if self.failed:
            return
        if self.mode == "offline":
            why = "" if self.asked else " (no W&B credentials and no WANDB_MODE, so nbtrain did not wait for a login)"
            run.notes.append(f"Logged to W&B offline{why}: {folder}. Upload it with `wandb sync {folder}`.")
        else:
            run.notes.append(f"Logged to W&B: run {self.run.id} in project {self.project!r} ({self.run.url}).")
        self.run = None

    def _finish(self, pipe, run) -> None:
        import wandb
        wrun = self.run
        wrun.name = run.name
        wrun.config.update({k: v for k, v in run.config.items() if k != "name"}, allow_val_change=True)
        wrun.summary.update({**best_metrics(run), "best_epoch": run.best_epoch, "stop_reason": run.stop_reason,
                             "nbtrain_dataset": pipe.fingerprint, "nbtrain_split": pipe.split_id})
        wrun.tags = tuple(sorted({*wrun.tags, run.config.get("model", "model"), *(d.code for d in run.diagnoses)}))
        if run.diagnoses:
            table = wandb.Table(columns=["code", "severity", "evidence", "fix"],
                                data=[[d.code, d.severity, d.evidence, d.fix] for d in run.diagnoses])
            wrun.log({"diagnoses": table}, step=max(run.best_epoch, len(run.history)))
        with tempfile.TemporaryDirectory() as temp:
            for what, path in (("checkpoint", run.checkpoint), ("bundle", save_bundle(pipe, run, Path(temp)))):
                if path is not None and Path(path).is_file():
                    artifact = wandb.Artifact(f"{run.name}-{what}", type="model",
                                              metadata={"nbtrain_run": run.name, "best_epoch": run.best_epoch})
                    artifact.add_file(str(path))
                    wrun.log_artifact(artifact)
            self._log_evidence(wrun, pipe, run, Path(temp) / "evidence")
            wrun.finish(exit_code=0 if STATUS.get(run.stop_reason, "FINISHED") != "FAILED" else 1)

    @staticmethod
    def _log_evidence(wrun, pipe, run, folder: Path) -> None:
        """The evidence behind the numbers: evidence/<fact> in the summary, and an artifact `<run>-evidence`
        (type "evidence") holding evidence.json and README.md (the model card, nbtrain.model_card)."""
        import wandb
        folder.mkdir()
        found = evidence_files(pipe, run, folder)
        if found is None:
            return
        evidence, files = found
        wrun.summary.update({f"evidence/{k}": v for k, v in evidence_summary(evidence).items()})
        artifact = wandb.Artifact(f"{run.name}-evidence", type="evidence", metadata=evidence_summary(evidence))
        for path in files:
            artifact.add_file(str(path))
        wrun.log_artifact(artifact)
