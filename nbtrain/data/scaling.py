"""Scaling of numeric columns with a rule for heavy tails: `TailAwareScaler`.

A StandardScaler keeps a heavy-tailed column heavy-tailed: most rows are squeezed near zero and
a few lie tens of standard deviations out, where a network's ReLUs extrapolate. A quantile map to
the normal distribution (scikit-learn's QuantileTransformer) spreads the rows evenly and bounds
what is out of range; but it discards the distances within the bulk, which a well-behaved column
keeps. The rule: per column, on the train rows, a column whose sample skewness is at least
`skew_limit` in size is mapped by quantiles to the normal distribution; the others are standardised.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import skew
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.preprocessing import PowerTransformer, QuantileTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

SKEW_LIMIT = 2.0


class TailAwareScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """StandardScaler for ordinary columns, a quantile map to the normal for skewed ones."""

    def __init__(self, skew_limit: float = SKEW_LIMIT, method: str = "quantile", n_quantiles: int = 1000,
                 random_state: int = 0):
        self.skew_limit = skew_limit
        self.method = method
        self.n_quantiles = n_quantiles
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        with np.errstate(all="ignore"):  # a constant column has no skewness (NaN): it is not skewed
            skewness = np.nan_to_num(skew(X, axis=0), nan=0.0)
        self.skewness_ = skewness
        self.heavy_ = np.abs(skewness) >= self.skew_limit
        self.standard_ = StandardScaler().fit(X[:, ~self.heavy_]) if (~self.heavy_).any() else None
        self.quantiles_ = self._tail_map().fit(X[:, self.heavy_]) if self.heavy_.any() else None
        return self

    def _tail_map(self):
        if self.method == "yeo-johnson":
            return PowerTransformer(method="yeo-johnson")
        return QuantileTransformer(n_quantiles=min(self.n_quantiles, 10_000), output_distribution="normal",
                                   subsample=200_000, random_state=self.random_state)

    def transform(self, X):
        check_is_fitted(self, "heavy_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        out = np.empty_like(X)
        if self.standard_ is not None:
            out[:, ~self.heavy_] = self.standard_.transform(X[:, ~self.heavy_])
        if self.quantiles_ is not None:
            out[:, self.heavy_] = self.quantiles_.transform(X[:, self.heavy_])
        return out
