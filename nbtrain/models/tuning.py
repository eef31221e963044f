"""Light tuning of the baselines, on the train split only, the way a practitioner tunes a reference model.

A baseline left at its library's defaults can sit well below what the same model reaches after a few
minutes of care (TF-IDF + logistic regression at C=1 scored validation accuracy 0.77 on the food
reviews; tuned, 0.81), and then a network's margin over it looks larger than it is. So a baseline
searches a small, documented set of settings by k-fold cross-validation on the train rows and refits
the winner on all of them. Validation and test rows are never touched while tuning: the baseline is
then scored on validation exactly like every run.

- folds: 5, or 3 above 5,000 train rows (the estimate is steady there, and the cost grows with rows);
  stratified for classes and shuffled with the pipeline's seed; never more than the rarest class has
  rows. With fewer than 2 rows in some class, or fewer than 10 rows, nothing is searched: the
  library's defaults are fitted and the run's notes say why.
- score: log loss for classes, RMSE for numbers: proper scores, and the scale runs are compared on.
- what was chosen, its cross-validated score beside the library defaults' score, and the seconds
  spent go to the run's config (`tuning`) and its notes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

MANY_ROWS = 5000   # above this many train rows, 3 folds instead of 5
MIN_ROWS = 10
SCORES = {"binary": "log loss", "multiclass": "log loss", "regression": "RMSE"}
SCORING = {"log loss": "neg_log_loss", "RMSE": "neg_root_mean_squared_error"}  # scikit-learn's names


def folds(task: str, y, seed: int):
    """(a scikit-learn splitter over the train rows, or None; why not, when None)."""
    from sklearn.model_selection import KFold, StratifiedKFold
    y = np.asarray(y)
    wanted = 3 if len(y) > MANY_ROWS else 5
    if len(y) < MIN_ROWS:
        return None, f"only {len(y)} train rows, too few to cross-validate"
    if task == "regression":
        return KFold(wanted, shuffle=True, random_state=seed), ""
    rarest = int(np.unique(y, return_counts=True)[1].min())
    if rarest < 2:
        return None, "a class has a single train row, so no fold split can hold it on both sides"
    return StratifiedKFold(min(wanted, rarest), shuffle=True, random_state=seed), ""


def grid_search(model, grid, X, y, *, task: str, seed: int, defaults: dict) -> tuple:
    """scikit-learn's GridSearchCV over `grid`, with the folds and the score above. `defaults`: the grid
    point that is the library's defaults, whose CV score is reported beside the winner's. Returns (the
    winning settings, or None when nothing could be searched; the Tuning record). The caller refits."""
    from sklearn.model_selection import GridSearchCV
    splitter, why_not = folds(task, y, seed)
    if splitter is None:
        return None, Tuning(skipped=why_not)
    started = time.perf_counter()
    search = GridSearchCV(model, grid, scoring=SCORING[SCORES[task]], cv=splitter, refit=False,
                          error_score="raise").fit(X, y)
    results = search.cv_results_
    default = next(i for i, params in enumerate(results["params"]) if params == defaults)
    return search.best_params_, Tuning(
        score=SCORES[task], folds=splitter.get_n_splits(), space=f"{len(results['params'])} settings",
        chosen={name.rsplit("__", 1)[-1]: value for name, value in search.best_params_.items()},
        cv_score=-search.best_score_, default_score=-results["mean_test_score"][default],
        seconds=time.perf_counter() - started)


@dataclass
class Tuning:
    """What a baseline's search tried and chose; `skipped` says why nothing was searched."""

    score: str = ""
    folds: int = 0
    space: str = ""        # what was searched, in words: "4 tree shapes x 1-500 rounds"
    chosen: dict = field(default_factory=dict)
    cv_score: float = float("nan")
    default_score: float = float("nan")   # the library defaults, same folds
    seconds: float = 0.0
    skipped: str = ""

    def config(self) -> dict:
        """The run config's `tuning` entry (plain JSON values: the ledger stores it)."""
        if self.skipped:
            return {"method": "none", "reason": self.skipped}
        return {"method": f"{self.folds}-fold cross-validation on the train split",
                "score": self.score, "searched": self.space, "chosen": _plain(self.chosen),
                "cv_score": round(float(self.cv_score), 6), "default_cv_score": round(float(self.default_score), 6),
                "seconds": round(self.seconds, 2)}

    def note(self) -> str:
        if self.skipped:
            return f"Not tuned ({self.skipped}): the library defaults."
        chosen = ", ".join(f"{k}={v!r}" for k, v in _plain(self.chosen).items())
        return (f"Tuned on the train split only ({self.folds}-fold CV over {self.space}, "
                f"{self.seconds:.1f} s): {chosen}; CV {self.score} {self.cv_score:.4g} (library defaults: "
                f"{self.default_score:.4g}). Validation was not used to choose.")


def _plain(params: dict) -> dict:
    """Settings as JSON-friendly values: tuples as lists, numpy numbers as Python ones."""
    plain = {}
    for key, value in params.items():
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.generic):
            value = value.item()
        plain[key] = value
    return plain
