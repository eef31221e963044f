"""The old path of nt.models.vision (now nbtrain.kinds.image.models): kept for user imports and for bundles and checkpoints saved before the move, which name this module."""

from nbtrain.kinds.image.models import *  # noqa: F401,F403
from nbtrain.kinds.image.models import VisionModel, vision  # noqa: F401  (what nt.models exposes from here)
