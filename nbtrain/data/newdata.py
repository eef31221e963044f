"""New rows for a trained model: check them against the feature schema learned in training, and
repeat the cleaning repairs that apply to single cells.

Cleaning decided per column what kind of values it holds; new rows are brought to that form with
the repairs that need nothing learned: placeholders such as "?" and infinities become missing,
numbers written as text become numbers, labels become text like the training labels. What cannot be
repaired without guessing is an error that names the column, the values and the rows: a missing
column, text that is not a number in a numeric column, an ordinal level outside its declared order.
What the fitted preprocessing can handle (a label not seen in training, a gap in a column that had
none) is applied and reported; `strict=True` turns those reports into errors.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from nbtrain.data import fingerprint
from nbtrain.data.clean import FLOAT32_MAX, NA_MARKERS, rows_phrase
from nbtrain.data.inputs import durations_and_periods, one_time_zone
from nbtrain.data.preprocess import days_since_epoch
from nbtrain.errors import DataError

_EXAMPLES = 5


@dataclass(frozen=True)
class ColumnSpec:
    """One input column as the model was trained on it."""

    name: str
    kind: str                 # numeric, binary, categorical, ordinal, datetime (see nbtrain.data.clean)
    strategy: str = "-"       # cleaning's missing-value strategy; "-": training had no gaps
    dtype: str = ""           # its dtype in the DataFrame given to the Pipeline, for messages
    levels: tuple | None = None   # categorical: the train split's labels; ordinal: the declared order
    tz_aware: bool = False    # datetime: whether training times carried a time zone
    na_markers: tuple | None = None  # cells that mean "no value" here (None: the schema's markers)

    def to_dict(self) -> dict:
        values = asdict(self)
        for name in ("levels", "na_markers"):
            values[name] = list(values[name]) if values[name] is not None else None
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ColumnSpec:
        return cls(**{**values, **{name: tuple(values[name]) for name in ("levels", "na_markers")
                                   if values.get(name) is not None}})


@dataclass(frozen=True)
class Schema:
    """The columns a model reads, in order, and the columns it knowingly ignores."""

    columns: tuple[ColumnSpec, ...]
    ignored: tuple = ()       # target, time and group columns, columns dropped by cleaning
    na_markers: tuple = NA_MARKERS

    @property
    def names(self) -> list:
        return [spec.name for spec in self.columns]

    def to_dict(self) -> dict:
        return {"columns": [spec.to_dict() for spec in self.columns], "ignored": list(self.ignored),
                "na_markers": list(self.na_markers)}

    @classmethod
    def from_dict(cls, values: dict) -> Schema:
        return cls(columns=tuple(ColumnSpec.from_dict(c) for c in values["columns"]),
                   ignored=tuple(values.get("ignored", ())), na_markers=tuple(values.get("na_markers", NA_MARKERS)))


def build_schema(plans: dict, train: pd.DataFrame, raw_dtypes: dict, ordinal: dict, ignored,
                 na_markers=NA_MARKERS) -> Schema:
    """The schema of the columns cleaning kept (`plans`), with labels read from the train rows."""
    specs = []
    for name, plan in plans.items():
        levels = None
        if plan.kind == "categorical":
            levels = tuple(_plain(v) for v in pd.unique(train[name].dropna()))
        elif plan.kind == "ordinal":
            levels = tuple(_plain(v) for v in ordinal[name])
        tz_aware = isinstance(train[name].dtype, pd.DatetimeTZDtype)
        specs.append(ColumnSpec(name=name, kind=plan.kind, strategy=plan.strategy, dtype=str(raw_dtypes.get(name, "")),
                                levels=levels, tz_aware=tz_aware, na_markers=plan.na_markers))
    return Schema(columns=tuple(specs), ignored=tuple(ignored), na_markers=tuple(na_markers))


def _plain(value):
    """numpy scalars as Python values, so the schema can be written as JSON."""
    return value.item() if isinstance(value, np.generic) else value


def as_frame(data) -> pd.DataFrame:
    """New rows as a DataFrame: a DataFrame, one row as a Series or dict, or a list of row dicts."""
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, pd.Series):
        frame = data.to_frame().T.infer_objects()
    elif isinstance(data, dict):
        scalar = all(np.ndim(v) == 0 for v in data.values())
        frame = pd.DataFrame([data]) if scalar else pd.DataFrame(data)
    elif isinstance(data, list) and all(isinstance(row, dict) for row in data):
        frame = pd.DataFrame(data)
    else:
        raise DataError(f"predict() needs the new rows as a pandas DataFrame with the training columns; received a "
                        f"{type(data).__name__}. Build one with pd.DataFrame(...) (one dict per row works too).")
    repeated = frame.columns[frame.columns.duplicated()].unique().tolist()
    if repeated:
        raise DataError(f"The new rows have duplicate column names: {repeated}. Rename them so each column the "
                        "model reads is unambiguous.")
    return frame


def conform(frame: pd.DataFrame, schema: Schema, *, strict: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """The model's columns of `frame`, repaired into their training form, and notes on what was done.

    `frame` is only read. Raises DataError for what cannot be repaired; with `strict`, also for
    extra columns, unseen labels and gaps in columns that had none in training.
    """
    notes = _check_columns(frame, schema)
    columns = {}
    for spec in schema.columns:
        markers = spec.na_markers if spec.na_markers is not None else schema.na_markers
        columns[spec.name], found = _conform_column(frame[spec.name], spec, markers)
        notes += found
    if strict and notes:
        raise DataError("strict=True and the new rows differ from training: " + " ".join(notes) +
                        " Fix the rows, or call predict without strict=True to apply the handling described.")
    return pd.DataFrame(columns, index=frame.index), notes


def _check_columns(frame: pd.DataFrame, schema: Schema) -> list[str]:
    given = list(frame.columns)
    missing = [name for name in schema.names if name not in given]
    if missing:
        hints = [f"{name!r} -> {close!r}?" for name in missing if (close := _close_name(name, given)) is not None]
        hint = f" Close names in your data: {', '.join(hints)}." if hints else ""
        raise DataError(f"The new rows lack {len(missing)} column{'s' if len(missing) > 1 else ''} the model reads: "
                        f"{missing}.{hint} Expected the training columns {schema.names}; received {given}. Add "
                        "them (NaN where a value is unknown: gaps are filled as in training).")
    extra = [c for c in given if c not in schema.names and c not in schema.ignored]
    if extra:
        return [f"Ignored {len(extra)} column{'s' if len(extra) > 1 else ''} the model was not trained on: "
                f"{extra[:_EXAMPLES]}{' ...' if len(extra) > _EXAMPLES else ''}."]
    return []


def _close_name(name, given: list):
    """The given column most like `name`: same letters in another case, else a near spelling."""
    same = [c for c in given if str(c).lower() == str(name).lower()]
    near = difflib.get_close_matches(str(name), [str(c) for c in given], n=1, cutoff=0.6)
    return same[0] if same else near[0] if near else None


def _conform_column(column: pd.Series, spec: ColumnSpec, na_markers) -> tuple[pd.Series, list[str]]:
    if spec.kind in ("numeric", "binary"):
        values, notes = _numbers(column, spec, na_markers)
    elif spec.kind == "datetime":
        values, notes = _times(column, spec, na_markers), []
    elif spec.kind == "ordinal":
        values, notes = _ordinal(column, spec, na_markers), []
    else:
        values, notes = _labels(column, spec, na_markers)
    gaps = int(values.isna().sum())
    if gaps and spec.strategy in ("-", "drop_rows"):
        filled = {"numeric": "the train median", "datetime": "the train median"}.get(spec.kind, "the train mode")
        filled = "an unseen label" if spec.kind == "categorical" else filled
        notes.append(f"Column {spec.name!r} had no missing values in training, but {rows_phrase(gaps)} here "
                     f"{'lacks' if gaps == 1 else 'lack'} a value: filled with {filled}.")
    return values, notes


def _per_distinct(column: pd.Series, function) -> pd.Series:
    """`function` applied once per distinct value (a label column has a few, shared by many rows);
    missing cells stay missing."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    mapped = np.array([function(value) for value in uniques] + [np.nan], dtype=object)
    return pd.Series(mapped[codes], index=column.index, dtype=object)  # code -1 picks the NaN at the end


