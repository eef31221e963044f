"""Cleaning: the repairs that need no learned parameters, so they may run before the split.

Dropping duplicate rows and rows without a target, turning corrupt cells into missing ones and
reading numbers stored as text are decisions about single rows or cells. Dropping an all-missing or
constant column is a decision the training rows alone would make the same way. Choosing a missing-
value *strategy* uses only counts; the values that fill the gaps are learned later, from the train
split (see preprocess.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbtrain.data import duplicates as copies
from nbtrain.data import fingerprint
from nbtrain.data.identifiers import identifier_reason
from nbtrain.data.inputs import durations_and_periods, holds_times, one_time_zone, require_column
from nbtrain.errors import ConfigError, DataError
from nbtrain.report import Report

# Cells that mean "no value" when found in a text column (compared stripped and lower-cased)...
NA_MARKERS = ("", "?", "-", "--", "na", "n/a", "nan", "null", "none", "missing")
# ...except these, which in a column of labels can be a real answer (no airbag, no garage, not
# applicable) and stay a level there unless markers are given (clean(na_markers=...)). In a column
# of numbers every marker means "no value": the numbers around it are the evidence.
LEVEL_MARKERS = ("none", "na", "n/a")

DUPLICATES = ("auto", "drop", "keep")  # exact duplicate rows: judged (nbtrain.data.duplicates), or as told
STRATEGIES = ("drop_rows", "median", "mode", "sentinel", "drop_column")
# The automatic choice of a missing-value strategy, by the share of rows that lack the value:
DROP_ROWS_MAX_SHARE = 0.005  # at most 0.5%: drop those rows (no assumption about the value)...
DROP_ROWS_BUDGET = 0.01      # ...while all such drops together lose at most 1% of the rows;
FILL_MAX_SHARE = 0.05        # at most 5%: fill with the train median (numbers) or mode (labels);
# above that, a sentinel plus a missing-indicator column, so the model can learn whether absence matters.

# The largest magnitude a model's float32 inputs hold: beyond it a value becomes infinite, and a
# scaler's variance overflows long before float64 does (1e308 squared).
FLOAT32_MAX = float(np.finfo(np.float32).max)
NUMERIC_TEXT_SHARE = 0.95    # a text column is numeric when this share of its values parse as numbers
_SAMPLE = 1000               # values sampled to decide that cheaply before converting a whole column
_EXAMPLES = 5


@dataclass
class ColumnPlan:
    """What cleaning found in one feature column and what preprocessing will do with it."""

    kind: str                  # numeric, binary, categorical, ordinal, datetime
    missing: int = 0
    distinct: int = 0          # distinct values, missing ones not counted; numbers: counted up to 3
    strategy: str = "-"        # one of STRATEGIES, or "-" when nothing is missing
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    na_markers: tuple | None = None  # the cells that mean "no value" in this column (predict repeats them)


@dataclass(repr=False)
class CleaningReport(Report):
    """The result of `Pipeline.clean()`."""

    title = "Cleaning report"
    rows_in: int = 0
    rows_out: int = 0
    duplicates: int = 0
    duplicate_examples: list = field(default_factory=list)      # (dropped label, kept label)
    duplicates_kept: int = 0          # rows that repeat another exactly and were kept (likely chance)
    duplicate_pairs: int = 0          # pairs of identical rows...
    duplicate_pairs_expected: float = 0.0  # ...and how many chance explains (duplicates="auto")
    duplicates_rule: str = "auto"
    duplicates_compared_without: list = field(default_factory=list)  # columns that number the rows
    rows_without_target: int = 0
    rows_without_target_examples: list = field(default_factory=list)
    rows_with_infinite_target: int = 0
    rows_with_infinite_target_examples: list = field(default_factory=list)
    rows_dropped_for_missing: dict = field(default_factory=dict)  # column -> rows dropped
    dropped_columns: dict = field(default_factory=dict)           # column -> why
    corrupt: dict = field(default_factory=dict)                   # column -> [what was found]
    plans: dict = field(default_factory=dict)                     # column -> ColumnPlan
    kept_markers: dict = field(default_factory=dict)              # column -> {marker kept as a level: rows}
    identifiers: dict = field(default_factory=dict)               # column left out as identifier-like -> why
    warnings: list = field(default_factory=list)

    @property
    def strategies(self) -> dict:
        """Column -> missing-value strategy, for the columns that have missing values."""
        return {name: p.strategy for name, p in self.plans.items() if p.strategy != "-"}

    @property
    def columns(self) -> pd.DataFrame:
        rows = {name: {"kind": p.kind, "missing": p.missing, "strategy": p.strategy, "why": p.reason,
                       "notes": "; ".join(p.notes)} for name, p in self.plans.items()}
        return pd.DataFrame.from_dict(rows, orient="index")

    def _summary(self) -> list[str]:
        lines = [f"{self.rows_in} rows in, {self.rows_out} rows kept."]
        lines += self._duplicate_lines()
        if self.rows_without_target:
            lines.append(f"Dropped {rows_phrase(self.rows_without_target)} without a target, "
                         f"e.g. {self.rows_without_target_examples}.")
        if self.rows_with_infinite_target:
            lines.append(f"Dropped {rows_phrase(self.rows_with_infinite_target)} whose target is infinite, e.g. "
                         f"{self.rows_with_infinite_target_examples}: such a value can be neither learned nor scored.")
        for name, count in self.rows_dropped_for_missing.items():
            lines.append(f"Dropped {rows_phrase(count)} missing {name!r}.")
        return lines

    def _duplicate_lines(self) -> list[str]:
        chance = (f" ({self.duplicate_pairs} pairs of identical rows; chance explains about "
                  f"{self.duplicate_pairs_expected:.3g})") if self.duplicates_rule == "auto" else ""
        if self.duplicates_compared_without and (self.duplicates or self.duplicates_kept):
            chance += f", comparing rows without {self.duplicates_compared_without}, which number them"
        lines = []
        if self.duplicates:
            shown = ", ".join(f"{d!r} (same as {k!r})" for d, k in self.duplicate_examples)
            why = ": copies of one record, unlikely by chance" if self.duplicates_rule == "auto" else ""
            lines.append(f"Dropped {rows_phrase(self.duplicates)} that exactly repeat another, e.g. {shown}{chance}{why}.")
        if self.duplicates_kept:
            why = (": different records that happen to agree, as these columns' few values make likely. Pass "
                   "duplicates='drop' if they are copies") if self.duplicates_rule == "auto" else " (duplicates='keep')"
            lines.append(f"Kept {rows_phrase(self.duplicates_kept)} that exactly repeat another{chance}{why}.")
        return lines

    def _sections(self):
        sections = []
        dropped = [f"{k}: {v}" for k, v in self.dropped_columns.items() if k not in self.identifiers]
        if dropped:
            sections.append(("Dropped columns", dropped))
        if self.identifiers:
            sections.append(("Identifier-like columns, left out", [
                f"{k}: {v}. To use it as a feature: clean(keep_identifiers=[{k!r}])" for k, v in self.identifiers.items()]))
        if self.kept_markers:
            sections.append(("Markers kept as labels", [
                f"{k}: " + ", ".join(f"{m!r} ({n} rows)" for m, n in v.items()) + " kept as a level: in a column "
                f"of labels it can be a real answer. To read it as missing: clean(na_markers={{{k!r}: [...]}})"
                for k, v in self.kept_markers.items()]))
        if self.corrupt:
            sections.append(("Repaired and converted values", [f"{k}: {'; '.join(v)}" for k, v in self.corrupt.items()]))
        if self.plans:
            sections.append(("Columns", self.columns))
        return sections


def rows_phrase(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def clean_frame(frame: pd.DataFrame, row_hash: np.ndarray, *, target, features: list,
                required: tuple = (), ordinal: dict | None = None, missing: dict | None = None,
                na_markers="auto", duplicates: str = "auto",
                keep_identifiers=()) -> tuple[pd.DataFrame, np.ndarray, CleaningReport]:
    """Return the cleaned frame, the positions of its rows in `frame`, and the report.

    `row_hash` holds one content hash per row of `frame` (exact duplicates hash equal). `required`
    names non-feature columns (time, group) whose missing values make a row unusable. `frame` is
    never modified: repaired columns replace columns of a shallow copy.
    """
    report = CleaningReport(rows_in=len(frame))
    if duplicates not in DUPLICATES:
        raise ConfigError(f"duplicates={duplicates!r}: use one of {list(DUPLICATES)}.")
    keep = rows_with_target(frame, target, report) & unrepeated_rows(
        frame, row_hash, [target, *features, *required], duplicates, report)
    for name in required:
        lacking = keep & frame[name].isna().to_numpy()
        if lacking.any():
            report.rows_dropped_for_missing[name] = int(lacking.sum())
            keep &= ~lacking
    work = frame.iloc[np.flatnonzero(keep)].copy(deep=False)
    _require_rows(work, report)
    numeric_target = pd.api.types.is_numeric_dtype(work[target]) and not pd.api.types.is_bool_dtype(work[target])
    work[target] = numpy_types(work[target], "numeric" if numeric_target else "categorical")
    check_markers(na_markers, features)
    for name in features:
        _repair_and_plan(work, name, na_markers, name in (ordinal or {}), report)
    _drop_useless_columns(work, report)
    _leave_out_identifiers(work, report, keep_identifiers)
    _choose_strategies(len(work), work, report, missing or {})
    dropped = _rows_missing_where_dropped(work, report)
    positions = np.flatnonzero(keep)[~dropped]
    work = work.iloc[np.flatnonzero(~dropped)].drop(columns=list(report.dropped_columns))
    _require_rows(work, report)
    report.rows_out = len(work)
    return work, positions, report


def _repair_and_plan(work: pd.DataFrame, name, na_markers, declared_ordinal: bool, report: CleaningReport) -> None:
    """Repair one feature column of `work` in place and record what was found and its plan."""
    markers, levels = column_markers(name, na_markers)
    repaired = repair_column(work[name], markers, levels)
    kind = column_kind(repaired.column, repaired.distinct, declared_ordinal)
    work[name] = numpy_types(repaired.column, kind)
    if repaired.found:
        report.corrupt[name] = repaired.found
    if repaired.kept:
        report.kept_markers[name] = repaired.kept
    markers = tuple(m for m in markers if m not in levels) if kind in ("categorical", "ordinal") else markers
    report.plans[name] = ColumnPlan(kind=kind, missing=repaired.missing, distinct=repaired.distinct,
                                    na_markers=markers)
    if kind == "datetime":
        report.warnings.append(
            f"Column {name!r} holds dates but is not the time_col: a random split lets the model learn "
            "from rows later than those it is evaluated on. If the rows are ordered in time, pass "
            f"time_col={name!r}.")


def check_markers(na_markers, features: list) -> None:
    """na_markers: "auto", a list of markers for every column, or {column: [markers]} for some."""
    if isinstance(na_markers, str) and na_markers != "auto":
        raise ConfigError(f"na_markers={na_markers!r}: pass 'auto', a list of markers such as ['?', 'n/a'], or "
                          "{column: [markers]} for some columns.")
    for name in na_markers if isinstance(na_markers, dict) else ():
        require_column(features, name, "na_markers", ConfigError)


def column_markers(name, na_markers) -> tuple[tuple, tuple]:
    """(the markers that mean "no value" in column `name`, those that stay levels in a column of labels)."""
    if isinstance(na_markers, dict) and name in na_markers:
        na_markers = na_markers[name]
    elif isinstance(na_markers, (str, dict)):  # "auto", or a column the dict does not name
        return NA_MARKERS, LEVEL_MARKERS
    return tuple(str(m).strip().lower() for m in na_markers), ()


def _require_rows(work: pd.DataFrame, report: CleaningReport) -> None:
    if work.empty:
        raise DataError(f"Cleaning left no rows out of {report.rows_in}: {' '.join(report._summary()[1:])} "
                        "Check the target column and the missing-value strategies.")


def rows_with_target(frame: pd.DataFrame, target, report: CleaningReport) -> np.ndarray:
    """Rows whose target is present and, for numbers, finite: an infinite target can be neither
    learned (the loss is infinite) nor scored."""
    column = frame[target]
    lacking = column.isna().to_numpy()
    report.rows_without_target = int(lacking.sum())
    report.rows_without_target_examples = frame.index[lacking][:_EXAMPLES].tolist()
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        infinite = np.isinf(column.to_numpy(dtype=float, na_value=np.nan))
        report.rows_with_infinite_target = int(infinite.sum())
        report.rows_with_infinite_target_examples = frame.index[infinite][:_EXAMPLES].tolist()
        lacking = lacking | infinite
    return ~lacking


def first_occurrences(frame: pd.DataFrame, row_hash: np.ndarray, report: CleaningReport) -> np.ndarray:
    """Exact duplicates share a 64-bit content hash (a false match among 10^6 rows: ~3e-8)."""
    hashes = pd.Series(row_hash)
    repeated = hashes.duplicated(keep="first").to_numpy()
    report.duplicates = int(repeated.sum())
    if report.duplicates:
        first = dict(zip(row_hash[~repeated], frame.index[~repeated]))
        report.duplicate_examples = [(frame.index[i], first[row_hash[i]])
                                     for i in np.flatnonzero(repeated)[:_EXAMPLES]]
    return ~repeated


def unrepeated_rows(frame: pd.DataFrame, row_hash: np.ndarray, columns: list, rule: str,
                    report: CleaningReport) -> np.ndarray:
    """The rows to keep as far as exact duplicates go: all of them, or the first of each repeated
    row when `rule` is "drop", or "auto" and chance does not explain the repeats."""
    report.duplicates_rule = rule
    numbering = [name for name in columns if numbers_rows(frame[name])]
    if numbering:  # a file's row numbers differ between copies too: compare the rest
        columns = [name for name in columns if name not in numbering]
        row_hash = fingerprint.combine(frame, columns)
        report.duplicates_compared_without = numbering
    first = first_occurrences(frame, row_hash, report)
    if rule == "drop" or not report.duplicates:
        return first
    if rule == "auto":
        verdict = copies.judge(frame, columns, row_hash)
        report.duplicate_pairs, report.duplicate_pairs_expected = verdict.pairs, verdict.expected
        if verdict.drop:
            return first
    report.duplicates_kept, report.duplicates, report.duplicate_examples = report.duplicates, 0, []
    return np.ones(len(frame), dtype=bool)


def numbers_rows(column: pd.Series) -> bool:
    """Whether a column gives every row its own identifier-like value (a row number, an index saved
    with the file): such a column says nothing about whether two rows are one record."""
    if column.isna().any() or not column.is_unique:
        return False
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    return identifier_reason(column, "numeric" if numeric else "categorical") is not None


def column_kind(column: pd.Series, distinct: int, declared_ordinal: bool) -> str:
    if declared_ordinal:
        return "ordinal"
    if pd.api.types.is_bool_dtype(column):
        return "binary"
    if pd.api.types.is_datetime64_any_dtype(column):
        return "datetime"
    if pd.api.types.is_numeric_dtype(column):
        return "binary" if distinct == 2 else "numeric"
    return "categorical"


def numpy_types(column: pd.Series, kind: str) -> pd.Series:
    """pandas' nullable and Arrow dtypes (convert_dtypes(), dtype_backend="pyarrow") as numpy's, gaps as
    NaN or NaT: their pd.NA has no truth value, and scikit-learn finds gaps by comparing a cell with
    itself. Numbers become float64, date-times datetime64, labels Python objects."""
    dtype = column.dtype
    if isinstance(dtype, (np.dtype, pd.DatetimeTZDtype, pd.CategoricalDtype)) or (
            isinstance(dtype, pd.StringDtype) and dtype.na_value is not pd.NA):  # pandas' own "str": NaN gaps
        return column
    if kind in ("numeric", "binary"):
        values = column.to_numpy(dtype=float, na_value=np.nan)
    elif kind == "datetime":
        values = pd.DatetimeIndex(column)
    else:
        values = column.to_numpy(dtype=object, na_value=np.nan)
    return pd.Series(values, index=column.index, name=column.name)


@dataclass
class Repaired:
    """A column after repair, what was found in it, and its counts (taken in the same pass)."""

    column: pd.Series
    found: list
    missing: int
    distinct: int
    kept: dict = field(default_factory=dict)  # marker kept as a level -> its rows


def repair_column(column: pd.Series, na_markers, level_markers=()) -> Repaired:
    """Turn corrupt cells into missing ones, and text that holds numbers into numbers.

    A cell holding one of `na_markers` is missing, except one of `level_markers` in a column of
    labels: there "none" or "n/a" can be a real answer (no airbag, not applicable). In a column of
    numbers every marker is missing, the numbers around it being the evidence.

    The column is factorized once and every check runs on its distinct values (a label column
    has a few, shared by a million rows); the verdicts reach the rows through the codes. Durations,
    periods and times in several zones are converted first (inputs.py says to what).
    """
    column, found = _convert_types(column)
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        repaired = _repair_numbers(column)
        repaired.found[:0] = found
        return repaired
    codes, uniques = pd.factorize(column)
    values = pd.Series(uniques, dtype=object if column.dtype == object else None)
    counts = np.bincount(codes[codes >= 0], minlength=len(values))
    bad = np.zeros(len(values), dtype=bool)  # distinct values that really mean "no value"
    rebuild, parsed, kept = False, None, {}
    if pd.api.types.is_string_dtype(column) or column.dtype == object:
        mixed = _mixed_types(values, counts, found)
        bad, noted = _placeholders(values, na_markers), len(found)
        parsed = _numbers_from_text(values, counts, bad, found)
        if parsed is None:
            bad, kept = _answers_kept(values, counts, bad, level_markers)
        if bad.any():  # said first: the markers are read before the numbers
            shown = sorted(map(str, values[bad]))[:_EXAMPLES]
            found.insert(noted, f"{int(counts[bad].sum())} placeholder values {shown} (treated as missing)")
        if parsed is not None:
            values, bad = parsed, bad | np.isnan(parsed.to_numpy())
        elif mixed or _CODES_NOTE in found:
            values = values.astype(str)  # one type: text labels
        rebuild = parsed is not None or mixed or bool(bad.any()) or _CODES_NOTE in found
    if pd.api.types.is_float_dtype(values):
        unusable = _unusable_numbers(values.to_numpy(dtype=float), counts, found)
        bad, rebuild = bad | unusable, rebuild or bool(unusable.any())
    if rebuild:
        column = _from_codes(column, codes, values, bad)
    missing = int((codes < 0).sum() + counts[bad].sum())
    return Repaired(column, found, missing, len(pd.unique(values[~bad])), kept)


def _convert_types(column: pd.Series) -> tuple[pd.Series, list[str]]:
    """Durations, periods and date-times held as objects, as numbers or datetimes, with notes."""
    column, note = durations_and_periods(column)
    if holds_times(column):
        column = one_time_zone(column, f"Column {column.name!r}")
        note = "times in several time zones converted to UTC" if isinstance(column.dtype, pd.DatetimeTZDtype) \
            else "date-times stored as objects read as dates"
    return column, [note] if note else []


def _unusable_numbers(x: np.ndarray, counts: np.ndarray, found: list[str]) -> np.ndarray:
    """Infinities, and magnitudes beyond float32's range (sentinels such as 1e308: a model would see
    them as infinite), are no usable value; `counts` weighs each of `x` by its rows."""
    infinite = np.isinf(x)
    huge = ~infinite & (np.abs(np.nan_to_num(x)) > FLOAT32_MAX)
    if infinite.any():
        found.append(f"{int(counts[infinite].sum())} infinite values (treated as missing)")
    if huge.any():
        shown = [f"{v:g}" for v in np.unique(x[huge])[:_EXAMPLES]]
        found.append(f"{int(counts[huge].sum())} values beyond {FLOAT32_MAX:.3g}, the range of a model's float32 "
                     f"inputs, e.g. {shown} (treated as missing)")
    return infinite | huge


def _repair_numbers(column: pd.Series) -> Repaired:
    """Numbers need no factorizing (hashing a million floats is slow): unusable values become missing,
    and min/max tell constant and two-valued columns apart, so `distinct` stops counting at 3."""
    x = column.to_numpy(dtype=float, na_value=np.nan)
    found: list[str] = []
    unusable = _unusable_numbers(x, np.ones(len(x), dtype=np.int64), found)
    if unusable.any():
        column, x = column.mask(unusable), np.where(unusable, np.nan, x)
    present = ~np.isnan(x)
    if not present.any():
        return Repaired(column, found, len(x), 0)
    low, high = x[present].min(), x[present].max()
    distinct = 1 if low == high else 2 if ((x == low) | (x == high) | ~present).all() else 3
    return Repaired(column, found, int((~present).sum()), distinct)


_CODES_NOTE = "numbers with leading zeros (codes such as zip codes): kept as text labels"


def _from_codes(column: pd.Series, codes: np.ndarray, values: pd.Series, bad: np.ndarray) -> pd.Series:
    """Rebuild a column from its codes and (repaired) distinct values; bad values become missing."""
    table = values.to_numpy(dtype=float if pd.api.types.is_float_dtype(values) else object, copy=True)
    table[bad] = np.nan
    rows = np.where(codes >= 0, table[np.maximum(codes, 0)], np.nan)
    return pd.Series(rows, index=column.index, name=column.name)


def _mixed_types(values: pd.Series, counts: np.ndarray, found: list[str]) -> bool:
    if values.dtype != object:
        return False
    rows_per_type = pd.Series(counts).groupby(values.map(lambda v: type(v).__name__).to_numpy()).sum()
    mixed = len(rows_per_type) > 1 and not set(rows_per_type.index) <= {"int", "float"}
    if mixed:
        found.append("mixed types (" + ", ".join(f"{t}: {n}" for t, n in
                                                 rows_per_type.sort_values(ascending=False).items()) + ")")
    return mixed


def _placeholders(values: pd.Series, na_markers) -> np.ndarray:
    if not na_markers:
        return np.zeros(len(values), dtype=bool)
    return values.astype(str).str.strip().str.lower().isin(na_markers).to_numpy()


def _answers_kept(values: pd.Series, counts: np.ndarray, bad: np.ndarray, level_markers) -> tuple[np.ndarray, dict]:
    """In a column of labels, markers that can be a real answer stay levels: (still bad, kept -> rows)."""
    if not level_markers or not bad.any():
        return bad, {}
    answer = bad & values.astype(str).str.strip().str.lower().isin(level_markers).to_numpy()
    kept = {str(values[i]): int(counts[i]) for i in np.flatnonzero(answer)}
    return bad & ~answer, kept


def _numbers_from_text(values: pd.Series, counts: np.ndarray, bad: np.ndarray, found: list[str]):
    """Float per distinct value when the column holds numbers written as text, else None."""
    candidates = np.flatnonzero(~bad)
    if not len(candidates):
        return None
    sample = np.random.default_rng(0).choice(candidates, min(_SAMPLE, len(candidates)), replace=False)
    text = values[sample].astype(str).str.strip()
    parses = pd.to_numeric(text, errors="coerce").notna().to_numpy()
    if counts[sample][parses].sum() < NUMERIC_TEXT_SHARE * counts[sample].sum():
        return None
    if text[parses].str.match(r"^0\d").any():
        found.append(_CODES_NOTE)
        return None
    parsed = pd.to_numeric(values.astype(str).str.strip(), errors="coerce").to_numpy(dtype=float)
    found.append("numbers stored as text (converted to numbers)")
    unparsed = np.isnan(parsed) & ~bad
    if unparsed.any():
        shown = sorted(map(str, values[unparsed]))[:_EXAMPLES]
        found.append(f"{int(counts[unparsed].sum())} values that are not numbers {shown} (treated as missing)")
    return pd.Series(parsed)


def _drop_useless_columns(work: pd.DataFrame, report: CleaningReport) -> None:
    """All-missing and constant columns carry no information. A constant column with gaps stays:
    the pattern of its gaps may matter, and its missing-indicator carries that."""
    for name, plan in report.plans.items():
        if plan.missing == len(work):
            report.dropped_columns[name] = f"all {len(work)} values are missing"
            plan.strategy, plan.reason = "drop_column", "no values at all"
        elif plan.missing == 0 and plan.distinct == 1:
            value = work[name].iloc[0]
            report.dropped_columns[name] = f"constant: every row is {getattr(value, 'item', lambda: value)()!r}"
            plan.notes.append("constant, dropped")


def _leave_out_identifiers(work: pd.DataFrame, report: CleaningReport, keep) -> None:
    """Columns that name a row rather than describe it (nbtrain.data.identifiers), unless kept."""
    for name in keep:
        require_column(list(report.plans), name, "keep_identifiers", ConfigError)
    for name, plan in report.plans.items():
        if name in report.dropped_columns or name in keep:
            continue
        reason = identifier_reason(work[name], plan.kind)
        if reason:
            report.identifiers[name] = reason
            report.dropped_columns[name] = f"identifier-like: {reason}"
            plan.strategy, plan.reason = "drop_column", "identifier-like, left out"


def _choose_strategies(n_rows: int, work: pd.DataFrame, report: CleaningReport, overrides: dict) -> None:
    """Pick each column's missing-value strategy (rules at the top of this module); overrides win."""
    _check_overrides(report, overrides)
    dropped = np.zeros(n_rows, dtype=bool)
    by_missing = sorted(report.plans.items(), key=lambda item: item[1].missing)
    for name, plan in by_missing:
        share = plan.missing / n_rows
        if name in overrides:
            plan.strategy, plan.reason = overrides[name], "your choice"
            if plan.strategy == "drop_column":
                report.dropped_columns[name] = "your choice"
        elif plan.missing == 0 or plan.strategy == "drop_column":
            continue
        elif share <= DROP_ROWS_MAX_SHARE and (dropped | work[name].isna().to_numpy()).sum() <= DROP_ROWS_BUDGET * n_rows:
            plan.strategy = "drop_rows"
            plan.reason = f"only {plan.missing} rows ({share:.2%}) lack it: dropping them assumes nothing"
        elif share <= FILL_MAX_SHARE:
            plan.strategy = "median" if plan.kind in ("numeric", "datetime") else "mode"
            plan.reason = (f"{share:.1%} missing: few enough to fill with the train "
                           + ("median (robust to skew and outliers)" if plan.strategy == "median" else
                              "most frequent value"))
        else:
            plan.strategy = "sentinel"
            plan.reason = (f"{share:.1%} missing: too many to drop or fill silently; a sentinel plus a "
                           "missing-indicator lets the model learn whether absence carries signal")
        if plan.strategy == "drop_rows":
            dropped |= work[name].isna().to_numpy()


