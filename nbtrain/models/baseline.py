"""The gradient-boosted tree baseline a network has to beat on tabular data.

scikit-learn's HistGradientBoosting by default (no extra install), LightGBM or XGBoost when
installed and asked for. Trees need no scaling or one-hot: they get the cleaned columns, labels
as pandas categories (levels learned from the train split; a level first seen later is missing)
and dates as days. Missing values stay missing: all three libraries route them natively.

tune=True (what pipe.baseline() does) chooses the number of boosting rounds and the tree shape by
cross-validation on the train rows only (nbtrain.models.tuning: 5 folds, 3 above 5,000 rows; log
loss or RMSE), as a practitioner would before comparing a network with it:

- shapes: the library's default and three others, with fewer leaves and/or fewer rows per leaf
  (SHAPES); learning rate 0.1 for all.
- rounds: each fold trains up to 500 rounds and reads its held-out loss after every round, stopping
  50 rounds after its last improvement (the libraries' own early stopping, on the held-out fold).
  The curves are averaged over folds up to the round every fold reached (so each mean is an exact
  cross-validated loss), and the (shape, rounds) with the lowest mean wins: a grid search over 4
  shapes x rounds 1..500 at the cost of 4 fits per fold.
- the winner is refitted on all train rows with that many rounds and no early stopping.
tune=False fits the library's defaults (the ranking kind uses that: its rows come in queries).
"""

from __future__ import annotations

import importlib.util
import time
import warnings

import numpy as np
import pandas as pd

from nbtrain.data.preprocess import days_since_epoch
from nbtrain.errors import ConfigError
from nbtrain.models import tuning

LIBRARIES = ("sklearn", "lightgbm", "xgboost")
# Below this many train rows the search's ~20 small fits run on one OpenMP thread: as fast on an idle
# machine (penguins: 2.8 s against 3.6 s) and 3x faster on a busy one (4 s against 12 s with two other
# busy processes on 2 cores), where threads wait for each other; larger tables keep the library's threads.
ONE_THREAD_ROWS = 10_000
MAX_CATEGORIES = 255  # HistGradientBoosting's limit; beyond it, a label's code is used as a number
LEARNING_RATE, MAX_ROUNDS, PATIENCE, DEFAULT_ROUNDS = 0.1, 500, 50, 100
# the tree shapes tried by tune=True, the library's default first (LightGBM's num_leaves and
# min_child_samples, XGBoost's depth and min_child_weight play the same parts)
SHAPES = {
    "sklearn": [{"max_leaf_nodes": 31, "min_samples_leaf": 20}, {"max_leaf_nodes": 7, "min_samples_leaf": 20},
                {"max_leaf_nodes": 31, "min_samples_leaf": 5}, {"max_leaf_nodes": 7, "min_samples_leaf": 5}],
    "lightgbm": [{"num_leaves": 31, "min_child_samples": 20}, {"num_leaves": 7, "min_child_samples": 20},
                 {"num_leaves": 31, "min_child_samples": 5}, {"num_leaves": 7, "min_child_samples": 5}],
    "xgboost": [{"max_depth": 6, "min_child_weight": 1}, {"max_depth": 3, "min_child_weight": 1},
                {"max_depth": 6, "min_child_weight": 5}, {"max_depth": 3, "min_child_weight": 5}],
}


