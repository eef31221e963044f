"""Re-exports nbtrain.kinds.timeseries.models: user code, bundles and checkpoints saved before the move name this module."""

from nbtrain.kinds.timeseries.models import *  # noqa: F401,F403
from nbtrain.kinds.timeseries.models import LSTMForecaster, TransformerForecaster  # noqa: F401