def _is_text_like(column: pd.Series) -> bool:
    return column.dtype == object or pd.api.types.is_string_dtype(column) or isinstance(column.dtype, pd.CategoricalDtype)


def _placeholders(column: pd.Series, na_markers) -> np.ndarray:
    """Cells that hold a "no value" marker such as "?" or "n/a" (text cells only)."""
    if not na_markers or not _is_text_like(column):
        return np.zeros(len(column), dtype=bool)
    marked = _per_distinct(column, lambda v: isinstance(v, str) and v.strip().lower() in na_markers)
    return marked.eq(True).to_numpy()


def _numbers(column: pd.Series, spec: ColumnSpec, na_markers) -> tuple[pd.Series, list[str]]:
    """Numbers as float64: placeholders, infinities and magnitudes beyond float32 become missing; text
    that is a number is read; durations and periods become numbers as in cleaning."""
    if spec.dtype.startswith(("timedelta", "period")):
        column = _durations_or_periods(column, spec)
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        values = pd.Series(column.to_numpy(dtype=float, na_value=np.nan), index=column.index)
    else:
        cleared = column.astype(object).mask(_placeholders(column, na_markers))
        values = pd.to_numeric(_per_distinct(cleared, _as_number), errors="coerce").astype(float)
        _refuse(column, values.isna() & cleared.notna(), spec,
                f"holds numbers in training ({spec.dtype}), but", "text that is not a number",
                "Fix or remove them, or leave those cells empty (NaN) to have them imputed.")
    x = values.to_numpy()
    infinite, huge = np.isinf(x), np.abs(np.nan_to_num(x, posinf=0, neginf=0)) > FLOAT32_MAX
    notes = [f"Column {spec.name!r}: {rows_phrase(int(infinite.sum()))} with an infinite value, treated as missing."] \
        if infinite.any() else []
    if huge.any():
        notes.append(f"Column {spec.name!r}: {rows_phrase(int(huge.sum()))} with a value beyond {FLOAT32_MAX:.3g} (e.g. "
                     f"{x[huge][0]:g}), more than the model's float32 inputs hold: treated as missing, as in training.")
    return values.mask(infinite | huge), notes


