"""Time series: the checks clean() runs on the timestamps, and the windows preprocess() builds.

Checks (per series, after the base cleaning dropped exact duplicate rows):

- duplicate timestamps: rows of one series sharing a time but not their values; `duplicate_times`
  keeps the "first" (default) or "last" of each, or refuses them ("error").
- the sampling frequency: from the median step between timestamps (pandas.infer_freq names it when
  the series is regular). Steps of 27-31 days count as months, 88-92 as quarters, 364-366 as years;
  days with no Saturday or Sunday as business days. A step that is not a whole number of
  frequency steps is "off the grid"; a step of two or more leaves a gap of missing steps.
- missing target values: `target_missing="interpolate"` (default) keeps the rows; preprocess fills
  them by time interpolation *within each split period* of the series, so no value is ever filled
  from another period; windows of validation and test whose target steps were filled are not
  scored (a score is against observed values only). "drop" drops the rows (they become gaps).

Windows (built after the split, per series, per split period): `lookback` rows of inputs, then the
target's next `horizon` values. A window's targets lie inside one period; its inputs may reach back
into the earlier periods (validation windows read the last train rows, test windows the last
validation rows), because at forecast time the past is known. So every row of validation and test is
forecast, and no target of one period is ever trained on or scored in another. Each earlier period's
rows are filled within that period, exactly as when it was cut. With `gaps="split"` (default) a
window never spans a gap in the timestamps, at the seam between periods included.

Inputs per step: the target's own value, the numeric covariates (both standardised with a
StandardScaler fitted on the train period's rows only) and, with calendar=True, sine/cosine of the
position in the year (and week, and day, for finer steps). The targets stay in data units: fit
standardises them itself, and MAPE/sMAPE need the real values.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler

from nbtrain.data import inputs
from nbtrain.data.clean import CleaningReport, rows_phrase
from nbtrain.data.inputs import naive_times
from nbtrain.errors import ConfigError, DataError, LeakageError
from nbtrain.training.evaluation import nn_predictions
from nbtrain.report import Report

TARGET_MISSING = ("interpolate", "drop")
DUPLICATE_TIMES = ("first", "last", "error")
GAPS = ("split", "ignore")
_EXAMPLES = 3
_OFF_GRID_TOLERANCE = 0.01  # a step within 1% of a whole number of frequency steps is on the grid
_GAP_STEPS = 1.5            # a step this long or longer (in frequency steps) leaves a gap


def choose(value, allowed: tuple, name: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {list(allowed)}.")
    return value


# ---- the sampling frequency -----------------------------------------------------------------------

@dataclass(frozen=True)
class Frequency:
    """How far apart a series' timestamps should be: a fixed step, calendar months or business days."""

    kind: str             # "fixed", "months" or "business"
    unit: object          # fixed: a Timedelta or a number; months: 1, 3 or 12; business: 1
    name: str
    season: int | None    # steps per season for the seasonal naive forecast (None: not known)

    def steps(self, times) -> np.ndarray:
        """Frequency steps between consecutive sorted times, as floats (1.0: the next step)."""
        values = naive_times(pd.Series(times)).to_numpy()
        if len(values) < 2:
            return np.zeros(0)
        if self.kind == "months":
            stamps = pd.DatetimeIndex(values)
            months = stamps.year.to_numpy() * 12 + stamps.month.to_numpy()
            return np.diff(months) / self.unit
        if self.kind == "business":
            days = values.astype("datetime64[D]")
            return np.busday_count(days[:-1], days[1:]).astype(float)
        if isinstance(self.unit, pd.Timedelta):
            return np.diff(values) / self.unit.to_timedelta64()
        return np.diff(values.astype(float)) / float(self.unit)

    def after(self, time, n: int = 1):
        """The time n steps after `time`."""
        if self.kind == "months":
            offset = pd.offsets.MonthEnd(n * self.unit) if pd.Timestamp(time).is_month_end else \
                pd.DateOffset(months=n * self.unit)
            return time + offset
        if self.kind == "business":
            return time + pd.offsets.BDay(n)
        return time + n * self.unit


_SEASON_OF_STEP = {pd.Timedelta(hours=1): ("hourly", 24), pd.Timedelta(days=1): ("daily", 7),
                   pd.Timedelta(days=7): ("weekly", 52)}
