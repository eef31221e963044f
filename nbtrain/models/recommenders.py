"""Re-exports nbtrain.kinds.ranking.recommenders: user code saved before the move names this module."""

from nbtrain.kinds.ranking.recommenders import *  # noqa: F401,F403
from nbtrain.kinds.ranking.recommenders import ALS, EASE, RECOMMENDERS, ItemKNN, Popularity, Recommender  # noqa: F401