def _durations_or_periods(column: pd.Series, spec: ColumnSpec) -> pd.Series:
    """Durations (or periods of the training frequency) as the numbers cleaning made of them: seconds
    (or periods since 1970). Text is parsed; numbers are taken as already in that form, so rows that
    were cleaned conform unchanged."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column
    if spec.dtype.startswith("timedelta") and not pd.api.types.is_timedelta64_dtype(column):
        parsed = pd.to_timedelta(column.astype(object), errors="coerce")
        _refuse(column, parsed.isna() & column.notna(), spec, f"held durations in training ({spec.dtype}), but",
                "values that are not durations", "Pass durations, e.g. pd.to_timedelta(values, unit='s').")
        column = parsed
    if spec.dtype.startswith("period") and str(column.dtype) != spec.dtype:
        _refuse(column, column.notna(), spec, f"held periods in training ({spec.dtype}), but",
                f"other values ({column.dtype})", "Pass periods of that frequency (values.dt.to_period(...) or "
                "values.dt.asfreq(...)).")
    return durations_and_periods(column)[0]


def _as_number(value):
    """A cell of a text column that should hold numbers: " 3.5 " -> 3.5, True -> 1.0; else unchanged."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    return value.strip() if isinstance(value, str) else value


def _times(column: pd.Series, spec: ColumnSpec, na_markers) -> pd.Series:
    """Date-times as a datetime column; zoned when training's were, naive when they were not."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise DataError(f"Column {spec.name!r} holds dates and times in training ({spec.dtype}), but the new rows "
                        f"hold {column.dtype} values there. Pass datetimes (pd.to_datetime(...)) or date strings.")
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = pd.Series(pd.DatetimeIndex(column), index=column.index)  # Arrow timestamps too
    else:
        cleared = column.mask(_placeholders(column, na_markers))
        parsed = one_time_zone(cleared, f"Column {spec.name!r} of the new rows")
        _refuse(column, parsed.isna() & cleared.notna(), spec, f"holds dates and times in training ({spec.dtype}), "
                "but", "values that are not dates", "Fix or remove them, or leave those cells empty (NaN).")
    zoned = isinstance(parsed.dtype, pd.DatetimeTZDtype)
    if zoned != spec.tz_aware and parsed.notna().any():
        _refuse_zones(column, spec, zoned)
    if zoned != spec.tz_aware:  # no time at all: gaps of the training kind
        parsed = parsed.dt.tz_localize("UTC") if spec.tz_aware else parsed.dt.tz_localize(None)
    return parsed


def _refuse_zones(column: pd.Series, spec: ColumnSpec, zoned: bool) -> None:
    """Times with a zone against naive training times (or the reverse) name no common instant: a naive
    time's zone is unknown, and guessing UTC shifts every value by the zone's offset."""
    if zoned:
        found, todo = "times with a time zone", ("Convert them to the zone training used and drop the zone: "
                                                 ".dt.tz_convert('<that zone>').dt.tz_localize(None).")
    else:
        found, todo = "times without a time zone", "Give them their zone: .dt.tz_localize('<their zone>')."
    raise DataError(f"Column {spec.name!r} held times {'with' if spec.tz_aware else 'without'} a time zone in "
                    f"training ({spec.dtype}), but the new rows hold {found} ({column.dtype}), e.g. "
                    f"{column.dropna().iloc[0]!s}. {todo}")


def _ordinal(column: pd.Series, spec: ColumnSpec, na_markers) -> pd.Series:
    """Levels of a declared order; a value outside it cannot be placed, so it is an error."""
    by_text = {str(level): level for level in spec.levels}

    def level(value):
        return value if value in spec.levels else by_text.get(str(value), value)

    values = _per_distinct(column.astype(object).mask(_placeholders(column, na_markers)), level)
    unknown = values.notna() & ~values.isin(list(spec.levels))
    _refuse(column, unknown, spec, f"is ordinal with the levels {list(spec.levels)}, but", "other values",
            "Map them onto those levels, or leave those cells empty (NaN): the train mode fills them.")
    return values


def _labels(column: pd.Series, spec: ColumnSpec, na_markers) -> tuple[pd.Series, list[str]]:
    """Labels as Python objects; as text when the training labels were text (CSV files read "02134"
    as a number: it becomes "2134", reported as unseen rather than silently matched)."""
    levels = spec.levels or ()
    as_text = bool(levels) and all(isinstance(level, str) for level in levels)
    values = _per_distinct(column.astype(object).mask(_placeholders(column, na_markers)),
                           fingerprint.label_text if as_text else lambda v: v)
    unseen = values.notna() & ~values.isin(list(levels))
    if not unseen.any():
        return values, []
    shown = pd.unique(values[unseen])[:_EXAMPLES].tolist()
    return values, [f"Column {spec.name!r}: {rows_phrase(int(unseen.sum()))} with a label not seen in training, e.g. "
                    f"{shown}: encoded as an unseen label (the training labels are "
                    f"{list(levels)[:_EXAMPLES]}{' ...' if len(levels) > _EXAMPLES else ''})."]


def _refuse(column: pd.Series, bad: pd.Series, spec: ColumnSpec, expected: str, found: str, todo: str) -> None:
    if not bad.any():
        return
    where = bad.to_numpy()
    values = pd.unique(column[where].astype(str))[:_EXAMPLES].tolist()
    rows = column.index[where][:_EXAMPLES].tolist()
    raise DataError(f"Column {spec.name!r} {expected} the new rows hold {found} in {rows_phrase(int(where.sum()))}: "
                    f"{values} (rows {rows}). {todo}")
