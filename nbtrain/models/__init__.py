"""Models nbtrain builds by default, usable on their own too."""

from nbtrain.models.tabular import MLP, embedding_width
from nbtrain.models.ranking import MatrixFactorization
from nbtrain.models.recommenders import ALS, EASE, ItemKNN, Popularity
from nbtrain.models.vision import VisionModel, vision
from nbtrain.models.naive import LastValue, SeasonalNaive
from nbtrain.models.sequence import LSTMForecaster, TransformerForecaster
# `text` is the builder function: bound after the submodule import, so nt.models.text(...) calls it
from nbtrain.models.text import TextModel, text

__all__ = ["MLP", "embedding_width", "MatrixFactorization", "Popularity", "ItemKNN", "EASE", "ALS", "VisionModel", "vision", "LSTMForecaster", "TransformerForecaster", "LastValue", "SeasonalNaive", "TextModel", "text"]