_CALENDAR = ((27, 31, 1, "monthly", 12), (88, 92, 3, "quarterly", 4), (364, 366, 12, "yearly", None))


def infer_frequency(times: pd.Series) -> Frequency | None:
    """The frequency of one series' sorted, distinct times; None with fewer than two of them."""
    times = naive_times(times.reset_index(drop=True))
    if len(times) < 2:
        return None
    if not pd.api.types.is_datetime64_any_dtype(times):
        step = float(np.median(np.diff(times.to_numpy(dtype=float))))
        return Frequency("fixed", step, f"every {step:g}", None) if step > 0 else None
    median = pd.Timedelta(np.median(np.diff(times.to_numpy())))
    median = median.round("s") if median >= pd.Timedelta(seconds=1) else median  # sub-second data keeps its step
    stamps = pd.DatetimeIndex(times)
    named = _pandas_name(stamps)
    days = median / pd.Timedelta(days=1)
    for low, high, months, name, season in _CALENDAR:
        if low <= days <= high:
            return Frequency("months", months, _label(name, named), season)
    weekdays = stamps.day_of_week.to_numpy()
    if median == pd.Timedelta(days=1) and len(times) >= 10 and (weekdays < 5).all():
        return Frequency("business", 1, _label("business days", named), 5)
    label, season = _SEASON_OF_STEP.get(median, (f"every {median}", None))
    return Frequency("fixed", median, _label(label, named), season)


def _label(ours: str, pandas_name: str | None) -> str:
    return f"{ours} ({pandas_name})" if pandas_name else ours


def _pandas_name(stamps: pd.DatetimeIndex) -> str | None:
    """pandas' name for a regular series' frequency (e.g. 'W-SAT'); None when it has gaps or jitter."""
    if len(stamps) < 3:
        return None
    with warnings.catch_warnings():  # pandas 3 announces that infer_freq will return an offset
        warnings.simplefilter("ignore")
        found = pd.infer_freq(stamps)
    return getattr(found, "freqstr", found)


# ---- the checks clean() runs ----------------------------------------------------------------------

@dataclass
class SeriesCheck:
    """What the time checks found in one series."""

    series: object
    rows: int
    start: object
    end: object
    frequency: Frequency | None
    duplicate_times: int = 0
    off_grid: int = 0
    off_grid_examples: list = field(default_factory=list)     # times reached by an off-grid step
    gaps: int = 0
    missing_steps: int = 0
    gap_examples: list = field(default_factory=list)          # (last time before the gap, missing steps)
    missing_target: int = 0
    missing_runs: int = 0
    longest_missing: int = 0
    missing_examples: list = field(default_factory=list)      # first time of a run of missing values


def series_groups(frame: pd.DataFrame, time_col, series_col):
    """(series label or None, its rows sorted by time), in series order."""
    keys = [series_col, time_col] if series_col is not None else [time_col]
    ordered = frame.sort_values(keys, kind="stable")
    if series_col is None:
        yield None, ordered
        return
    yield from ordered.groupby(series_col, sort=False)


def duplicate_times(frame: pd.DataFrame, time_col, series_col, keep: str) -> tuple[np.ndarray, dict]:
    """Rows of a series that share a time with another of its rows (their values differ: exact duplicates
    are gone by now). Returns the rows to drop by `keep` ("first", "last"), and {series: (rows dropped,
    example times)}; keep="error" refuses them instead."""
    keys = [time_col] if series_col is None else [series_col, time_col]
    repeated = frame.duplicated(subset=keys, keep=False if keep == "error" else keep).to_numpy()
    if not repeated.any():
        return repeated, {}
    found = {}
    for key, part in (frame[repeated].groupby(series_col, sort=True) if series_col is not None
                      else [(None, frame[repeated])]):
        found[key] = (len(part), sorted(part[time_col].unique().tolist())[:_EXAMPLES])
    if keep == "error":
        key, (n, times) = next(iter(found.items()))
        where = f" of series {key!r}" if series_col is not None else ""
        raise DataError(f"{int(repeated.sum())} rows share their time with another row of the same series but not "
                        f"their values (e.g. {n} rows{where} at {_times(times)}). A series has one value per "
                        "time: aggregate them first (df.groupby([...]).mean()), or pass duplicate_times='first' "
                        "or 'last' to keep one.")
    return repeated, found


