"""Checks on what a user hands to `Pipeline`: each problem becomes an error that says what was
received and what to do, before anything is copied, hashed or learned."""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from nbtrain.errors import ConfigError, DataError

_EXAMPLES = 3  # how many offending values or rows an error message quotes


def require_frame(data) -> pd.DataFrame:
    """Accept a DataFrame; for arrays, lists and dicts, say how to get one."""
    if isinstance(data, pd.DataFrame):
        return data
    received = type(data).__name__
    if isinstance(data, (np.ndarray, list, tuple)):
        hint = ("For arrays use nt.Pipeline.from_arrays(X, y, feature_names=[...]), "
                "or build a DataFrame with pd.DataFrame(X, columns=[...]) and name the target column.")
    elif isinstance(data, dict):
        hint = "Wrap it first: nt.Pipeline(pd.DataFrame(data), target=...)."
    elif isinstance(data, pd.Series):
        hint = "A Series is one column; pass the DataFrame that holds the features and the target."
    else:
        hint = "Load it into a pandas DataFrame first (pd.read_csv, pd.read_parquet, ...)."
    raise DataError(f"Pipeline needs a pandas DataFrame with the features and the target; "
                    f"received a {received}. {hint}")


def check_shape(frame: pd.DataFrame) -> None:
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"The DataFrame is empty ({frame.shape[0]} rows x {frame.shape[1]} columns); "
                        "there is nothing to train on. Check how it was loaded or filtered.")
    check_column_names(frame.columns)
    if not frame.index.is_unique:
        label = frame.index[frame.index.duplicated()][0]
        raise DataError(f"The DataFrame's index has duplicate labels (e.g. {label!r}); predictions are "
                        "reported by index label, so each row needs its own. "
                        "Use df.reset_index(drop=True) (or keep the old index as a column).")


def check_column_names(columns: pd.Index) -> None:
    """One flat level of unique names. Names need not be text (pd.DataFrame(array) numbers them), but
    their texts must differ too: features are named by text inside (see preprocess.py)."""
    if isinstance(columns, pd.MultiIndex):
        shown = [tuple(c) for c in columns[:_EXAMPLES]]
        raise DataError(f"The DataFrame's columns have {columns.nlevels} levels (a MultiIndex, e.g. {shown}); "
                        "nbtrain needs one name per column. Flatten them first, e.g. "
                        "df.columns = ['_'.join(map(str, c)) for c in df.columns].")
    repeated = columns[columns.duplicated()].unique().tolist()
    if repeated:
        raise DataError(f"The DataFrame has duplicate column names: {repeated}. Each column needs a "
                        "unique name so it can be tracked; rename them (df.columns = [...]).")
    texts = pd.Series(columns, dtype=object).map(str)
    clashing = texts[texts.duplicated(keep=False)]
    if len(clashing):
        same = [columns[i] for i in clashing.index[clashing == clashing.iloc[0]]]
        raise DataError(f"The DataFrame has columns whose names differ only in type: {same} (all read "
                        f"{clashing.iloc[0]!r}); features are named by their text, so they would be confused. "
                        f"Rename one of them, e.g. df.rename(columns={{{same[0]!r}: 'new_name'}}).")


def require_column(columns, name, role: str, error: type[Exception] = DataError) -> None:
    """`role` is the argument name, e.g. "target", used in the message."""
    if name in columns:
        return
    names = [str(c) for c in columns]
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
    close += [c for c in names if c.lower() == str(name).lower() and c not in close]
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    shown = names if len(names) <= 12 else names[:12] + ["..."]
    raise error(f"{role}={name!r} is not a column of the DataFrame.{hint} Columns: {shown}.")


def check_cells_hashable(frame: pd.DataFrame) -> None:
    """Lists, dicts, sets and arrays in cells can be neither compared nor encoded; complex numbers
    have no order, and a model's inputs are real numbers."""
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_complex_dtype(column):
            _refuse_complex(name, column, np.ones(len(column), dtype=bool))
        if column.dtype != object:
            continue
        _refuse_complex(name, column, column.map(lambda v: isinstance(v, complex)).to_numpy(dtype=bool))
        bad = column.map(lambda v: isinstance(v, (list, dict, set, np.ndarray)))
        if bad.any():
            label = bad.index[bad.to_numpy()][0]
            kind = type(column[label]).__name__
            raise DataError(f"Column {name!r} holds {kind} values (e.g. in row {label!r}), {int(bad.sum())} "
                            "rows in all; a cell must hold one number, string or date. Expand them into "
                            "columns (pd.json_normalize, df.explode) or drop the column.")


def _refuse_complex(name, column: pd.Series, complex_cells: np.ndarray) -> None:
    if not complex_cells.any():
        return
    label = column.index[complex_cells][0]
    raise DataError(f"Column {name!r} holds complex numbers (e.g. {column[label]} in row {label!r}), "
                    f"{int(complex_cells.sum())} rows in all; a model reads real numbers. Split it into two real "
                    f"columns, e.g. df['{name}_real'] = np.real(df[{name!r}]) and df['{name}_imag'] = "
                    f"np.imag(df[{name!r}]) (or np.abs and np.angle), and drop {name!r}.")


