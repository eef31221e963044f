"""Imputation, scaling and encoding of tabular features: scikit-learn transformers, fitted on the
train split only, then applied unchanged to every other row.

Per column, by the kind cleaning found and the strategy it chose:

- numbers and dates: missing values filled with the train median; scaled with StandardScaler
  (`scaler="auto"` or `"standard"`) or MinMaxScaler (`"minmax"`); dates become days since 1970.
- two-valued numbers and booleans: filled with the train mode, MinMaxScaler to [0, 1] (centring a
  0/1 flag would hide which value means "off").
- declared ordinals: filled with the mode, OrdinalEncoder in the declared order, MinMaxScaler.
- labels with at most `onehot_max_levels` distinct train values: one-hot (unseen labels -> all zeros).
- labels with more: integer codes for an embedding, 0 reserved for labels unseen in train.
- strategy "sentinel": labels get their own "__missing__" level; other kinds get the median or mode
  plus a `<column>__missing` indicator (0/1) column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

from nbtrain.data.clean import ColumnPlan
from nbtrain.data.inputs import naive_times
from nbtrain.errors import ConfigError, DataError, LeakageError
from nbtrain.report import Report

ONEHOT_MAX_LEVELS = 20
MISSING_LEVEL = "__missing__"
SCALERS = ("auto", "standard", "minmax", "none")


def days_since_epoch(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates as float days since 1970-01-01 (NaN where missing); time zones are read as UTC."""
    def days(column: pd.Series) -> pd.Series:
        return (naive_times(column) - pd.Timestamp(0)) / pd.Timedelta(days=1)
    return frame.apply(days)


@dataclass(frozen=True)
class Arrays:
    """One split's model inputs: float features, integer codes for embeddings, targets, row labels."""

    X: np.ndarray       # float32, (rows, n_inputs)
    codes: np.ndarray   # int64, (rows, embedding columns); 0 = a label not seen in train
    y: np.ndarray       # int64 class ids (classification) or float32 values (regression)
    index: pd.Index     # the rows' labels in the caller's DataFrame

    def __len__(self) -> int:
        return len(self.y)

    def tensors(self, device=None) -> dict:
        """The arrays as torch tensors on `device` (moved once, then batched by indexing)."""
        import torch
        return {name: torch.as_tensor(getattr(self, name), device=device) for name in ("X", "codes", "y")}

    def batches(self, device, scale: tuple = (0.0, 1.0)):
        """The loop's view of this split (nbtrain.data.batches), on `device`; a regression target is
        standardised with `scale` = (mean, std) for the loss, and kept in data units for the metrics."""
        from nbtrain.data.batches import Batches
        tensors = self.tensors(device)
        y = tensors["y"]
        y_fit = (y - scale[0]) / scale[1] if y.is_floating_point() else y
        return Batches(X=tensors["X"], codes=tensors["codes"], y=y, y_fit=y_fit)


