"""Models nbtrain builds by default, usable on their own too."""

from nbtrain.models.tabular import MLP, embedding_width

__all__ = ["MLP", "embedding_width"]
