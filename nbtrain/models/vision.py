"""Re-exports nbtrain.kinds.image.models: user code, bundles and checkpoints saved before the move name this module."""

from nbtrain.kinds.image.models import *  # noqa: F401,F403
from nbtrain.kinds.image.models import VisionModel, vision  # noqa: F401  (what nt.models exposes from here)