class TabularPreprocessor:
    """Learns imputation values, scaling and encodings from train rows; applies them to any rows."""

    def __init__(self, plans: dict, ordinal: dict | None = None, *, scaler="auto",
                 onehot_max_levels: int = ONEHOT_MAX_LEVELS):
        """`scaler` is a name in SCALERS, or an unfitted scikit-learn transformer for numbers and dates."""
        if isinstance(scaler, str) and scaler not in SCALERS:
            raise ConfigError(f"scaler={scaler!r} is not one of {list(SCALERS)}, nor a scikit-learn transformer.")
        if not isinstance(scaler, str):
            require_unfitted(scaler)
        if not isinstance(onehot_max_levels, int) or onehot_max_levels < 2:
            raise ConfigError(f"onehot_max_levels must be a whole number >= 2; received {onehot_max_levels!r}.")
        # The caller's column labels, selected by label; inside, every column is named by its text
        # (Pipeline refuses labels whose texts collide, such as 0 and "0"): a ColumnTransformer reads
        # integer names as positions, which point at other columns once cleaning has dropped one.
        self.columns = list(plans)
        self.plans: dict[str, ColumnPlan] = {str(name): plan for name, plan in plans.items()}
        self.ordinal = {str(name): levels for name, levels in (ordinal or {}).items()}
        self.scaler = scaler
        self.onehot_max_levels = onehot_max_levels

    def fit_transform(self, train: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Learn everything from the train rows and return them transformed (one pass, not two)."""
        train = self._named(train)
        onehot, embedded = self._split_labels(train)
        self.dense_ = ColumnTransformer(self._dense_steps(onehot), verbose_feature_names_out=False,
                                        sparse_threshold=0.0)
        dense = self.dense_.fit_transform(train)
        self.embedding_columns_ = embedded
        self.codes_ = self._code_step(embedded) if embedded else None
        codes = self.codes_.fit_transform(train[embedded]) if embedded else None
        self.cardinalities_ = {name: len(levels) + 1 for name, levels in
                               zip(embedded, self.codes_[-1].categories_)} if embedded else {}
        self.feature_names_, self.notes_ = unique_names([
            name.replace("missingindicator_", "") + "__missing" if name.startswith("missingindicator_") else name
            for name in self.dense_.get_feature_names_out()])
        return self._arrays(dense, codes, len(train))

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        named = self._named(frame)
        codes = self.codes_.transform(named[self.embedding_columns_]) if self.codes_ is not None else None
        X, codes = self._arrays(self.dense_.transform(named), codes, len(frame))
        if isinstance(self.scaler, str):  # your own transformer's NaN is yours: the training doctor names it
            self._require_finite(X, frame.index)
        return X, codes

    def _require_finite(self, X: np.ndarray, index: pd.Index) -> None:
        """A value so far outside the train range that scaling takes it beyond float32 would reach the
        model as infinite, and come out as NaN probabilities under a confident-looking label."""
        bad = ~np.isfinite(X)
        if not bad.any():
            return
        rows, columns = np.nonzero(bad)
        names = list(dict.fromkeys(self.feature_names_[c] for c in columns))
        label = index[rows[0]]
        label = label.item() if isinstance(label, np.generic) else label
        raise DataError(f"Input {names[:3]} of {len(np.unique(rows))} row(s) (e.g. row {label!r}) is beyond "
                        f"the range of the model's float32 inputs after scaling: the value lies far outside what "
                        "training saw. Check it; leave the cell empty (NaN) to have it imputed.")

    def _named(self, frame: pd.DataFrame) -> pd.DataFrame:
        """This preprocessor's columns of `frame`, chosen by label, in fixed order, named by text."""
        return frame[self.columns].set_axis(list(self.plans), axis=1)

    @staticmethod
    def _arrays(dense, codes, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Float32 features; int64 codes shifted so that 0 means "not seen in train"."""
        codes = np.zeros((rows, 0), dtype=np.int64) if codes is None else np.asarray(codes, dtype=np.int64) + 1
        return np.asarray(dense, dtype=np.float32), codes

    def _split_labels(self, train: pd.DataFrame) -> tuple[list, list]:
        """One-hot for few labels, embedding codes for many: decided from the train rows."""
        labels = [n for n, p in self.plans.items() if p.kind == "categorical"]
        levels = {name: train[name].nunique() for name in labels}
        return ([n for n in labels if levels[n] <= self.onehot_max_levels],
                [n for n in labels if levels[n] > self.onehot_max_levels])

    def _columns(self, *kinds, strategy=None) -> list:
        return [n for n, p in self.plans.items() if p.kind in kinds and (strategy is None or p.strategy == strategy)]

    def _dense_steps(self, onehot: list) -> list:
        steps = [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), *self._scale()), self._columns("numeric")),
            ("dates", make_pipeline(FunctionTransformer(days_since_epoch, feature_names_out="one-to-one"),
                                    SimpleImputer(strategy="median"), *self._scale()), self._columns("datetime")),
            ("binary", make_pipeline(FunctionTransformer(_as_float, feature_names_out="one-to-one"),
                                     SimpleImputer(strategy="most_frequent"), MinMaxScaler()),
             self._columns("binary")),
            ("onehot", make_pipeline(_label_imputer(self.plans, onehot), OneHotEncoder(
                handle_unknown="ignore", sparse_output=False, dtype=np.float32)), onehot),
            ("missing", MissingIndicator(features="all"),
             self._columns("numeric", "datetime", "binary", "ordinal", strategy="sentinel")),
        ]
        for name, levels in self.ordinal.items():
            if name in self.plans:
                steps.append((f"ordinal_{name}", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OrdinalEncoder(categories=[levels]), MinMaxScaler()), [name]))
        return [step for step in steps if len(step[2])]

    def _scale(self) -> list:
        """The scaler for numbers and dates, as a list of zero or one pipeline steps."""
        if not isinstance(self.scaler, str):
            return [clone(self.scaler)]
        named = {"auto": StandardScaler, "standard": StandardScaler, "minmax": MinMaxScaler}.get(self.scaler)
        return [named()] if named else []

    def _code_step(self, embedded: list):
        # -1 for unseen labels and for gaps no imputer filled; shifted to code 0 by _arrays
        return make_pipeline(_label_imputer(self.plans, embedded), OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1, dtype=np.int64))


def unique_names(names: list) -> tuple[list, list[str]]:
    """Input names made unique, with a note per renamed one: a made name (an `x__missing` indicator, a
    one-hot `color_red`) can repeat a column of the data, and two inputs of one name are confused."""
    taken, used, unique, notes = set(names), set(), [], []
    for name in names:
        if name in used:
            renamed = next(f"{name}_{k}" for k in range(2, len(names) + 2) if f"{name}_{k}" not in taken)
            taken.add(renamed)
            notes.append(f"Two inputs are named {name!r} (a column of the data and one nbtrain made); "
                         f"the later one is called {renamed!r}.")
            name = renamed
        used.add(name)
        unique.append(name)
    return unique, notes


def _as_float(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype("float64")


def _label_imputer(plans: dict, columns: list) -> ColumnTransformer:
    """A "__missing__" level for sentinel columns, the train mode for "mode" columns; the others
    have no gaps in train, and a gap met later is encoded like an unseen label. Column order is kept."""
    def imputer(plan: ColumnPlan):
        if plan.strategy == "sentinel":
            return SimpleImputer(strategy="constant", fill_value=MISSING_LEVEL)
        return SimpleImputer(strategy="most_frequent") if plan.strategy == "mode" else "passthrough"
    return ColumnTransformer([(name, imputer(plans[name]), [name]) for name in columns],
                             verbose_feature_names_out=False)


def require_unfitted(transformer) -> None:
    """A transformer fitted elsewhere may have seen validation or test rows."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted
    try:
        check_is_fitted(transformer)
    except NotFittedError:
        return
    raise LeakageError(f"The {type(transformer).__name__} you passed is already fitted, on rows nbtrain did not "
                       "split; its statistics may include validation or test rows. Pass an unfitted one: "
                       "nbtrain fits it on the train split.")


@dataclass(repr=False)
class PreprocessReport(Report):
    """The result of `Pipeline.preprocess()`."""

    title = "Preprocessing report"
    train_rows: int = 0
    val_rows: int = 0
    n_inputs: int = 0
    cardinalities: dict = field(default_factory=dict)
    treatments: pd.DataFrame | None = None
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        lines = [f"Fitted on the {self.train_rows} train rows only; applied to train and the "
                 f"{self.val_rows} validation rows (test stays sealed until test()).",
                 f"{self.n_inputs} float inputs per row."]
        if self.cardinalities:
            lines.append("Embedding codes (0 = unseen): " +
                         ", ".join(f"{k} ({v} codes)" for k, v in self.cardinalities.items()) + ".")
        return lines

    def _sections(self):
        return [("Columns", self.treatments)] if self.treatments is not None else []


def describe(pre: TabularPreprocessor) -> pd.DataFrame:
    """Per input column: kind, how gaps are filled, how values are encoded or scaled."""
    rows = {}
    scaling = pre.scaler if isinstance(pre.scaler, str) else type(pre.scaler).__name__
    scaling = "standard" if scaling == "auto" else scaling
    for name, plan in pre.plans.items():
        if name in pre.embedding_columns_:
            encoding = f"embedding codes ({pre.cardinalities_[name]})"
        else:
            encoding = {"numeric": scaling, "datetime": "days, " + scaling,
                        "binary": "minmax 0/1", "ordinal": "ordinal codes, minmax", "categorical": "one-hot"}[plan.kind]
        filled = {"numeric": "median", "datetime": "median", "categorical": "mode"}.get(plan.kind, "mode")
        if plan.strategy == "sentinel":
            filled = MISSING_LEVEL + " level" if plan.kind == "categorical" else filled + " + indicator"
        rows[name] = {"kind": plan.kind, "missing filled with": filled, "encoding": encoding}
    return pd.DataFrame.from_dict(rows, orient="index")
