"""The gradient-boosted tree baseline a network has to beat on tabular data.

scikit-learn's HistGradientBoosting by default (no extra install), LightGBM or XGBoost when
installed and asked for. Trees need no scaling or one-hot: they get the cleaned columns, labels
as pandas categories (levels learned from the train split; a level first seen later is missing)
and dates as days. Missing values stay missing: all three libraries route them natively.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd

from nbtrain.data.preprocess import days_since_epoch
from nbtrain.errors import ConfigError

LIBRARIES = ("sklearn", "lightgbm", "xgboost")
MAX_CATEGORIES = 255  # HistGradientBoosting's limit; beyond it, a label's code is used as a number


class TreeBaseline:
    """Fit on train rows of the cleaned frame; predict probabilities (classification) or values."""

    def __init__(self, task: str, kinds: dict, *, library: str = "sklearn", seed: int = 0):
        if library not in LIBRARIES:
            raise ConfigError(f"library={library!r} is not one of {list(LIBRARIES)}.")
        if library != "sklearn" and importlib.util.find_spec(library) is None:
            raise ConfigError(f"library={library!r} is not installed; pip install {library}, or use the default "
                              "library='sklearn' (HistGradientBoosting).")
        self.task, self.kinds, self.library, self.seed = task, kinds, library, seed
        self.estimator_name = type(self._estimator()).__name__

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> TreeBaseline:
        self.levels_ = {name: pd.Index(frame[name].dropna().unique())
                        for name, kind in self.kinds.items() if kind in ("categorical", "ordinal")}
        self.model_ = self._estimator()
        self.model_.fit(self.features(frame), y)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        X = self.features(frame)
        if self.task == "regression":
            return np.asarray(self.model_.predict(X), dtype=float)
        probabilities = np.asarray(self.model_.predict_proba(X), dtype=float)
        return probabilities[:, 1] if self.task == "binary" else probabilities

    def features(self, frame: pd.DataFrame) -> pd.DataFrame:
        columns = {}
        for name, kind in self.kinds.items():
            column = frame[name]
            if kind == "datetime":
                columns[name] = days_since_epoch(column.to_frame())[name]
            elif name in self.levels_:
                levels = self.levels_[name]
                # a level first seen now is missing (pandas 4 refuses values outside the categories)
                as_category = pd.Categorical(column.where(column.isin(levels)), categories=levels)
                columns[name] = as_category if len(levels) <= MAX_CATEGORIES else \
                    pd.Series(as_category.codes, index=frame.index).replace(-1, np.nan)
            else:
                columns[name] = column.astype(float)
        return pd.DataFrame(columns, index=frame.index)

    def _estimator(self):
        classify = self.task != "regression"
        if self.library == "lightgbm":
            import lightgbm
            cls = lightgbm.LGBMClassifier if classify else lightgbm.LGBMRegressor
            return cls(random_state=self.seed, verbose=-1)
        if self.library == "xgboost":
            import xgboost
            cls = xgboost.XGBClassifier if classify else xgboost.XGBRegressor
            return cls(random_state=self.seed, enable_categorical=True, tree_method="hist")
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return cls(categorical_features="from_dtype", random_state=self.seed)
