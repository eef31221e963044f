"""Time series (kind="timeseries"): split by time only, windows forecasting every row of their period
from the past, scaling from the train period, the time checks of clean(), several series, the forecasters, naive baselines, metrics."""

import numpy as np
import pandas as pd
import pytest
import torch

import nbtrain as nt
from nbtrain.errors import ConfigError, DataError, LeakageError, StageError
from nbtrain.kinds.timeseries.data import Windows, infer_frequency
from nbtrain.kinds.timeseries.naive import LastValue, SeasonalNaive
from nbtrain.training.evaluation import score


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def sine(n=240, period=12, seed=0, start="2020-01-01", freq="D", noise=0.05, level=10.0):
    """A daily sine wave (period 12 steps) with a little noise and a covariate."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    return pd.DataFrame({"day": pd.date_range(start, periods=n, freq=freq),
                         "y": level + np.sin(2 * np.pi * steps / period) + rng.normal(0, noise, n),
                         "temp": rng.normal(size=n)})


def ready(df, workdir, lookback=12, horizon=2, **options):
    pipe = nt.Pipeline(df, target="y", kind="timeseries", time_col="day", workdir=workdir, **options)
    pipe.clean()
    pipe.split()
    pipe.preprocess(lookback=lookback, horizon=horizon)
    return pipe


def period_starts(pipe):
    ranges = pipe.split_.time_ranges
    return ranges.loc["val", "start"], ranges.loc["test", "start"]


# ---- the split ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, reason", [("random", None), ("random", "rows are independent"),
                                            ("stratified", "because")])
def test_a_random_split_of_a_time_series_is_refused(workdir, method, reason):
    pipe = nt.Pipeline(sine(), target="y", kind="timeseries", time_col="day", workdir=workdir)
    pipe.clean()
    match = r"split by time only; method='%s' is refused.*future" % method
    if reason:
        match += r".*random_split_reason cannot change this"
    with pytest.raises(LeakageError, match=match):
        pipe.split(method=method, random_split_reason=reason)
    assert pipe.stage == "cleaned" and pipe.split().method == "time"


def test_time_series_needs_a_time_column_and_numbers(workdir):
    df = sine().set_index("day")
    with pytest.raises(ConfigError, match=r"needs time_col=.*df.rename_axis\('time'\).reset_index\(\)"):
        nt.Pipeline(df, target="y", kind="timeseries", workdir=workdir)
    with pytest.raises(ConfigError, match="forecasts numbers"):
        nt.Pipeline(sine(), target="y", kind="timeseries", time_col="day", task="multiclass", workdir=workdir)
    labels = sine().assign(city=lambda d: np.where(d.temp > 0, "north", "south"))
    pipe = nt.Pipeline(labels, target="y", kind="timeseries", time_col="day", workdir=workdir)
    with pytest.raises(DataError, match=r"Covariate 'city' holds categorical values.*pd.get_dummies"):
        pipe.clean()


# ---- windows: targets inside their period, inputs from the past --------------------------------------

def test_every_validation_and_test_row_is_forecast_from_the_past(workdir):
    df = sine()
    pipe = ready(df, workdir, lookback=12, horizon=3)
    val_start, test_start = period_starts(pipe)
    values = df.set_index("day")["y"]
    train, val = pipe.train.spans, pipe.val.spans
    # train windows touch (inputs and targets) only times before the first validation time
    assert (train["input_end"] < val_start).all() and (train["target_end"] < val_start).all()
    assert train["target_end"].max() == pipe.split_.time_ranges.loc["train", "end"]  # it does reach the end
    # validation: targets inside [val start, test start), inputs strictly before the targets, reaching into train
    assert (val["target_start"] >= val_start).all() and (val["target_end"] < test_start).all()
    assert (val["input_end"] < val["target_start"]).all() and val["input_start"].min() < val_start
    assert (pipe.val.index == val["target_start"]).all() and pipe.val.index.min() == val_start
    # every validation row is a target of some window: rows - horizon + 1 windows, none left out
    val_days = values[(values.index >= val_start) & (values.index < test_start)].index
    forecast = {t + pd.Timedelta(days=h) for t in pipe.val.index for h in range(3)}
    assert forecast == set(val_days)
    counts = pipe.val.counts
    assert counts["windows"] == counts["rows"] - 3 + 1 and counts["never_forecast"] == 0
    # the inputs are the series' values at the input times, the targets its values at the target times
    inputs = val["input_start"].to_numpy()[:, None] + np.arange(12) * np.timedelta64(1, "D")
    np.testing.assert_allclose(pipe.val.history, values.loc[inputs.ravel()].to_numpy().reshape(-1, 12), rtol=1e-6)
    targets = pipe.val.index.to_numpy()[:, None] + np.arange(3) * np.timedelta64(1, "D")
    np.testing.assert_allclose(pipe.val.y, values.loc[targets.ravel()].to_numpy().reshape(-1, 3), rtol=1e-6)
    pipe.baseline()
    report = pipe.test()
    test_days = values[values.index >= test_start].index
    assert report.predictions.index.min() == test_start and len(report.predictions) == len(test_days) - 2
    assert list(report.predictions.columns) == ["t+1", "t+2", "t+3"]


def test_windows_at_the_seam_of_two_periods_never_span_a_gap(workdir):
    df = sine()
    resumed, _ = period_starts(ready(df, workdir))
    # drop the 3 days before validation: the first validation windows would have to reach across the gap
    seam = df[(df.day < resumed) & (df.day >= resumed - pd.Timedelta(days=3))].index
    pipe = ready(df.drop(index=seam), workdir, lookback=12, horizon=2)
    val_start, _ = period_starts(pipe)
    assert resumed <= val_start < resumed + pd.Timedelta(days=12)  # the gap lies within lookback of the seam
    val = pipe.val.spans
    assert ((val["target_end"] - val["input_start"]) == pd.Timedelta(days=13)).all()  # consecutive days only
    assert val["input_start"].min() == resumed
    # the validation days within lookback of the gap cannot be forecast, and the report counts them
    assert pipe.val.counts["never_forecast"] == 12 - (val_start - resumed).days


def test_scaling_statistics_come_from_the_train_period_only(workdir):
    df = sine()
    pipe = ready(df, workdir)
    train_end = pipe.split_.time_ranges.loc["train", "end"]
    train_rows = df[df.day <= train_end]
    np.testing.assert_allclose(pipe.preprocessor_.scaler_.mean_, train_rows[["y", "temp"]].mean(), rtol=1e-6)
    np.testing.assert_allclose(pipe.preprocessor_.scaler_.scale_, train_rows[["y", "temp"]].std(ddof=0), rtol=1e-6)
    later = df.day > train_end
    changed = df.assign(y=np.where(later, df.y * 100, df.y), temp=np.where(later, df.temp + 50, df.temp))
    other = ready(changed, workdir)
    np.testing.assert_array_equal(other.preprocessor_.scaler_.mean_, pipe.preprocessor_.scaler_.mean_)
    np.testing.assert_array_equal(other.train.X, pipe.train.X)
    assert not np.allclose(other.val.y, pipe.val.y)  # the change did reach the validation targets
    assert other.train.y.dtype == np.float32 and np.allclose(other.val.y.mean(), 100 * pipe.val.y.mean(), rtol=0.01)


def test_missing_targets_are_filled_within_their_period_and_never_scored(workdir):
    df = sine()
    probe = ready(df, workdir)
    val_start, _ = period_starts(probe)
    first_val = df.index[df.day == val_start][0]
    gappy = df.copy()
    gappy.loc[first_val, "y"] = np.nan          # the first validation step: nothing before it in its period
    gappy.loc[first_val + 20, "y"] = np.nan     # inside validation
    pipe = ready(gappy, workdir)
    assert "2 missing 'y' values in 2 runs" in " ".join(pipe.cleaning_.warnings)
    # the edge is filled from the next validation value, never from the last train value
    reads_it = (pipe.val.spans["input_end"] == val_start).to_numpy()
    assert pipe.val.history[reads_it][0, -1] == np.float32(gappy.loc[first_val + 1, "y"])
    # windows whose targets include a filled step (horizon 2): one for the first day, two inside
    assert pipe.val.counts["unscored"] == 3 and pipe.val.counts["never_forecast"] == 0
    assert not pipe.val.index.isin([val_start, gappy.loc[first_val + 20, "day"]]).any()
    # a missing last train value, read by a validation window: filled within train (from the value before it)
    edge = gappy.copy()
    edge.loc[first_val - 1, "y"] = np.nan
    pipe = ready(edge, workdir)
    reads_it = (pipe.val.spans["input_end"] == val_start).to_numpy()
    np.testing.assert_array_equal(pipe.val.history[reads_it][0, -2:],
                                  edge.loc[[first_val - 2, first_val + 1], "y"].to_numpy(dtype=np.float32))
    dropped = nt.Pipeline(gappy, target="y", kind="timeseries", time_col="day", workdir=workdir)
    report = dropped.clean(target_missing="drop")
    assert report.rows_out == len(gappy) - 2 and report.time_checks["gaps"].iloc[0] == 2


# ---- clean(): the time checks ---------------------------------------------------------------------

def test_clean_reports_duplicate_times_off_grid_steps_and_gaps(workdir, untouched):
    df = sine(60)
    df = pd.concat([df.drop(index=[20, 21, 22]), df.iloc[[5]].assign(y=99.0)], ignore_index=True)
    df.loc[40, "day"] += pd.Timedelta(hours=6)
    guard = untouched(df)
    pipe = nt.Pipeline(df, target="y", kind="timeseries", time_col="day", workdir=workdir)
    report = pipe.clean()
    checks = report.time_checks.iloc[0]
    found = checks[["duplicate times", "off-grid steps", "gaps", "missing steps"]].tolist()
    assert found == [1, 2, 1, 3]
    assert checks["frequency"] == "daily" and report.rows_out == 57
    said = " ".join(report.warnings)
    assert "1 row repeated an earlier time with other values; kept the first" in said
    assert "2 steps off its daily grid" in said and "1 gap, 3 missing steps in all (e.g. 3 after 2020-01-20)" in said
    assert 99.0 not in pipe._frame["y"].to_numpy()  # the first of the two rows was kept
    assert "Time checks" in repr(report)
    with pytest.raises(DataError, match=r"share their time with another row.*duplicate_times='first'"):
        pipe.clean(duplicate_times="error")
    guard.check()


def test_windows_do_not_span_a_gap(workdir):
    df = sine(240).drop(index=range(60, 65))
    pipe = ready(df, workdir, lookback=12, horizon=2)
    steps = pipe.train.spans["target_end"] - pipe.train.spans["input_start"]
    assert (steps == pd.Timedelta(days=13)).all()  # 12 inputs + 2 targets, consecutive days: no gap inside
    assert pipe.train.counts["stretches"] == 2
    ignoring = nt.Pipeline(df, target="y", kind="timeseries", time_col="day", workdir=workdir)
    ignoring.clean(), ignoring.split(), ignoring.preprocess(lookback=12, horizon=2, gaps="ignore")
    assert len(ignoring.train) == len(pipe.train) + 13


@pytest.mark.parametrize("freq, name, season", [("h", "hourly", 24), ("D", "daily", 7), ("W-SUN", "weekly", 52),
                                                ("MS", "monthly", 12), ("QS", "quarterly", 4), ("B", "business", 5)])
def test_the_season_follows_the_frequency(freq, name, season):
    frequency = infer_frequency(pd.Series(pd.date_range("2021-01-01", periods=40, freq=freq)))
    assert frequency.name.startswith(name) and frequency.season == season
    assert np.allclose(frequency.steps(pd.date_range("2021-01-01", periods=40, freq=freq)), 1.0)


# ---- several series -------------------------------------------------------------------------------

def test_windows_of_several_series_never_mix_them(workdir):
    a, b = sine(150), sine(150, seed=1, level=1000.0)
    df = pd.concat([a.assign(shop="a"), b.assign(shop="b")], ignore_index=True).sample(frac=1, random_state=0)
    pipe = nt.Pipeline(df, target="y", kind="timeseries", time_col="day", series_col="shop", workdir=workdir)
    pipe.clean(), pipe.split()
    pipe.preprocess(lookback=10, horizon=2)
    for split in (pipe.train, pipe.val):
        shop = split.spans["series"].to_numpy()
        assert set(shop) == {"a", "b"} and list(split.index.names) == ["shop", "day"]
        high = shop == "b"
        assert (split.history[high] > 500).all() and (split.history[~high] < 500).all()
        assert (split.y[high] > 500).all() and (split.y[~high] < 500).all()
        assert (split.index.get_level_values("shop") == shop).all()
    # the two series are split at the same times, and each forecasts every validation day from its own past
    val_start, _ = period_starts(pipe)
    assert pipe.val.spans.groupby("series")["target_start"].min().eq(val_start).all()
    assert pipe.val.spans.groupby("series")["input_start"].min().eq(val_start - pd.Timedelta(days=10)).all()


# ---- the forecasters, the naive baselines, the metrics ----------------------------------------------

@pytest.mark.parametrize("model", [
    lambda n, h: nt.models.LSTMForecaster(n, h, hidden=16, layers=1),
    lambda n, h: nt.models.TransformerForecaster(n, h, d_model=16, heads=2, layers=1, dropout=0.0)])
def test_forecasters_learn_a_sine_wave(workdir, model):
    pipe = ready(sine(240), workdir, lookback=12, horizon=2)
    pipe.baseline(season=None)  # last value only: a sine wave moves every step, so it is a weak baseline
    run = pipe.fit(model(pipe.n_inputs, pipe.n_outputs), epochs=25, lr=1e-2, view=None, doctor=False)
    losses = run.history["train_loss"].to_numpy()
    assert losses[-1] < 0.1 * losses[0]
    assert run.config["model_config"]["horizon"] == 2 and run.config["data_kind"] == "timeseries"
    # the run's report compares it with the naive forecast; on a sine wave the network wins
    assert "val_smape" in run.history and run.notes[0].startswith("Beats the naive forecast 'naive-last-")
    rebuilt = type(run.model).from_config(run.config["model_config"])
    rebuilt.load_state_dict(run.model.state_dict())
    x = torch.as_tensor(pipe.val.X[:4])
    assert rebuilt.eval()(x).shape == (4, 2) and torch.allclose(rebuilt(x), run.model.eval()(x))


def test_the_default_model_and_fit_defaults(workdir):
    pipe = ready(sine(120), workdir, lookback=8, horizon=3)
    run = pipe.fit(epochs=1, view=None, doctor=False)
    assert run.config["model"] == "LSTMForecaster" and run.config["batch_size"] == 64
    assert run.config["model_config"]["n_features"] == pipe.n_inputs == 2 and pipe.n_outputs == 3


def test_naive_forecasts_against_hand_computed_values():
    history = np.array([[1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60]], dtype=np.float32)
    windows = Windows(X=np.zeros((2, 6, 1), np.float32), y=np.zeros((2, 5), np.float32), history=history,
                      index=pd.RangeIndex(2), spans=pd.DataFrame())
    np.testing.assert_array_equal(LastValue(5).predict(windows), [[6] * 5, [60] * 5])
    # season 3: y[T+h] = y[T+h-3*ceil(h/3)]: steps 1..5 repeat the last season 4,5,6 then 4,5
    np.testing.assert_array_equal(SeasonalNaive(3, 5).predict(windows), [[4, 5, 6, 4, 5], [40, 50, 60, 40, 50]])
    with pytest.raises(ConfigError, match=r"needs windows of at least 7 steps; these have lookback=6"):
        SeasonalNaive(7, 1).predict(windows)


def test_naive_baseline_runs_score_the_validation_windows(workdir):
    pipe = ready(sine(240), workdir, lookback=12, horizon=2)
    report = pipe.baseline(season=12)
    last, seasonal = report.runs
    val = pipe.val
    hand = np.sqrt(np.mean((val.history[:, -1:] - val.y) ** 2))
    assert last.best_metrics["val_rmse"] == pytest.approx(hand, rel=1e-5)
    hand = np.sqrt(np.mean((val.history[:, :2] - val.y) ** 2))  # lookback 12 = one season: steps 0 and 1
    assert seasonal.best_metrics["val_rmse"] == pytest.approx(hand, rel=1e-5)
    table = pipe.runs
    assert {"naive-last", "naive-seasonal12"} <= {name.rsplit("-", 1)[0] for name in table.index}
    assert (table["kind"] == "baseline").all() and table["val_smape"].notna().all()
    short = ready(sine(240), workdir, lookback=6, horizon=2)
    assert len(short.baseline(season=12).runs) == 1  # seasonal naive needs lookback >= season


def test_mape_and_smape_against_a_hand_computation():
    y = np.array([[100.0, 200.0], [50.0, 80.0]], dtype=np.float32)
    predicted = np.array([[110.0, 190.0], [40.0, 100.0]], dtype=np.float32)
    metrics = score("regression", 1, predicted, y, "timeseries")
    mape = np.mean(np.abs(predicted - y) / np.abs(y))
    smape = np.mean(2 * np.abs(predicted - y) / (np.abs(y) + np.abs(predicted)))
    assert metrics["mape"] == pytest.approx(mape, rel=1e-5) and mape == pytest.approx(0.15)
    assert metrics["smape"] == pytest.approx(smape, rel=1e-5)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((predicted - y) ** 2)), rel=1e-5)
    assert "mape" not in score("regression", 1, predicted, y)  # tables keep their metrics


def test_test_report_scores_windows_with_mape_and_an_interval(workdir):
    pipe = ready(sine(240), workdir, lookback=12, horizon=2)
    pipe.baseline(season=None)
    report = pipe.test()
    past = (pipe._rows("train"), pipe._rows("val"))
    predicted, y = report.predictions.to_numpy(), pipe.preprocessor_.split_data(pipe._rows("test"), past=past).y
    assert report.run.startswith("naive-last") and predicted.shape == y.shape
    assert report.metrics["smape"] == pytest.approx(np.mean(2 * np.abs(predicted - y) / (abs(y) + abs(predicted))),
                                                    rel=1e-4)
    low, high = report.interval
    assert low < report.metrics["rmse"] < high


# ---- using the model ------------------------------------------------------------------------------

def test_predict_forecasts_after_the_last_rows_and_guards_the_test_period(workdir):
    df = sine(240)
    pipe = ready(df, workdir, lookback=12, horizon=2)
    pipe.baseline(season=12)
    _, test_start = period_starts(pipe)
    before = df[df.day < test_start]
    forecast = pipe.predict(before, run=pipe.last_run.name)  # the seasonal naive: checkable by hand
    assert list(forecast.columns) == ["t+1", "t+2"] and forecast.index[0] == test_start
    np.testing.assert_allclose(forecast.to_numpy()[0], before["y"].to_numpy()[-12:-10], rtol=1e-6)
    with pytest.raises(LeakageError, match=r"reach into the test period.*sealed until pipe.test\(\)"):
        pipe.predict(df)
    pipe.test()
    assert pipe.predict(df).index[0] == df.day.iloc[-1] + pd.Timedelta(days=1)
    with pytest.raises(DataError, match="needs the last lookback=12 rows"):
        pipe.predict(df.tail(5))
    with pytest.raises(ConfigError, match=r"is a naive baseline, .* no network to export"):
        pipe.export(workdir / "model.onnx", run=pipe.last_run.name)
    with pytest.raises(StageError, match=r"export\(\) comes after fit\(\); .* no network run \(the runs so far are "
                                         r"baselines, not networks\)"):
        pipe.export(workdir / "model.onnx")
