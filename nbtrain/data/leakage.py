"""Checks that a split is honest, run right after it: each returns warnings in words.

None of them changes the data or anything a model learns; the single-feature probe learns a lookup
table (label or quantile bin -> majority class or mean target) on a sample of the train split and
scores it on the validation split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, r2_score

from nbtrain.data import duplicates, fingerprint
from nbtrain.data.preprocess import days_since_epoch

# A feature that alone reaches this balanced accuracy (classes) or R² (numbers) on validation
# is more likely a leak (derived from the target, recorded after it) than a gift...
SUSPICIOUS_SCORE = 0.98
# ...and so is one that reaches STANDOUT_SCORE while its error (1 - score) is at most a
# 1/STANDOUT_RATIO of the error of the best ordinary feature (one below STANDOUT_SCORE): a column
# that alone knows what no other column comes near (nassCDS's injury severity: 0.95 where every
# other column is at 0.5). Features that are all good together (breast cancer's radius, perimeter
# and area at 0.92) raise nothing.
STANDOUT_SCORE = 0.9
STANDOUT_RATIO = 4.0
_PROBE_TRAIN_ROWS = 20_000  # the probe needs a sample, not the whole split
_PROBE_VAL_ROWS = 5_000
_BINS = 64  # numbers are read through their train quantile bin: fine enough to see a leak


def identical_feature_rows(feature_hash: np.ndarray, positions: dict, frame: pd.DataFrame | None = None,
                           features=()) -> list[str]:
    """Validation or test rows whose features also appear in train (with any target).

    Given the cleaned `frame` and the model's `features`, rows are compared on those columns, and
    nothing is said when chance explains the repeats (nbtrain.data.duplicates): in a table of few
    distinct values (a survey) most rows share their answers with others, in deployment too, so
    the score measures the model on the population as it is, not memory.
    """
    if frame is not None and len(features):
        feature_hash = fingerprint.combine(frame, list(features))
        if not duplicates.judge(frame, list(features), feature_hash).drop:
            return []
    train = np.sort(feature_hash[positions["train"]])
    warnings = []
    for part in ("val", "test"):
        shared = int(_contains(train, feature_hash[positions[part]]).sum())
        if shared:
            share = shared / len(positions[part])
            warnings.append(f"{shared} {part} rows ({share:.1%}) have exactly the same features as a train row; "
                            f"the {part} score partly measures memory, not generalisation. Drop near-"
                            "duplicates, or split by group (group_col=...) if rows come from the same source.")
    return warnings


def _contains(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """np.isin for a sorted haystack: binary search, no hash table of a million rows."""
    at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return ordered[at] == values


def earlier_test_rows(row_hash: np.ndarray, positions: dict, evaluated: np.ndarray) -> list[str]:
    """Rows of an earlier, already evaluated test split that this split uses for training or selection.

    `evaluated` is sorted, as `Ledger.evaluated_row_hashes()` returns it.
    """
    if not len(evaluated):
        return []
    warnings = []
    for part in ("train", "val"):
        reused = int(_contains(evaluated, row_hash[positions[part]]).sum())
        if reused:
            warnings.append(f"{reused} {part} rows were in a test split that was already evaluated; a model "
                            "tuned on them makes any later test estimate on this data optimistic.")
    return warnings


def single_feature_predictors(frame: pd.DataFrame, kinds: dict, target, task: str, positions: dict,
                              seed: int) -> list[str]:
    """Features that predict the target almost perfectly on their own."""
    rng = np.random.default_rng(seed)
    train = _sample(positions["train"], _PROBE_TRAIN_ROWS, rng)
    val = _sample(positions["val"], _PROBE_VAL_ROWS, rng)
    rows = frame.iloc[np.concatenate([train, val])]
    # from here on, positions refer to the sample: train rows first, then validation rows
    train, val = np.arange(len(train)), np.arange(len(train), len(rows))
    y = rows[target].to_numpy() if task == "regression" else pd.factorize(rows[target])[0]
    scores = {name: _probe(rows[name], kind, y, train, val, task) for name, kind in kinds.items()}
    ordinary = max([score for score in scores.values() if score < STANDOUT_SCORE], default=None)
    metric = "R²" if task == "regression" else "balanced accuracy"
    warnings = []
    for name, score in scores.items():
        stands_out = ordinary is not None and score >= STANDOUT_SCORE and \
            1 - score <= (1 - ordinary) / STANDOUT_RATIO
        if score >= SUSPICIOUS_SCORE or stands_out:
            other = f"; the best feature below {STANDOUT_SCORE} reaches {ordinary:.3f}" if ordinary is not None else ""
            warnings.append(f"Feature {name!r} alone predicts the target ({metric} {score:.3f} on validation{other}). "
                            "Check that it is known before the target is (not derived from it, not recorded "
                            "after it); if it leaks, drop it from the data.")
    return warnings


def _sample(positions: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return positions if len(positions) <= limit else rng.choice(positions, limit, replace=False)


def _probe(column: pd.Series, kind: str, y: np.ndarray, train: np.ndarray, val: np.ndarray, task: str) -> float:
    """Score the best lookup table from this feature alone (numbers: by train quantile bin)."""
    if kind in ("categorical", "ordinal"):
        keys = pd.factorize(column)[0]  # the same label gets the same key in train and validation
    else:
        values = column.to_numpy(dtype="float64", na_value=np.nan) if kind != "datetime" else \
            days_since_epoch(column.to_frame())[column.name].to_numpy()
        edges = np.unique(np.nanquantile(values[train], np.linspace(0, 1, _BINS + 1)[1:-1]))
        keys = np.where(np.isnan(values), -1, np.searchsorted(edges, values))
    seen = pd.DataFrame({"key": keys[train], "y": y[train]})
    if task == "regression":
        table, fallback = seen.groupby("key")["y"].mean(), float(np.mean(y[train]))
    else:
        table = seen.groupby(["key", "y"]).size().unstack(fill_value=0).idxmax(axis=1)
        fallback = pd.Series(y[train]).mode().iloc[0]
    predicted = pd.Series(keys[val]).map(table)
    predicted = predicted.where(predicted.notna(), fallback).to_numpy()
    if task == "regression":
        return float(r2_score(y[val], predicted.astype(float)))
    return float(balanced_accuracy_score(y[val], predicted.astype(y.dtype)))