def parse_time(column: pd.Series) -> pd.Series:
    """A time column as datetimes (or numbers such as a year or a step counter, kept as they are);
    times in several time zones become UTC (see one_time_zone)."""
    if pd.api.types.is_datetime64_any_dtype(column) or (
            pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)):
        parsed = column
    else:
        parsed = one_time_zone(column, f"time_col={column.name!r}")
    bad = parsed.isna() & column.notna()
    if bad.any():
        examples = column[bad].head(_EXAMPLES).tolist()
        raise DataError(f"time_col={column.name!r} has {int(bad.sum())} values that are not dates or times, "
                        f"e.g. {examples}. Fix or drop those rows, or parse the column yourself "
                        "(pd.to_datetime(..., format=...)) before building the Pipeline.")
    return parsed


def holds_times(column: pd.Series) -> bool:
    """Whether an object column holds date-time objects: pandas keeps times of several time zones, or
    zoned and naive times together, in an object column rather than a datetime one."""
    return column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) == "datetime"


def one_time_zone(column: pd.Series, role: str) -> pd.Series:
    """Dates and times (objects or text) as one datetime column: times in several zones are converted
    to UTC, which keeps every instant; unparseable cells become NaT. A mix of zoned and naive times is
    refused: a naive time has no zone to convert from, so its instant is unknown."""
    if holds_times(column):
        zoned = _zoned(pd.unique(column.dropna()))
    else:
        try:
            return pd.to_datetime(column, errors="coerce", format="mixed")
        except ValueError:  # "Mixed timezones detected": read each distinct text to see which carry a zone
            zoned = _zoned(pd.unique(column.dropna()))
    known = [z for z in zoned if z is not None]
    if any(known) and not all(known):
        _refuse_mixed_zones(column, role)
    return pd.to_datetime(column, errors="coerce", format="mixed", utc=any(known))


def _zoned(values) -> list:
    """Per value: True with a time zone, False without, None when it is not a time."""
    def zone(value):
        try:
            return pd.Timestamp(value).tzinfo is not None
        except (ValueError, TypeError):
            return None
    return [zone(value) for value in values]


def _refuse_mixed_zones(column: pd.Series, role: str) -> None:
    present = column.dropna()
    flags = pd.Series(_zoned(present.to_numpy()), index=present.index)
    with_zone, without = present[flags.eq(True)], present[flags.eq(False)]
    raise DataError(f"{role} mixes times with a time zone ({len(with_zone)} rows, e.g. {with_zone.iloc[0]!s}) and "
                    f"times without one ({len(without)} rows, e.g. {without.iloc[0]!s}); a time without a zone "
                    "cannot be placed against one with. Give them all a zone (if the naive ones are UTC: "
                    "pd.to_datetime(df[...], utc=True)) or remove the zones (.dt.tz_convert(None)).")


def durations_and_periods(column: pd.Series) -> tuple[pd.Series, str | None]:
    """Durations as seconds and periods as their ordinal (whole periods since 1970), both as float
    numbers, with a note saying so; any other column unchanged with None. Left as they are, each
    distinct duration or month would become a label of its own."""
    if pd.api.types.is_timedelta64_dtype(column):
        return column / pd.Timedelta(seconds=1), "durations (timedelta) converted to seconds"
    if isinstance(column.dtype, pd.PeriodDtype):
        start = pd.Period("1970-01-01", freq=column.dtype.freq)
        ordinals = pd.Series(column.array.asi8, index=column.index, name=column.name, dtype=float)
        return ordinals.mask(column.isna()), f"periods ({column.dtype}) converted to their number since {start}"
    return column, None


def naive_times(times: pd.Series) -> pd.Series:
    """Time-zone aware times as UTC without a zone, so they sort and subtract like any others."""
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        return times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times


def check_ordinal(frame: pd.DataFrame, ordinal) -> dict:
    """`ordinal` maps a column to its levels in order; an ordered Categorical may give only its name."""
    if ordinal is None:
        return {}
    if isinstance(ordinal, (list, tuple)):
        ordinal = {name: None for name in ordinal}
    if not isinstance(ordinal, dict):
        raise ConfigError(f"ordinal must map columns to their levels in order, e.g. "
                          f"{{'size': ['S', 'M', 'L']}}; received a {type(ordinal).__name__}.")
    levels = {}
    for name, order in ordinal.items():
        require_column(frame.columns, name, "ordinal column", ConfigError)
        column = frame[name]
        if order is None:
            if not (isinstance(column.dtype, pd.CategoricalDtype) and column.dtype.ordered):
                raise ConfigError(f"ordinal column {name!r} needs its levels in order, e.g. "
                                  f"ordinal={{{name!r}: [...]}}; only an ordered Categorical carries its own.")
            order = list(column.dtype.categories)
        unknown = sorted(set(column.dropna().unique()) - set(order), key=str)
        if unknown:
            raise ConfigError(f"ordinal column {name!r} has values missing from its order {list(order)}: "
                              f"{unknown[:_EXAMPLES]}. Add them to ordinal[{name!r}] where they belong.")
        levels[name] = list(order)
    return levels
