"""Forecasting a time series: windows of past steps -> the next `horizon` values of the target.

>>> pipe = nt.Pipeline(df, target="co2", kind="timeseries", time_col="date")  # series_col= for several
>>> pipe.clean()                          # + duplicate times, frequency, off-grid steps, gaps, missing values
>>> pipe.split()                          # by time, always: a random split is refused (LeakageError)
>>> pipe.preprocess(lookback=52, horizon=4)
>>> pipe.baseline()                       # last-value and seasonal naive forecasts, recorded as runs
>>> pipe.fit()                            # LSTMForecaster by default; TransformerForecaster too
>>> pipe.test()                           # RMSE, MAE, R², MAPE, sMAPE over the test windows

What differs from tables, and why:

- the split is by time only: a random split puts later windows in training and earlier ones in
  validation, and windows cut from shuffled rows carry future values into their inputs.
- windows are cut after the split, per series and per split period (nbtrain.kinds.timeseries.data): a
  window's targets lie in one period, its inputs may come from the periods before it (known at
  forecast time), so every validation and test row is forecast and no target crosses a boundary.
- the scaler is fitted on the train period's rows; targets stay in data units for the metrics.
- other columns are numeric covariates (their past `lookback` values are inputs too; their future
  values are not used). Label, date and ordinal covariates are refused: encode them as numbers first.
- predict(new_data) forecasts the `horizon` steps after the end of new_data, from its last `lookback`
  rows per series. save() writes a bundle (nbtrain.kinds.timeseries.bundle); export() writes the
  network for serving (ONNX, torch.export, TorchScript: scaled windows in, forecasts in the target's
  units out), checked on the validation windows (nbtrain.export).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbtrain.data import inputs, leakage
from nbtrain.data import split as splitting
from nbtrain.data.clean import NA_MARKERS, clean_frame, column_kind, repair_column
from nbtrain.errors import ConfigError, DataError, LeakageError, StageError
from nbtrain.kinds.timeseries import data as ts
from nbtrain.kinds.timeseries.data import conform_series, forecast, refuse_test_inputs
from nbtrain.kinds.timeseries.models import LSTMForecaster
from nbtrain.kinds.timeseries.naive import LastValue, SeasonalNaive
from nbtrain.pipeline import Pipeline
from nbtrain.predictor import default_run
from nbtrain.report import Report
from nbtrain.training.run import Run
from nbtrain.training.runs import choose_run, fit_baseline, prediction_frame

# missing= strategies that make sense for a covariate of a series; any other gap is interpolated in time
COVARIATE_STRATEGIES = ("drop_rows", "drop_column")
AUTO_LOOKBACK = 16  # when no season is known
PERIODS = ("train", "val", "test")  # in time order


class TimeSeriesPipeline(Pipeline):
    """A Pipeline for forecasting (kind="timeseries"); see the module docstring."""

    _needs_features = False  # a univariate series forecasts from its own past

    def __init__(self, data, target, *, kind="timeseries", task="auto", time_col=None, series_col=None,
                 group_col=None, **options):
        frame = inputs.require_frame(data)
        _check_arguments(frame, target, task, time_col, series_col, group_col)
        super().__init__(frame, target, kind="timeseries", task="regression", time_col=time_col, **options)
        self.series_col = series_col
        self._features = [c for c in self._features if c != series_col]

    # ---- clean: the base cleaning, then the time checks ---------------------------------------

    def clean(self, *, missing: dict | None = None, na_markers=NA_MARKERS, target_missing: str = "interpolate",
              duplicate_times: str = "first") -> ts.TimeSeriesCleaningReport:
        """Drop exact duplicates and rows without a time, then check the time axis of every series.

        `target_missing`: "interpolate" (default; filled by time interpolation within each split
        period at preprocess()) or "drop". `duplicate_times`: "first", "last" or "error" for rows of a
        series that share a time. `missing`: {covariate: "drop_rows" | "drop_column"}; other covariate
        gaps are interpolated like the target. See nbtrain.kinds.timeseries.data for every check.
        """
        ts.choose(target_missing, ts.TARGET_MISSING, "target_missing")
        ts.choose(duplicate_times, ts.DUPLICATE_TIMES, "duplicate_times")
        overrides, interpolated = self._covariate_strategies(missing, tuple(na_markers))
        data = self._data
        if target_missing == "interpolate":  # a placeholder keeps the base from dropping the row; restored below
            data = data.copy(deep=False)
            data[self.target] = data[self.target].fillna(0.0)
        frame, positions, report = clean_frame(
            data, self._row_hash, target=self.target, features=self._features,
            required=tuple(c for c in (self.time_col, self.series_col) if c is not None),
            ordinal=self.ordinal, missing=overrides, na_markers=tuple(na_markers))
        frame[self.target] = self._data[self.target].to_numpy()[positions]
        self._refuse_label_covariates(report)
        for name in interpolated:
            report.plans[name].strategy = "interpolate"
            report.plans[name].reason = "filled by time interpolation within each split period of its series"
        repeated, found = ts.duplicate_times(frame, self.time_col, self.series_col, duplicate_times)
        frame, positions = frame[~repeated], positions[~repeated]
        checks = ts.check_series(frame, self.target, self.time_col, self.series_col)
        for check in checks:
            check.duplicate_times = found.get(check.series, (0, []))[0]
        report = ts.TimeSeriesCleaningReport.extend(
            report, target_missing=target_missing, duplicate_times=int(repeated.sum()),
            time_checks=ts.checks_table(checks, self.series_col))
        report.rows_out = len(frame)
        report.warnings += ts.check_warnings(checks, self.target, target_missing, duplicate_times)
        self._frame, self.frequencies_ = frame, {c.series: c.frequency for c in checks}
        self._clean_row_hash, self._clean_feature_hash = self._row_hash[positions], self._feature_hash[positions]
        self.cleaning_, self._na_markers, self._duplicate_times = report, tuple(na_markers), duplicate_times
        self._reset_to("cleaned")
        return report

    def _covariate_strategies(self, missing, na_markers) -> tuple[dict, list]:
        """The base's missing= for the covariates: gaps in a series' covariate are interpolated in time
        (the base would drop rows, which would cut holes in the series). Returns (overrides, interpolated)."""
        given = dict(missing or {})
        for name, strategy in given.items():
            if strategy not in COVARIATE_STRATEGIES:
                raise ConfigError(f"missing={{{name!r}: {strategy!r}}}: a time series fills a covariate's gaps by "
                                  f"time interpolation; the choices are {list(COVARIATE_STRATEGIES)}.")
        overrides, interpolated = dict(given), []
        for name in self._features:
            repaired = repair_column(self._data[name], na_markers)
            kind = column_kind(repaired.column, repaired.distinct, name in self.ordinal)
            if name not in given and 0 < repaired.missing < len(self._data) and kind in ("numeric", "binary"):
                # a strategy the base accepts for this kind and that drops no row; relabelled after cleaning
                overrides[name] = "median" if kind == "numeric" else "mode"
                interpolated.append(name)
        return overrides, interpolated

    def _refuse_label_covariates(self, report) -> None:
        for name, plan in report.plans.items():
            if name in report.dropped_columns or plan.kind in ("numeric", "binary"):
                continue
            example = self._data[name].dropna().iloc[0] if self._data[name].notna().any() else None
            raise DataError(f"Covariate {name!r} holds {plan.kind} values (e.g. {example!r}); a forecaster's windows "
                            "take numbers. Encode it first (labels: pd.get_dummies(df, columns=[...], dtype=float); "
                            "dates: a number such as days since an event), or drop the column.")

    # ---- split: by time only ------------------------------------------------------------------

    def split(self, ratios="auto", seed=None, *, method="auto", random_split_reason=None):
        """Split by time (train < validation < test; rows sharing a time stay together), always."""
        if method in ("random", "stratified", "group"):
            because = (" random_split_reason cannot change this for a time series (it can for a table with a time "
                       "column, whose rows may be independent of time)." if random_split_reason else "")
            raise LeakageError(f"A time series is split by time only; method={method!r} is refused. Windows cut from "
                               "shuffled rows would train on steps after the validation and test periods and carry "
                               "future values into their inputs, so every score would use the future." + because +
                               " Call pipe.split() (by time).")
        return super().split(ratios, seed, method="time" if method == "auto" else method)

    def _split_warnings(self, report: splitting.SplitReport) -> list[str]:
        """Small periods, and covariates that alone predict the target (a leak); rows whose target is
        still missing are left out of that probe."""
        positions = self._split.positions
        small = [f"{p} has {n} rows" for p, n in report.sizes.items() if p != "train" and n < splitting.FEW_ROWS]
        warnings = [f"Short evaluation periods ({', '.join(small)}): their scores will be noisy; a longer series "
                    "gives a steadier estimate."] if small else []
        kinds = {n: p.kind for n, p in self.cleaning_.plans.items() if n in self._frame.columns}
        if not kinds:
            return warnings
        known = self._frame[self.target].notna().to_numpy()
        renumber = np.cumsum(known) - 1  # position among the rows with a target
        kept = {p: renumber[pos[known[pos]]] for p, pos in positions.items()}
        return warnings + leakage.single_feature_predictors(self._frame[known], kinds, self.target, self.task,
                                                            kept, self._split.seed)

    # ---- preprocess: scaler on the train period, windows per split ----------------------------

    def preprocess(self, *, lookback="auto", horizon: int = 1, season="auto", gaps: str = "split",
                   calendar: bool = False) -> ts.TimeSeriesPreprocessReport:
        """Fit the scaler on the train period, then cut every split into windows whose targets lie in it.

        `lookback`: input steps per window ("auto": the season, else 16); `horizon`: steps forecast at
        once; `season`: steps per season for the seasonal naive baseline ("auto": from the frequency —
        24 hourly, 7 daily, 52 weekly, 12 monthly, 4 quarterly; None: none); `gaps`: "split" (windows
        never span a gap in the timestamps) or "ignore"; `calendar`: add sine/cosine calendar inputs.
        """
        self._require_split("preprocess() fits the scaler; before split() it would learn from the validation and "
                            "test periods too, and every later score would be optimistic.")
        season = self._season(season)
        lookback = (season or AUTO_LOOKBACK) if lookback == "auto" else _whole(lookback, "lookback")
        pre = ts.WindowPreprocessor(target=self.target, time_col=self.time_col, series_col=self.series_col,
                                    covariates=[c for c in self._features if c in self._frame.columns],
                                    frequencies=self.frequencies_, lookback=lookback,
                                    horizon=_whole(horizon, "horizon"), gaps=gaps, calendar=calendar)
        parts = {"train": pre.fit(self._rows("train")), "val": self._period_windows(pre, "val"),
                 "test": self._period_windows(pre, "test")}  # only counted here: test stays sealed until test()
        _require_windows(parts, pre)
        self._train, self._val, self.preprocessor_, self.season_ = parts["train"], parts["val"], pre, season
        self._reset_to("preprocessed")
        return self._preprocess_report(pre, parts)

    def _period_windows(self, pre: ts.WindowPreprocessor, part: str) -> ts.Windows:
        """The windows forecasting the rows of validation or test: their inputs may come from the periods
        before (known at forecast time), their targets only from this one."""
        earlier = PERIODS[:PERIODS.index(part)]
        return pre.split_data(self._rows(part), past=tuple(self._rows(p) for p in earlier))

    def _season(self, season):
        if season is None:
            return None
        if season != "auto":
            return _whole(season, "season")
        seasons = {f.season for f in self.frequencies_.values() if f is not None}
        return seasons.pop() if len(seasons) == 1 else None

    def _preprocess_report(self, pre: ts.WindowPreprocessor, parts: dict) -> ts.TimeSeriesPreprocessReport:
        windows = pd.DataFrame({p: w.counts for p, w in parts.items()}).T
        windows = windows.rename(columns={"never_forecast": "rows never forecast",
                                          "unscored": "unscored (filled target)"})
        scaling = pd.DataFrame({"mean": pre.scaler_.mean_, "std": pre.scaler_.scale_}, index=pre.numeric)
        report = ts.TimeSeriesPreprocessReport(target=self.target, lookback=pre.lookback, horizon=pre.horizon,
                                               season=self.season_, n_inputs=self.n_inputs,
                                               train_rows=len(self._split.positions["train"]),
                                               scaling=scaling.round(4), windows=windows)
        unscored = int(parts["val"].counts["unscored"] + parts["test"].counts["unscored"])
        if unscored:
            report.warnings.append(f"{unscored} validation/test windows forecast a step whose value was missing "
                                   "(filled by interpolation); they are not scored, so scores compare with observed "
                                   "values only.")
        return report

    # ---- what the model sees ------------------------------------------------------------------

    @property
    def n_outputs(self) -> int:
        """Steps forecast at once (the horizon); 1 before preprocess()."""
        pre = getattr(self, "preprocessor_", None)
        return pre.horizon if pre is not None else 1

    def _default_model(self):
        n_inputs, horizon = self.n_inputs, self.n_outputs
        return lambda: LSTMForecaster(n_inputs, horizon)

    def _fit_defaults(self) -> dict:
        # windows are few and correlated: smaller batches take more steps per epoch
        return {"batch_size": 64, "lr": 1e-3, "patience": 10}

    # ---- baselines, test, predict -------------------------------------------------------------

    def baseline(self, *, season="auto") -> BaselinesReport:
        """Score the last-value and the seasonal naive forecasts on the validation windows, as runs.

        `season`: steps per season ("auto": the one preprocess() found, checked on the train windows
        against its neighbours, e.g. 53 weeks beside 52 (nbtrain.kinds.timeseries.naive); a number:
        that season; None: last value only). The seasonal forecast needs lookback >= season; without that it is
        left out, and the report says why.
        """
        self._require("preprocessed", "baseline")
        season_arg, season = season, self.season_ if season == "auto" else self._season(season)
        horizon, lookback = self.n_outputs, self.preprocessor_.lookback
        models, notes = [LastValue(horizon, seed=self.seed)], []
        if season is None:
            notes.append("No season known for this frequency: pass baseline(season=...) for a seasonal naive forecast.")
        elif season > lookback:
            notes.append(f"Seasonal naive left out: it needs lookback >= season ({season}); preprocess(lookback="
                         f"{season}) allows it.")
        elif season_arg == "auto":  # the frequency's season: checked against its neighbours on the train windows
            models.append(SeasonalNaive.chosen_on(self._train, season, horizon, seed=self.seed))
        else:
            models.append(SeasonalNaive(season, horizon, seed=self.seed))
        runs = []
        for model in models:
            label = "last" if isinstance(model, LastValue) else f"seasonal{model.season}"
            run = fit_baseline(model, self._train, self._train.y, self._val, self._val.y, task=self.task,
                               n_classes=1, name=f"naive-{label}-{self.split_id[:6]}", kind="timeseries")
            self._log_run(run, None)
            runs.append(run)
        return BaselinesReport(runs=runs, notes=notes)

    def test(self, run=None, reuse_reason: str | None = None):
        """Evaluate a run on the test windows, once (see Pipeline.test): RMSE, MAE, R², MAPE, sMAPE over every
        horizon step; the bootstrap interval resamples whole windows; predictions have a column per step."""
        report = super().test(run, reuse_reason)
        report.units = "windows"
        return report

    def _test_outputs(self, run: Run, rows: pd.DataFrame) -> tuple:
        """Forecasts and targets of the test windows (every test row forecast, scored on observed values)."""
        windows = self._period_windows(self.preprocessor_, "test")
        return self._forecast(run, windows), windows.y, windows.index

    @staticmethod
    def _forecast(run: Run, windows: ts.Windows) -> np.ndarray:
        return forecast(run.model, windows, run.config.get("target_scale", (0.0, 1.0)))

    def predict(self, new_data, run=None, *, strict: bool = False) -> pd.DataFrame:
        """Forecast the `horizon` steps after the end of `new_data` from its last `lookback` rows per
        series: one row per series (indexed by the first forecast step's time), columns t+1..t+H.

        `new_data` needs the time column, the target, the covariates (and series_col); its gaps are
        interpolated within it. Inputs from the sealed test period are refused until pipe.test() has run.
        `run`: a Run or a run's name; default the run test() evaluated, else the one test() would pick.
        """
        if not self._runs():
            raise StageError(f"predict() comes after fit() or baseline(); this pipeline is at stage {self._stage!r} "
                             "and has no run. Call pipe.fit() first.")
        chosen = default_run(self, self._runs()) if run is None else choose_run(self._runs(), run, self.task)
        windows = self.preprocessor_.last_windows(self._conform(new_data))
        self._refuse_sealed_inputs(windows)
        return prediction_frame(self._forecast(chosen, windows), windows.index, self.task, None)

    def _conform(self, new_data) -> pd.DataFrame:
        return conform_series(new_data, self.preprocessor_, self._duplicate_times)

    def _refuse_sealed_inputs(self, windows: ts.Windows) -> None:
        """Inputs from the test period, before test() opened it, are a look at the test set by another door."""
        if any(e.split_id == self.split_id for e in self.ledger.test_evaluations(self.fingerprint)):
            return
        refuse_test_inputs(windows, self.sealed_from(), self.preprocessor_.lookback,
                           "Call pipe.test() first (once, for the final estimate), or pass data that ends before the "
                           "test period.")

    def sealed_from(self):
        """The first time of the test period (naive): inputs from it on are sealed until test()."""
        return inputs.naive_times(self._rows("test")[self.time_col]).min()

    def save(self, path, run=None):
        """Write a forecaster run as one bundle file: the network, the fitted scaler, lookback and horizon, the
        frequency and series ids (nbtrain.kinds.timeseries.bundle has the format)."""
        from nbtrain.kinds.timeseries.bundle import series_predictor
        return series_predictor(self, run, verb="save", evidence=True).save(path)

    def export(self, path, format: str = "onnx", run=None, *, rtol: float = 1e-4, atol: float = 1e-5):
        """Write a forecaster run for serving (input `windows`, scaled float32 (batch, lookback, n_inputs), dynamic
        batch; output the next `horizon` steps in the target's units), checked on the validation windows
        (nbtrain.kinds.timeseries.bundle, nbtrain.export). The naive baselines are refused: no network."""
        from nbtrain.kinds.timeseries.bundle import series_predictor
        chosen = series_predictor(self, run, verb="export", network=run is None)  # a named baseline: its refusal
        return chosen.export(path, format, sample=self._val, rtol=rtol, atol=atol)


@dataclass(repr=False)
class BaselinesReport(Report):
    """The naive forecasts a network has to beat, scored on the validation windows and recorded as runs."""

    title = "Naive baselines"
    runs: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        what = "naive forecast" if len(self.runs) == 1 else "naive forecasts"
        return [f"{len(self.runs)} {what} scored on the validation windows and recorded as runs; pipe.runs lists "
                "them beside every network.", *self.notes, *(note for run in self.runs for note in run.notes)]

    def _sections(self):
        table = pd.DataFrame({r.name: {"model": r.config.get("model"), **r.best_metrics} for r in self.runs}).T
        return [("Validation", table.round(4))] if len(table) else []


def _whole(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1; received {value!r}.")
    return int(value)


def _check_arguments(frame: pd.DataFrame, target, task, time_col, series_col, group_col) -> None:
    if time_col is None:
        hint = (" The DataFrame's index holds the times: move it into a column first, "
                "df.rename_axis('time').reset_index(), and pass time_col='time'."
                if isinstance(frame.index, pd.DatetimeIndex) else "")
        raise ConfigError("kind='timeseries' needs time_col='<column of times>': windows, the split and the "
                          f"frequency all follow it.{hint}")
    if group_col is not None:
        raise ConfigError("kind='timeseries' takes series_col='<column>' for several series (each cut into its own "
                          "windows, all split at the same times), not group_col.")
    if task not in ("auto", "regression"):
        raise ConfigError(f"kind='timeseries' forecasts numbers (task='regression'); received task={task!r}.")
    if series_col is not None:
        inputs.require_column(frame.columns, series_col, "series_col")
        if series_col in (target, time_col):
            role = "target" if series_col == target else "time_col"
            raise ConfigError(f"series_col={series_col!r} is also the {role}; name the column that tells the series "
                              "apart.")
    if target in frame.columns and not pd.api.types.is_numeric_dtype(frame[target]):
        raise DataError(f"The target {target!r} of a forecast must hold numbers; it has dtype {frame[target].dtype}. "
                        "Convert it (pd.to_numeric) first.")


def _require_windows(parts: dict, pre: ts.WindowPreprocessor) -> None:
    """Every split needs windows; say how long a stretch one needs and what to change."""
    empty = [p for p, w in parts.items() if not len(w)]
    if not empty:
        return
    need = pre.lookback + pre.horizon
    rows = ", ".join(f"{p} {parts[p].counts['rows']} rows" for p in empty)
    raise DataError(f"No window fits in the {' and '.join(empty)} period ({rows}): a window needs lookback + horizon "
                    f"= {need} consecutive rows of one series inside one period. Use a smaller lookback or horizon, "
                    "or give that split a larger share (split(ratios=(0.6, 0.2, 0.2))).")
