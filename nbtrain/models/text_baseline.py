"""The old path of the TF-IDF baseline (now nbtrain.kinds.text.baseline): kept for user imports and for files saved before the move, which name this module."""

from nbtrain.kinds.text.baseline import *  # noqa: F401,F403
from nbtrain.kinds.text.baseline import TfidfBaseline, Vocabulary  # noqa: F401
