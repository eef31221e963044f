"""The learning task, inferred from the target column, with the reason in words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nbtrain.errors import ConfigError, DataError

TASKS = ("binary", "multiclass", "regression", "ranking")
# Integer targets with at most this many distinct values are read as class labels.
MAX_INTEGER_CLASSES = 20


def infer_task(target: pd.Series) -> tuple[str, str]:
    """Return (task, why). The target must hold at least one value."""
    values = target.dropna()
    distinct = values.nunique()
    if distinct == 2:
        shown = ", ".join(repr(v) for v in sorted(values.unique().tolist(), key=str))
        return "binary", f"the target has exactly 2 distinct values ({shown})"
    if pd.api.types.is_bool_dtype(values):
        return "binary", "the target is boolean"
    if not pd.api.types.is_numeric_dtype(values):
        return "multiclass", f"the target holds {distinct} distinct labels (not numbers)"
    if pd.api.types.is_float_dtype(values) and not (values == values.round()).all():
        return "regression", "the target holds non-integer numbers"
    if distinct <= MAX_INTEGER_CLASSES:
        return "multiclass", (f"the target holds {distinct} distinct whole numbers; pass task='regression' "
                              "if they are quantities rather than classes")
    return "regression", f"the target holds {distinct} distinct numbers"


def resolve_task(target: pd.Series, task: str) -> tuple[str, str]:
    """Check a requested task against the target, or infer one; reject targets with nothing to learn."""
    values = target.dropna()
    if values.empty:
        raise DataError(f"The target {target.name!r} is missing in all {len(target)} rows; there is nothing "
                        "to learn. Check the column name or how the data was loaded.")
    if task not in ("auto",) + TASKS:
        raise ConfigError(f"task={task!r} is not a task nbtrain knows; use 'auto' or one of {list(TASKS)}.")
    _check_one_type(values)
    if values.nunique() == 1:
        raise DataError(f"The target {target.name!r} has a single value ({values.iloc[0]!r}) in all "
                        f"{len(values)} rows with a target; a model cannot learn to tell anything apart. "
                        "Check the filtering that produced the data, or pick another target.")
    if task == "ranking":
        return "ranking", f"requested; {_check_relevance(values)}"
    inferred, why = infer_task(target)
    if task == "auto":
        return inferred, why
    _check_requested(values, task)
    return task, f"requested (inferred would be {inferred!r}: {why})" if task != inferred else f"requested; {why}"


def _check_one_type(values: pd.Series) -> None:
    """A target of labels of several types (1 and "Adelie", True and "yes") has no single spelling per
    class: 1 and "1" would be two classes that print alike. Whole and fractional numbers may mix."""
    if values.dtype != object:
        return
    kinds = values.map(lambda v: "number" if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                       else type(v).__name__)
    counts = kinds.value_counts()
    if len(counts) < 2:
        return
    shown = ", ".join(f"{kind}: {n} rows" for kind, n in counts.items())
    examples = [values[kinds == kind].iloc[0] for kind in counts.index]
    raise DataError(f"The target {values.name!r} mixes value types ({shown}), e.g. {examples}; each class needs one "
                    "spelling (1 and '1' would be two classes). Make them one type, e.g. df[target] = "
                    "df[target].astype(str) (1 and '1' then become one class), or fix the odd rows.")


def _check_relevance(values: pd.Series) -> str:
    """Ranking targets are relevance grades: numbers >= 0, more relevant is higher. Returns the why."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise ConfigError(f"task='ranking' needs a numeric relevance target (0 = not relevant, higher = more "
                          f"relevant); {values.name!r} has dtype {values.dtype}. Map the labels to grades, e.g. "
                          "{'bad': 0, 'fair': 1, 'good': 2}. For user-item interactions without grades, use "
                          "nt.Pipeline.from_interactions(df, user=..., item=...).")
    numbers = values.astype(float)
    if (numbers < 0).any() or not np.isfinite(numbers).all():
        shown = numbers[(numbers < 0) | ~np.isfinite(numbers)].iloc[0]
        raise ConfigError(f"task='ranking' needs relevance grades >= 0 (they are gains in NDCG); {values.name!r} "
                          f"holds {float(shown):g}. Shift or map the grades so that 0 means not relevant.")
    return (f"the target holds {values.nunique()} relevance levels from {numbers.min():g} to {numbers.max():g}, "
            "ranked within each query (group_col)")


def _check_requested(values: pd.Series, task: str) -> None:
    distinct = values.nunique()
    if task == "binary" and distinct != 2:
        raise ConfigError(f"task='binary' needs a target with 2 distinct values; {values.name!r} has "
                          f"{distinct}. Use task='multiclass' or 'regression', or map the target to two classes.")
    if task == "regression" and not pd.api.types.is_numeric_dtype(values):
        raise ConfigError(f"task='regression' needs a numeric target; {values.name!r} has dtype "
                          f"{values.dtype}. Convert it (pd.to_numeric) or use task='multiclass'.")


def check_classes(target: pd.Series, task: str) -> None:
    """Every class needs at least two rows: one to learn from and one to check against."""
    if task not in ("binary", "multiclass"):
        return
    counts = target.value_counts()
    counts = counts[counts > 0]  # a Categorical counts its unused categories too: they are no class
    single = counts[counts < 2].index.tolist()
    if single:
        raise DataError(f"Class {single[0]!r} of {target.name!r} has a single row ({len(single)} such classes: "
                        f"{single[:5]}); it cannot appear in both the training and the evaluation splits. "
                        "Drop those rows, merge rare classes into an 'other' class, or collect more data.")
