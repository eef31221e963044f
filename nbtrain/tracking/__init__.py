"""Experiment trackers: where a team keeps its runs, beside nbtrain's own ledger and TensorBoard.

`pipe.fit(..., tracker="mlflow")`, `tracker="wandb"`, or both: `tracker=["mlflow", "wandb"]`; a spec
object says where (`MLflow(uri=..., experiment=...)`, `WandB(project=..., entity=..., mode=...)`).
Every tracker shares one interface with TensorBoard's logger (nbtrain.training.tracker.Tracker).
"""

from __future__ import annotations

from nbtrain.errors import ConfigError
from nbtrain.tracking.mlflow_tracker import MLflow, mlflow_tracker
from nbtrain.tracking.wandb_tracker import WandB, wandb_tracker
from nbtrain.training.tracker import Tracker

TRACKERS = {"mlflow": MLflow, "wandb": WandB}

__all__ = ["MLflow", "WandB", "Trackers", "make_tracker"]


class Trackers(Tracker):
    """Several trackers as one: each hook goes to every tracker, in order."""

    def __init__(self, trackers: list):
        self.trackers = list(trackers)
        self.name = "+".join(t.name for t in self.trackers)

    def attach(self, loop) -> None:
        for tracker in self.trackers:
            tracker.attach(loop)

    def on_fit_start(self, state) -> None:
        for tracker in self.trackers:
            tracker.on_fit_start(state)

    def on_epoch_end(self, state) -> None:
        for tracker in self.trackers:
            tracker.on_epoch_end(state)

    def on_fit_end(self, state) -> None:
        for tracker in self.trackers:
            tracker.on_fit_end(state)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()

    def finish(self, pipe, run) -> None:
        for tracker in self.trackers:
            tracker.finish(pipe, run)


def make_tracker(pipe, tracker=None, tracking_uri: str | None = None) -> Tracker | None:
    """The tracker(s) for one fit: None when neither `tracker` nor `tracking_uri` is given.

    `tracker`: "mlflow", "wandb", an MLflow(...) or WandB(...) spec, or a list of them; `tracking_uri`
    alone means MLflow at that URI."""
    if tracker is None and tracking_uri is None:
        return None
    specs = tracker if isinstance(tracker, (list, tuple)) else [tracker if tracker is not None else "mlflow"]
    if not specs:
        raise ConfigError("tracker=[] names no tracker; use 'mlflow', 'wandb' or a list of them.")
    specs = [_spec(s) for s in specs]
    if tracking_uri is not None and not any(isinstance(s, MLflow) for s in specs):
        raise ConfigError(f"tracking_uri={tracking_uri!r} is where MLflow logs, but tracker={tracker!r} has no "
                          "MLflow; add 'mlflow' to tracker=, or drop tracking_uri= (W&B reads WANDB_* settings).")
    built = [_one(pipe, s, tracking_uri) for s in specs]
    return built[0] if len(built) == 1 else Trackers(built)


def _spec(tracker):
    if isinstance(tracker, str) and tracker.lower() in TRACKERS:
        return TRACKERS[tracker.lower()]()
    if isinstance(tracker, tuple(TRACKERS.values())):
        return tracker
    raise ConfigError(f"tracker={tracker!r} is not a tracker; use 'mlflow' or 'wandb' (or a list of both), or "
                      "nbtrain.tracking.MLflow(uri=..., experiment=...) / WandB(project=..., entity=..., mode=...).")


def _one(pipe, spec, tracking_uri):
    if isinstance(spec, MLflow):
        return mlflow_tracker(pipe, spec, tracking_uri)
    return wandb_tracker(pipe, spec)
