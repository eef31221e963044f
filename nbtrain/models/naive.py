"""Re-exports nbtrain.kinds.timeseries.naive: user code, bundles and checkpoints saved before the move name this module."""

from nbtrain.kinds.timeseries.naive import *  # noqa: F401,F403
from nbtrain.kinds.timeseries.naive import LastValue, SeasonalNaive  # noqa: F401