def _check_overrides(report: CleaningReport, overrides: dict) -> None:
    if not isinstance(overrides, dict):
        raise ConfigError(f"missing= maps columns to strategies, e.g. {{'age': 'median'}}; "
                          f"received a {type(overrides).__name__}.")
    for name, strategy in overrides.items():
        require_column(list(report.plans), name, "missing", ConfigError)
        plan = report.plans[name]
        if strategy not in STRATEGIES:
            raise ConfigError(f"missing={{{name!r}: {strategy!r}}}: unknown strategy; use one of {list(STRATEGIES)}.")
        if plan.reason == "no values at all" and strategy != "drop_column":
            raise ConfigError(f"Column {name!r} has no values at all, so {strategy!r} has nothing to learn "
                              "from; leave it to be dropped (the default) or drop it yourself.")
        if strategy == "median" and plan.kind not in ("numeric", "datetime"):
            raise ConfigError(f"missing={{{name!r}: 'median'}}: {name!r} holds {plan.kind} values, which have "
                              "no median; use 'mode' or 'sentinel'.")


def _rows_missing_where_dropped(work: pd.DataFrame, report: CleaningReport) -> np.ndarray:
    dropped = np.zeros(len(work), dtype=bool)
    for name, plan in report.plans.items():
        if plan.strategy == "drop_rows":
            lacking = work[name].isna().to_numpy()
            report.rows_dropped_for_missing[name] = int((lacking & ~dropped).sum())
            dropped |= lacking
    return dropped
