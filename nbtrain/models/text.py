"""Re-exports nbtrain.kinds.text.models: user code, bundles and checkpoints saved before the move name this module."""

from nbtrain.kinds.text.models import *  # noqa: F401,F403
from nbtrain.kinds.text.models import TextModel, text  # noqa: F401  (what nt.models exposes from here)
