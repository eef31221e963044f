"""The training engine: losses, optimizers and schedules, the loop, callbacks, checkpoints."""

from nbtrain.training.callbacks import Callback, RunState
from nbtrain.training.run import Run

__all__ = ["Callback", "Run", "RunState"]
