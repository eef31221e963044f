"""Re-exports nbtrain.kinds.text.baseline: user code, bundles and checkpoints saved before the move name this module."""

from nbtrain.kinds.text.baseline import *  # noqa: F401,F403
from nbtrain.kinds.text.baseline import TfidfBaseline, Vocabulary  # noqa: F401