def check_series(frame: pd.DataFrame, target, time_col, series_col) -> list[SeriesCheck]:
    """Frequency, off-grid steps, gaps and missing target values of every series (sorted, de-duplicated)."""
    checks = []
    for key, part in series_groups(frame, time_col, series_col):
        times = part[time_col]
        check = SeriesCheck(series=key, rows=len(part), start=times.iloc[0], end=times.iloc[-1],
                            frequency=infer_frequency(times))
        if check.frequency is not None:
            _grid_findings(check, times, check.frequency.steps(times))
        _missing_findings(check, times, part[target].isna().to_numpy())
        checks.append(check)
    return checks


def _grid_findings(check: SeriesCheck, times: pd.Series, steps: np.ndarray) -> None:
    whole = np.round(steps)
    off = (np.abs(steps - whole) > _OFF_GRID_TOLERANCE) | (whole < 1)
    check.off_grid = int(off.sum())
    check.off_grid_examples = times.iloc[1:][off].head(_EXAMPLES).tolist()
    gaps = ~off & (whole >= 2)
    check.gaps, check.missing_steps = int(gaps.sum()), int((whole[gaps] - 1).sum())
    check.gap_examples = [(times.iloc[i], int(whole[i] - 1)) for i in np.flatnonzero(gaps)[:_EXAMPLES]]


