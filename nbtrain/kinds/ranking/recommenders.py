"""Classical recommenders of implicit feedback: the baselines a practitioner fits before a network.

Each is fitted on the train interactions as a users x items 0/1 matrix (scipy CSR, codes from
nbtrain.kinds.ranking.data.InteractionCodes) and scores a block of users against every item with
`score_users(user codes) -> (users, items)` array, higher ranks first; `score(users, items)` scores
single pairs. None of them can score a user or item train never saw.

- `Popularity`: every user gets the same ranking, items by their number of train interactions.
- `ItemKNN`: item-based nearest neighbours (Sarwar et al. 2001): cosine similarity between items'
  user columns, each item keeping its `neighbours` most similar; a user's score of an item is the sum
  of its similarities to the items the user interacted with.
- `EASE`: Steck's closed-form linear autoencoder (2019): B = I - P diagMat(1 / diag(P)), P =
  (X'X + l2 I)^-1, diagonal of B zero; scores X_u B. Needs two dense items x items matrices.
- `ALS`: implicit's alternating least squares (Hu, Koren & Volinsky 2008), the `implicit` package
  (the optional extra nbtrain[implicit]).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.linalg import lapack

from nbtrain.errors import ConfigError

SCORES_PER_BLOCK = 1 << 22   # scores computed at once by score() (16 MB of float32)
EASE_MAX_ITEMS = 20_000      # a few dense items x items float32 matrices: 1.6 GB each at this size


class Recommender:
    """Shared parts: the train matrix, pair scores from score_users, a config for the run record."""

    estimator_name = "Recommender"

    def fit(self, interactions: sparse.csr_matrix) -> Recommender:
        self.train_ = sparse.csr_matrix(interactions, dtype=np.float32)
        self._fit(self.train_)
        return self

    def _fit(self, X: sparse.csr_matrix) -> None: ...

    @property
    def n_items(self) -> int:
        return self.train_.shape[1]

    def score_users(self, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of (user, item) pairs, computed a block of users at a time."""
        users, items = np.asarray(users), np.asarray(items)
        out = np.empty(len(users), dtype=np.float32)
        unique, inverse = np.unique(users, return_inverse=True)
        step = max(1, SCORES_PER_BLOCK // max(self.n_items, 1))
        for start in range(0, len(unique), step):
            rows = np.flatnonzero((inverse >= start) & (inverse < start + step))
            block = self.score_users(unique[start:start + step])
            out[rows] = block[inverse[rows] - start, items[rows]]
        return out


class Popularity(Recommender):
    """Every user gets the same ranking: items by how many train interactions they have. A strong
    reference for implicit feedback, and the one a personalised model has to beat to be worth it."""

    estimator_name = "Popularity"

    def _fit(self, X: sparse.csr_matrix) -> None:
        counts = np.asarray(X.sum(axis=0)).ravel()
        # log keeps scores on the scale of a network's, for a comparable loss; the tiny rank term breaks
        # ties by item order, so a tie never depends on how the metrics happen to sort
        self.scores_ = (np.log1p(counts) + 1e-6 * (1 - np.arange(len(counts)) / max(len(counts), 1))).astype(np.float32)
        self.config = {"items": len(counts)}

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return np.tile(self.scores_, (len(users), 1))


class ItemKNN(Recommender):
    """Item-based k nearest neighbours with cosine similarity (see the module docstring)."""

    estimator_name = "ItemKNN"

    def __init__(self, neighbours: int = 100):
        if isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)) or neighbours < 1:
            raise ConfigError(f"neighbours must be a whole number >= 1; received {neighbours!r}.")
        self.neighbours = int(neighbours)
        self.config = {"neighbours": self.neighbours, "similarity": "cosine"}

    def _fit(self, X: sparse.csr_matrix) -> None:
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
        normalised = sparse.csc_matrix(X @ sparse.diags(1 / np.maximum(norms, 1e-12)))
        columns, n = [], X.shape[1]
        step = max(1, SCORES_PER_BLOCK // max(n, 1))
        for start in range(0, n, step):  # a block of items' similarities, dense, then their top neighbours
            block = (normalised.T @ normalised[:, start:start + step]).toarray()
            block[np.arange(start, min(start + step, n)), np.arange(block.shape[1])] = 0.0  # not its own neighbour
            columns.append(_top_per_column(block, self.neighbours))
        self.similarity_ = sparse.hstack(columns).tocsr()

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return np.asarray((self.train_[users] @ self.similarity_).todense(), dtype=np.float32)


def _top_per_column(block: np.ndarray, keep: int) -> sparse.csc_matrix:
    if keep < block.shape[0]:
        weakest = np.argpartition(block, block.shape[0] - keep, axis=0)[: block.shape[0] - keep]
        np.put_along_axis(block, weakest, 0.0, axis=0)
    return sparse.csc_matrix(block.astype(np.float32))


class EASE(Recommender):
    """Embarrassingly shallow autoencoder, closed form (see the module docstring)."""

    estimator_name = "EASE"

    def __init__(self, l2: float = 200.0):
        if not isinstance(l2, (int, float)) or isinstance(l2, bool) or l2 <= 0:
            raise ConfigError(f"l2 must be a number > 0; received {l2!r}.")
        self.l2 = float(l2)
        self.config = {"l2": self.l2}

    def _fit(self, X: sparse.csr_matrix) -> None:
        n = X.shape[1]
        if n > EASE_MAX_ITEMS:
            raise ConfigError(f"EASE needs dense items x items matrices: with {n:,} items each is "
                              f"{n * n * 4 / 1e9:.1f} GB. Use baseline('item_knn') or baseline('als'), which "
                              "scale with the number of interactions.")
        gram = np.asfortranarray((X.T @ X).toarray(), dtype=np.float32)
        gram[np.diag_indices(n)] += self.l2
        # X'X + l2 I is symmetric positive definite: its inverse from a Cholesky factor takes half the work of
        # a general inverse (LAPACK potrf + potri fill one triangle), in float32 half the memory again
        factor, info = lapack.spotrf(gram, lower=False, overwrite_a=True)
        inverse, info2 = lapack.spotri(factor, lower=False, overwrite_c=True)
        if info or info2:
            raise ConfigError(f"EASE could not invert X'X + l2 I (LAPACK info {info or info2}); raise l2 (now {self.l2}).")
        upper = np.triu(inverse)
        weights = upper + np.triu(upper, 1).T
        weights /= -np.diag(weights)
        weights[np.diag_indices(n)] = 0.0
        self.weights_ = weights

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.train_[users] @ self.weights_, dtype=np.float32)


class ALS(Recommender):
    """Alternating least squares from the `implicit` package (pip install "nbtrain[implicit]")."""

    estimator_name = "ALS"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 2.0, iterations: int = 15,
                 seed: int = 0, threads: int = 0):
        self.options = {"factors": int(factors), "regularization": float(regularization), "alpha": float(alpha),
                        "iterations": int(iterations)}
        self.seed, self.threads = int(seed), int(threads)
        self.config = {**self.options, "library": "implicit"}

    def _fit(self, X: sparse.csr_matrix) -> None:
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as exc:
            raise ConfigError("baseline('als') uses the `implicit` package, which is not installed: "
                              'pip install "nbtrain[implicit]" (or implicit itself).') from exc
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency
        with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS threads inside them oversubscribe
            model = AlternatingLeastSquares(**self.options, random_state=self.seed, num_threads=self.threads)
            model.fit(X, show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T


RECOMMENDERS = {"popularity": Popularity, "item_knn": ItemKNN, "ease": EASE, "als": ALS}