class TreeBaseline:
    """Fit on train rows of the cleaned frame; predict probabilities (classification) or values."""

    def __init__(self, task: str, kinds: dict, *, library: str = "sklearn", seed: int = 0, tune: bool = False):
        if library not in LIBRARIES:
            raise ConfigError(f"library={library!r} is not one of {list(LIBRARIES)}.")
        if library != "sklearn" and importlib.util.find_spec(library) is None:
            raise ConfigError(f"library={library!r} is not installed; pip install {library}, or use the default "
                              "library='sklearn' (HistGradientBoosting).")
        self.task, self.kinds, self.library, self.seed, self.tune = task, kinds, library, seed, tune
        self.estimator_name = type(self._estimator()).__name__
        self.config, self.notes = {}, []

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> TreeBaseline:
        self.levels_ = {name: pd.Index(frame[name].dropna().unique())
                        for name, kind in self.kinds.items() if kind in ("categorical", "ordinal")}
        X, settings = self.features(frame), {}
        if self.tune:
            found = self._search(X, np.asarray(y))
            settings = {**found.chosen, "learning_rate": LEARNING_RATE} if not found.skipped else {}
            self.config, self.notes = {"tuning": found.config()}, [found.note()]
        self.model_ = self._estimator(**settings)
        self.model_.fit(X, y)
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

    # ---- tune=True: rounds and shape by cross-validation on the train rows ----------------------

    def _search(self, X: pd.DataFrame, y: np.ndarray) -> tuning.Tuning:
        """The (shape, rounds) with the lowest mean held-out loss over the folds (module docstring)."""
        started = time.perf_counter()
        splitter, why_not = tuning.folds(self.task, y, self.seed)
        if splitter is None:
            return tuning.Tuning(skipped=why_not)
        folds = [(X.iloc[fit], y[fit], X.iloc[held], y[held]) for fit, held in splitter.split(X, y)]
        shapes = SHAPES[self.library]
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency
        with threadpool_limits(1 if len(X) < ONE_THREAD_ROWS else None, "openmp"):
            means = [self._mean_curve(shape, folds) for shape in shapes]
            best = min(range(len(means)), key=lambda i: means[i].min())
            rounds = int(np.argmin(means[best])) + 1
            default = means[0] if len(means[0]) >= DEFAULT_ROUNDS else \
                self._mean_curve(shapes[0], folds, rounds=DEFAULT_ROUNDS, patience=None)
        return tuning.Tuning(score=tuning.SCORES[self.task], folds=len(folds),
                             space=f"{len(shapes)} tree shapes x 1-{MAX_ROUNDS} rounds",
                             chosen={**shapes[best], self._rounds_name(): rounds}, cv_score=float(means[best][rounds - 1]),
                             default_score=float(default[DEFAULT_ROUNDS - 1]), seconds=time.perf_counter() - started)

    def _mean_curve(self, shape: dict, folds: list, rounds: int = MAX_ROUNDS, patience=PATIENCE) -> np.ndarray:
        """The held-out loss after rounds 1..n averaged over the folds, n the rounds every fold reached before
        its early stop: the mean is then the exact cross-validated loss of each of those round counts."""
        curves = [self._curve(shape, *fold, rounds=rounds, patience=patience) for fold in folds]
        reached = min(len(curve) for curve in curves)
        return np.mean([curve[:reached] for curve in curves], axis=0)

    def _curve(self, shape: dict, X_fit, y_fit, X_held, y_held, *, rounds: int, patience) -> np.ndarray:
        """The held-out loss after each round 1..n (log loss or RMSE), the fit stopping `patience` rounds after
        its last improvement (None: never)."""
        settings = {**shape, "learning_rate": LEARNING_RATE, self._rounds_name(): rounds}
        if self.library == "lightgbm":
            import lightgbm
            stop = [lightgbm.early_stopping(patience, first_metric_only=True, verbose=False)] if patience else []
            model = self._estimator(**settings)
            with warnings.catch_warnings():  # LightGBM 4.7 renamed eval_set; 4.0-4.6 know only eval_set
                warnings.filterwarnings("ignore", message=".*'eval_set' is deprecated")
                model.fit(X_fit, y_fit, eval_set=[(X_held, y_held)], eval_metric=self._metric("lightgbm"),
                          callbacks=stop)
            return np.asarray(model.evals_result_["valid_0"][self._metric("lightgbm")])
        if self.library == "xgboost":
            model = self._estimator(**settings, early_stopping_rounds=patience, eval_metric=self._metric("xgboost"))
            model.fit(X_fit, y_fit, eval_set=[(X_held, y_held)], verbose=False)
            return np.asarray(model.evals_result()["validation_0"][self._metric("xgboost")])
        model = self._estimator(**settings, early_stopping=True, n_iter_no_change=patience or rounds, scoring="loss",
                                tol=0)
        model.fit(X_fit, y_fit, X_val=X_held, y_val=y_held)
        # validation_score_ is minus the loss the model trains on, before round 1 and after each round:
        # log loss for classes, half the squared error for numbers
        loss = -np.asarray(model.validation_score_[1:])
        return loss if self.task != "regression" else np.sqrt(2 * loss)

    def _metric(self, library: str) -> str:
        names = {"lightgbm": ("binary_logloss", "multi_logloss", "rmse"), "xgboost": ("logloss", "mlogloss", "rmse")}
        return names[library][("binary", "multiclass", "regression").index(self.task)]

    def _rounds_name(self) -> str:
        return "max_iter" if self.library == "sklearn" else "n_estimators"

    def _estimator(self, **settings):
        classify = self.task != "regression"
        if self.library == "lightgbm":
            import lightgbm
            cls = lightgbm.LGBMClassifier if classify else lightgbm.LGBMRegressor
            return cls(random_state=self.seed, verbose=-1, **settings)
        if self.library == "xgboost":
            import xgboost
            cls = xgboost.XGBClassifier if classify else xgboost.XGBRegressor
            return cls(random_state=self.seed, enable_categorical=True, tree_method="hist", **settings)
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        if settings and "early_stopping" not in settings:
            settings["early_stopping"] = False  # the rounds were chosen by cross-validation
        return cls(categorical_features="from_dtype", random_state=self.seed, **settings)