def _missing_findings(check: SeriesCheck, times: pd.Series, missing: np.ndarray) -> None:
    if not missing.any():
        return
    edges = np.diff(np.concatenate([[0], missing.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    check.missing_target, check.missing_runs = int(missing.sum()), len(starts)
    check.longest_missing = int((ends - starts).max())
    check.missing_examples = times.iloc[starts[:_EXAMPLES]].tolist()


def checks_table(checks: list[SeriesCheck], series_col) -> pd.DataFrame:
    rows = {c.series if series_col is not None else "series": {
        "rows": c.rows, "start": c.start, "end": c.end,
        "frequency": c.frequency.name if c.frequency else "-", "duplicate times": c.duplicate_times,
        "off-grid steps": c.off_grid, "gaps": c.gaps, "missing steps": c.missing_steps,
        "missing target": c.missing_target} for c in checks}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = series_col
    return table


def check_warnings(checks: list[SeriesCheck], target, target_missing: str, keep: str) -> list[str]:
    """The findings in words, each with what nbtrain does about it and how to choose otherwise."""
    lines = []
    for c in checks:
        name = f"Series {c.series!r}" if c.series is not None else "The series"
        if c.duplicate_times:
            lines.append(f"{name}: {_n(c.duplicate_times, 'row')} repeated an earlier time with other values; kept the "
                         f"{keep} of each (duplicate_times='first', 'last' or 'error').")
        if c.frequency is None:
            lines.append(f"{name} has fewer than two distinct times: no frequency, no window can be built.")
        if c.off_grid:
            lines.append(f"{name}: {_n(c.off_grid, 'step')} off its {c.frequency.name} grid (e.g. reaching "
                         f"{_times(c.off_grid_examples)}); windows treat those rows as ordinary steps. Resample "
                         "the data onto a regular grid (df.resample(...)) if the spacing matters.")
        if c.gaps:
            shown = ", ".join(f"{n} after {_time(t)}" for t, n in c.gap_examples)
            lines.append(f"{name}: {_n(c.gaps, 'gap')}, {_n(c.missing_steps, 'missing step')} in all "
                         f"(e.g. {shown}). Windows do not span a gap (preprocess(gaps='ignore') treats rows "
                         "as consecutive steps instead).")
        if c.missing_target:
            what = ("filled by time interpolation within each split period at preprocess(); validation and "
                    "test windows with a filled target step are not scored" if target_missing == "interpolate"
                    else "those rows were dropped (target_missing='drop'), which leaves gaps")
            lines.append(f"{name}: {_n(c.missing_target, f'missing {target!r} value')} in {_n(c.missing_runs, 'run')} "
                         f"(longest {_n(c.longest_missing, 'step')}; e.g. from {_times(c.missing_examples)}): {what}.")
    return lines


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _time(value) -> str:
    return str(value.date()) if isinstance(value, pd.Timestamp) and value == value.normalize() else str(value)


def _times(values: list) -> str:
    return ", ".join(_time(v) for v in values)


# ---- windows --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Windows:
    """One split's forecast windows: the split data object for time series (nbtrain.data.batches)."""

    X: np.ndarray            # float32 (windows, lookback, n_features): scaled inputs
    y: np.ndarray            # float32 (windows, horizon): the target's next values, in data units
    history: np.ndarray      # float32 (windows, lookback): the target's input values in data units
    index: pd.Index          # time of each window's first predicted step (MultiIndex (series, time))
    spans: pd.DataFrame      # per window: [series,] input_start, input_end, target_start, target_end
    counts: dict = field(default_factory=dict)  # rows, windows, stretches, never_forecast, unscored

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, device, scale: tuple = (0.0, 1.0)):
        """The loop's view of these windows on `device` (no embedding codes: shape (windows, 0)); the
        target is standardised with `scale` = (mean, std) for the loss, kept in data units for metrics."""
        import torch

        from nbtrain.data.batches import Batches
        y = torch.as_tensor(self.y, device=device)
        return Batches(X=torch.as_tensor(self.X, device=device),
                       codes=torch.zeros((len(self.y), 0), dtype=torch.int64, device=device),
                       y=y, y_fit=(y - scale[0]) / scale[1])


@dataclass
class _Stretch:
    """The rows of one series in one period, ready to cut into windows."""

    series: object
    features: np.ndarray     # scaled, (rows, n_features)
    target: np.ndarray       # data units, filled
    filled: np.ndarray       # bool: the target was missing and filled
    times: np.ndarray
    breaks: np.ndarray       # positions where a new stretch starts (a gap)
    own_from: int = 0        # rows before this position are an earlier period's: inputs only, never targets


class WindowPreprocessor:
    """Scales inputs with statistics of the train period, then cuts each split into windows.

    `covariates`: numeric columns besides the target; `frequencies`: series -> Frequency (None
    for a single series), used to find gaps.
    """

    def __init__(self, *, target, time_col, series_col, covariates: list, frequencies: dict, lookback: int,
                 horizon: int, gaps: str = "split", calendar: bool = False):
        self.target, self.time_col, self.series_col = target, time_col, series_col
        self.covariates, self.frequencies = list(covariates), frequencies
        self.lookback, self.horizon = lookback, horizon
        self.gaps, self.calendar = choose(gaps, GAPS, "gaps"), calendar

    @property
    def numeric(self) -> list:
        return [self.target, *self.covariates]

    def fit(self, train: pd.DataFrame) -> Windows:
        """Fit the scaler on the train period's rows (missing values ignored), then window them."""
        self.scaler_ = StandardScaler().fit(train[self.numeric].to_numpy(dtype=float))
        self.feature_names_ = [str(c) for c in self.numeric] + (self._calendar_names() if self.calendar else [])
        return self.split_data(train, observed_targets=False)

    def split_data(self, rows: pd.DataFrame, *, past: tuple = (), observed_targets: bool = True) -> Windows:
        """Every window whose targets lie in these rows (one split period). `past`: the rows of the
        earlier periods, oldest first: a window's inputs may reach back into them (the past is known at
        forecast time), so every row of the period can be forecast. `observed_targets`: leave out
        windows whose target steps were filled (validation and test are scored on observed values only)."""
        stretches = list(self._stretches(rows))
        if past:
            stretches = self._after_past(stretches, past)
        return self._cut(stretches, len(rows), observed_targets)

    def last_windows(self, rows: pd.DataFrame) -> Windows:
        """One window per series: its last `lookback` rows, forecasting the `horizon` steps after them."""
        parts = []
        for stretch in self._stretches(rows):
            if len(stretch.times) < self.lookback:
                where = f"Series {stretch.series!r}" if self.series_col is not None else "The new data"
                raise DataError(f"{where} has {len(stretch.times)} rows; a forecast needs the last lookback="
                                f"{self.lookback} rows. Pass at least {self.lookback} rows per series.")
            parts.append(self._window(stretch, np.array([len(stretch.times) - self.lookback])))
        return self._assemble(parts, {"rows": len(rows), "windows": len(parts)})

    # ---- the steps --------------------------------------------------------------------------------

    def _stretches(self, rows: pd.DataFrame):
        for key, part in series_groups(rows, self.time_col, self.series_col):
            times = part[self.time_col]
            raw = part[self.numeric].astype(float)
            filled = raw[self.target].isna().to_numpy()
            values = self._interpolate(raw, times)
            scaled = np.nan_to_num(self.scaler_.transform(values.to_numpy()), nan=0.0)  # no value: the train mean
            if self.calendar:
                scaled = np.hstack([scaled, self._calendar_features(times)])
            yield _Stretch(key, scaled.astype(np.float32), values[self.target].to_numpy(), filled,
                           times.to_numpy(), self._breaks(key, times))

    def _after_past(self, stretches: list, past: tuple) -> list:
        """Each series' stretch preceded by its last `lookback` rows of the earlier periods (only those can
        be inputs). Each earlier period is filled within itself, as when it was cut; gaps are found again
        across the seam, so a window still never spans one."""
        earlier = {}
        for rows in past:
            for old in self._stretches(rows):
                earlier.setdefault(old.series, []).append(old)
        joined = []
        for stretch in stretches:
            parts = [*earlier.get(stretch.series, []), stretch]
            own_from = min(self.lookback, sum(len(p.times) for p in parts[:-1]))
            columns = [np.concatenate([getattr(p, k) for p in parts])[-(own_from + len(stretch.times)):]
                       for k in ("features", "target", "filled", "times")]
            joined.append(_Stretch(stretch.series, *columns, self._breaks(stretch.series, pd.Series(columns[3])),
                                   own_from))
        return joined

    def _breaks(self, series, times: pd.Series) -> np.ndarray:
        """Positions where a gap in the timestamps starts a new stretch (none with gaps="ignore")."""
        frequency = self.frequencies.get(series)
        if self.gaps != "split" or frequency is None:
            return np.zeros(0, dtype=int)
        return np.flatnonzero(frequency.steps(times) >= _GAP_STEPS) + 1

    def _interpolate(self, raw: pd.DataFrame, times: pd.Series) -> pd.DataFrame:
        """Fill gaps by time interpolation within these rows only (edges: the nearest value)."""
        if not raw.isna().to_numpy().any():
            return raw
        method = "time" if pd.api.types.is_datetime64_any_dtype(times) else "index"
        indexed = raw.set_axis(pd.Index(naive_times(times).to_numpy()), axis=0)
        return indexed.interpolate(method=method, limit_direction="both").set_axis(raw.index, axis=0)

    def _cut(self, stretches: list, n_rows: int, observed_targets: bool) -> Windows:
        L, H = self.lookback, self.horizon
        parts, counts = [], {"rows": n_rows, "windows": 0, "stretches": 0, "never_forecast": 0, "unscored": 0}
        for stretch in stretches:
            forecast = np.zeros(len(stretch.times), dtype=bool)  # rows some window forecasts
            bounds = [0, *stretch.breaks.tolist(), len(stretch.times)]
            for start, stop in zip(bounds[:-1], bounds[1:]):
                if stop <= stretch.own_from:
                    continue  # rows of an earlier period only
                counts["stretches"] += 1
                # inputs from [start, ...), the first target no earlier than the period's first row
                starts = np.arange(max(start, stretch.own_from - L), stop - L - H + 1)
                if not len(starts):
                    continue
                target = stretch.target[starts[:, None] + L + np.arange(H)]
                inputs = stretch.target[starts[:, None] + np.arange(L)]
                keep = np.isfinite(target).all(axis=1) & np.isfinite(inputs).all(axis=1)
                forecast[(starts[keep, None] + L + np.arange(H)).ravel()] = True
                if observed_targets:
                    scored = ~stretch.filled[starts[:, None] + L + np.arange(H)].any(axis=1)
                    counts["unscored"] += int((keep & ~scored).sum())
                    keep &= scored
                parts.append(self._window(stretch, starts[keep]))
            counts["never_forecast"] += int((~forecast[stretch.own_from:]).sum())
        counts["windows"] = sum(len(p["y"]) for p in parts)
        return self._assemble(parts, counts)

    def _window(self, stretch: _Stretch, starts: np.ndarray) -> dict:
        L, H = self.lookback, self.horizon
        inputs = starts[:, None] + np.arange(L)
        ahead = starts[:, None] + L + np.arange(H)
        known = ahead < len(stretch.times)  # a forecast beyond the data (predict) has no target yet
        y = np.where(known, stretch.target[np.minimum(ahead, len(stretch.times) - 1)], np.nan)
        return {"series": np.full(len(starts), stretch.series, dtype=object), "X": stretch.features[inputs],
                "y": y.astype(np.float32), "history": stretch.target[inputs].astype(np.float32),
                "input_start": stretch.times[starts], "input_end": stretch.times[starts + L - 1],
                "target_start": self._times_at(stretch, ahead[:, 0]),
                "target_end": self._times_at(stretch, ahead[:, -1])}

    def _times_at(self, stretch: _Stretch, positions: np.ndarray) -> np.ndarray:
        """The times of these row positions; a position past the last row gets a time from the frequency."""
        n = len(stretch.times)
        if (positions < n).all():
            return stretch.times[positions]
        frequency = self.frequencies.get(stretch.series)
        if frequency is None:
            raise DataError(f"The frequency of series {stretch.series!r} is unknown (fewer than two times at "
                            "clean()), so the times of a forecast cannot be named.")
        last = stretch.times[-1]
        last = pd.Timestamp(last) if not isinstance(last, (int, float, np.number)) else last
        return np.array([stretch.times[p] if p < n else frequency.after(last, p - n + 1) for p in positions])

    def _assemble(self, parts: list, counts: dict) -> Windows:
        L, H, F = self.lookback, self.horizon, len(self.feature_names_)
        if not parts:
            parts = [{"series": np.zeros(0, dtype=object), "X": np.zeros((0, L, F), np.float32),
                      "y": np.zeros((0, H), np.float32), "history": np.zeros((0, L), np.float32),
                      **{k: np.zeros(0, dtype="datetime64[ns]") for k in
                         ("input_start", "input_end", "target_start", "target_end")}}]
        joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        spans = pd.DataFrame({k: joined[k] for k in ("input_start", "input_end", "target_start", "target_end")})
        if self.series_col is not None:
            spans.insert(0, "series", joined["series"])
            index = pd.MultiIndex.from_arrays([joined["series"], joined["target_start"]],
                                              names=[self.series_col, self.time_col])
        else:
            index = pd.Index(joined["target_start"], name=self.time_col)
        return Windows(X=joined["X"].astype(np.float32, copy=False), y=joined["y"], history=joined["history"],
                       index=index, spans=spans, counts=counts)

    # ---- calendar features ------------------------------------------------------------------------

    def _cycles(self) -> list:
        """The calendar cycles worth encoding for this data's step: the year; the week below a week;
        the day below a day."""
        steps = [f.unit for f in self.frequencies.values() if f is not None and f.kind == "fixed"]
        step = min(steps) if steps and all(isinstance(s, pd.Timedelta) for s in steps) else pd.Timedelta(days=30)
        cycles = [("year", lambda t: (t.day_of_year.to_numpy() - 1) / 365.25)]
        if step < pd.Timedelta(days=7):
            cycles.append(("week", lambda t: t.day_of_week.to_numpy() / 7))
        if step < pd.Timedelta(days=1):
            cycles.append(("day", lambda t: (t.hour.to_numpy() + t.minute.to_numpy() / 60) / 24))
        return cycles

    def _calendar_names(self) -> list:
        return [f"{name}_{f}" for name, _ in self._cycles() for f in ("sin", "cos")]

    def _calendar_features(self, times: pd.Series) -> np.ndarray:
        if not pd.api.types.is_datetime64_any_dtype(times):
            raise ConfigError("calendar=True needs a time column of dates; this one holds numbers.")
        stamps = pd.DatetimeIndex(times)
        columns = []
        for _, phase in self._cycles():
            angle = 2 * math.pi * phase(stamps)
            columns += [np.sin(angle), np.cos(angle)]
        return np.column_stack(columns)


# ---- reports ----------------------------------------------------------------------------------------

@dataclass(repr=False)
class TimeSeriesCleaningReport(CleaningReport):
    """The result of `Pipeline.clean()` for a time series: the base cleaning plus the time checks."""

    target_missing: str = "interpolate"
    duplicate_times: int = 0
    time_checks: pd.DataFrame | None = None   # per series: rows, period, frequency, duplicates, grid, gaps

    @classmethod
    def extend(cls, report: CleaningReport, **more) -> TimeSeriesCleaningReport:
        return cls(**{f.name: getattr(report, f.name) for f in fields(report)}, **more)

    def _summary(self) -> list[str]:
        lines = super()._summary()
        if self.duplicate_times:
            lines.append(f"Dropped {rows_phrase(self.duplicate_times)} that repeat a time of their series.")
        if self.time_checks is not None and len(self.time_checks):
            table = self.time_checks
            frequencies = sorted(set(table["frequency"]))
            fate = "filled per split period at preprocess()" if self.target_missing == "interpolate" else "dropped"
            lines.append(f"{len(table)} series, frequency {', '.join(frequencies)}; {int(table['gaps'].sum())} gaps, "
                         f"{int(table['off-grid steps'].sum())} off-grid steps, "
                         f"{int(table['missing target'].sum())} missing target values ({fate}).")
        return lines

    def _sections(self):
        sections = super()._sections()
        return sections + ([("Time checks", self.time_checks)] if self.time_checks is not None else [])


@dataclass(repr=False)
class TimeSeriesPreprocessReport(Report):
    """The result of `Pipeline.preprocess()` for a time series."""

    title = "Preprocessing report (time series)"
    target: object = None
    lookback: int = 0
    horizon: int = 0
    season: int | None = None
    n_inputs: int = 0
    train_rows: int = 0
    scaling: pd.DataFrame | None = None    # per scaled input: the train-period mean and std
    windows: pd.DataFrame | None = None    # per split: rows, windows, stretches, never forecast, unscored
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        counts = self.windows["windows"] if self.windows is not None else {}
        lines = [f"Windows of {self.lookback} steps x {self.n_inputs} inputs -> the next {self.horizon} values of "
                 f"{self.target!r}. A window's targets lie in one split period; its inputs may reach back into "
                 "the periods before (the past is known at forecast time), never across a gap: so every "
                 f"validation and test row is forecast, and only the first {self.lookback} train rows are "
                 "inputs alone.",
                 f"Scaler fitted on the {self.train_rows} train-period rows only, applied unchanged to validation "
                 "(and to test at test()); targets stay in data units.",
                 "Windows: " + ", ".join(f"{part} {n}" for part, n in counts.items()) + " (test sealed until test()).",
                 f"Season: {f'{self.season} steps' if self.season else 'unknown (preprocess(season=...) sets one)'}."]
        return lines

    def _sections(self):
        return [("Windows per split", self.windows), ("Scaling (train period)", self.scaling)]


# ---- new rows, and forecasts from them (the pipeline and its bundle share these) ----------------------------


def forecast(model, windows: Windows, target_scale) -> np.ndarray:
    """(windows, horizon) forecasts in the target's units: of a network, or of a naive baseline."""
    if not isinstance(model, torch.nn.Module):
        return np.asarray(model.predict(windows), dtype=np.float32)
    if not len(windows):
        return np.zeros((0, windows.y.shape[1]), dtype=np.float32)
    return nn_predictions(model, windows, "regression", tuple(target_scale)).reshape(len(windows), -1)


def conform_series(new_data, pre: WindowPreprocessor, keep_duplicates: str) -> pd.DataFrame:
    """New rows of the series as the windowing reads them: the time (parsed), series, target and covariate
    columns (numbers; text becomes missing), rows without a time or series dropped, repeated times resolved
    as cleaning did (`keep_duplicates`)."""
    frame = inputs.require_frame(new_data)
    needed = [c for c in (pre.time_col, pre.series_col, pre.target, *pre.covariates) if c is not None]
    for name in needed:
        inputs.require_column(frame.columns, name, "a column of the new data")
    rows = frame[needed].copy(deep=False)
    rows[pre.time_col] = inputs.parse_time(rows[pre.time_col])
    for name in (pre.target, *pre.covariates):
        rows[name] = pd.to_numeric(rows[name], errors="coerce")
    rows = rows.dropna(subset=[c for c in (pre.time_col, pre.series_col) if c is not None])
    repeated, _ = duplicate_times(rows, pre.time_col, pre.series_col, keep_duplicates)
    return rows[~repeated]


def refuse_test_inputs(windows: Windows, test_start, lookback: int, todo: str) -> None:
    """LeakageError when a forecast's inputs reach into the sealed test period (from `test_start` on)."""
    ends = naive_times(windows.spans["input_end"])
    if (ends >= test_start).to_numpy().any():
        raise LeakageError(f"The last {lookback} rows of the new data reach into the test period (from {test_start}), "
                           "which stays sealed until pipe.test(); a forecast from them is a look at the test set by "
                           f"another door. {todo}")
