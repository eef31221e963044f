"""A network of users and items for implicit feedback (the classical baselines it has to beat are in
nbtrain.kinds.ranking.recommenders).

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

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(len(users), n_items) scores of every item, as one matrix product: what full-ranking evaluation
        calls (nbtrain.kinds.ranking.retrieval); a model of users and items may define it for speed."""
        return self.users(users) @ self.items.weight.T + self.item_bias
