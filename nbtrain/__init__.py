"""nbtrain: train neural networks from a notebook the way experts do."""

from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainError, StageError, TestSetLockedError
from nbtrain.pipeline import Pipeline

__version__ = "0.1.0"
__all__ = ["Pipeline", "NbtrainError", "StageError", "LeakageError", "TestSetLockedError", "DataError",
           "ConfigError", "__version__"]
