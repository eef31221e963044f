"""Re-exports nbtrain.kinds.ranking.models: user code, bundles and checkpoints saved before the move name it."""

from nbtrain.kinds.ranking.models import *  # noqa: F401,F403
from nbtrain.kinds.ranking.models import MatrixFactorization  # noqa: F401
