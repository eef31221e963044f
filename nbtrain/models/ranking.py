"""Models of users and items for implicit feedback, and the popularity ranking they have to beat.

Graded relevance (query, document features) needs no model of its own: the tabular MLP scores each
row with one output (nbtrain.models.tabular).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nbtrain.errors import ConfigError


class MatrixFactorization(nn.Module):
    """score(user, item) = <p_user, q_item> + b_item: a user's and an item's learned embeddings
    (`dim` numbers each) and an item bias, the part of an item's score every user shares (its
    popularity). Called as model(users, items) with integer codes of equal shape; returns scores of
    that shape. Trained with BPR, only score differences within a user matter, so no user bias.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 32, init_std: float = 0.1):
        super().__init__()
        for name, value in (("n_users", n_users), ("n_items", n_items), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1; received {value!r}.")
        self.users = nn.Embedding(int(n_users), int(dim))
        self.items = nn.Embedding(int(n_items), int(dim))
        # 1-D, so AdamW does not decay it (nbtrain.training.optim): a bias is not a capacity to regularise
        self.item_bias = nn.Parameter(torch.zeros(int(n_items)))
        # small random vectors: dot products near 0 at the start, so no item is ranked high by chance
        nn.init.normal_(self.users.weight, std=init_std)
        nn.init.normal_(self.items.weight, std=init_std)
        self.config = {"n_users": int(n_users), "n_items": int(n_items), "dim": int(dim), "init_std": init_std}

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.users(users) * self.items(items)).sum(dim=-1) + self.item_bias[items]


class Popularity:
    """Every user gets the same ranking: items by how many train interactions they have. A strong
    reference for implicit feedback, and the one a personalised model has to beat to be worth it."""

    estimator_name = "Popularity"

    def __init__(self, counts: np.ndarray):
        counts = np.asarray(counts, dtype=float)
        # log keeps scores on the scale of a network's, for a comparable loss; the tiny rank term breaks
        # ties by item order, so a tie never depends on how the metrics happen to sort
        self.scores_ = np.log1p(counts) + 1e-6 * (1 - np.arange(len(counts)) / max(len(counts), 1))
        self.config = {"items": len(counts)}

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.scores_[np.asarray(items)]
