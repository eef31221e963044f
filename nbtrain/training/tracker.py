"""The interface every experiment tracker shares: TensorBoard, MLflow, Weights & Biases.

A tracker is a Callback: it sees the run start, each epoch end and the run end while the loop runs.
Then the pipeline calls `close()` whatever happened (an exception included), and `finish(pipe, run)`
once the run is logged in the ledger (its config, best metrics, diagnoses, checkpoint, bundle). A
third tracker is a small class that overrides the hooks it needs.

A tracker never costs the training: a failure to log is one warning, then it stays quiet.
"""

from __future__ import annotations

from nbtrain.training.callbacks import Callback


class Tracker(Callback):
    """Base class of experiment trackers; every hook is a no-op."""

    name = "tracker"

    def finish(self, pipe, run) -> None:
        """The finished run, once it is in the ledger: params, best metrics, diagnoses, artifacts."""

    def close(self) -> None:
        """Called after every fit, even one ended by an exception: release what the tracker holds, and
        mark a run that never reached on_fit_end as failed."""
