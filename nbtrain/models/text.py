"""The old path of nt.models.text (now nbtrain.kinds.text.models): kept for user imports and for bundles and checkpoints saved before the move, which name this module."""

from nbtrain.kinds.text.models import *  # noqa: F401,F403
from nbtrain.kinds.text.models import TextModel, text  # noqa: F401  (what nt.models exposes from here)
