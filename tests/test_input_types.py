"""Input types users have: column labels that are not text, pandas' extension dtypes, time zones,
timedeltas and periods, odd targets. Each gets a documented conversion or an error that says what
was received and what to do (issue 18, items 1 and 7)."""

import numpy as np
import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.errors import DataError, NbtrainWarning


def noise_table(n=600, seed=0):
    """The issue's case: a frame built from a numpy array (columns 0..4), a pure-noise target in the
    last column, and a constant column that cleaning drops."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[:, 1] = 0.0
    return pd.DataFrame(np.column_stack([X, rng.integers(0, 2, n)]))


def test_columns_are_chosen_by_name_so_the_target_never_becomes_a_feature(workdir, one_thread):
    df = noise_table()
    pipe = nt.Pipeline(df, target=4, workdir=workdir)
    assert 1 in pipe.clean().dropped_columns
    pipe.split()
    pipe.preprocess()
    assert pipe.feature_names == ["0", "2", "3"]
    train = pipe._frame.iloc[pipe._split.positions["train"]]
    expected = (train[[0, 2, 3]] - train[[0, 2, 3]].mean()) / train[[0, 2, 3]].std(ddof=0)
    np.testing.assert_allclose(pipe.train.X, expected.to_numpy(), rtol=1e-4, atol=1e-5)
    pipe.fit(epochs=30, view=None, seed=0)
    assert pipe.test().metrics["accuracy"] < 0.65  # noise: before the fix the target was an input, and 1.0


def test_column_names_whose_texts_collide_are_refused(workdir):
    df = noise_table().rename(columns={0: "0"}).assign(**{"2": 1.0})
    with pytest.raises(DataError, match=r"names differ only in type: \[2, '2'\] \(all read '2'\).*df.rename"):
        nt.Pipeline(df, target=4, workdir=workdir)


def test_multiindex_columns_are_refused_with_the_way_to_flatten_them(penguins, workdir):
    df = penguins.copy()
    df.columns = pd.MultiIndex.from_tuples([("penguin", c) for c in df.columns])
    with pytest.raises(DataError, match=r"2 levels \(a MultiIndex, e.g. \[\('penguin', 'species'\).*'_'.join"):
        nt.Pipeline(df, target=("penguin", "species"), workdir=workdir)


def prepared(df, workdir, target="species", **options):
    pipe = nt.Pipeline(df, target=target, workdir=workdir, **options)
    report = pipe.clean()
    pipe.split()
    pipe.preprocess()
    return pipe, report


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_nullable_and_arrow_dtypes_give_the_same_inputs_as_numpy_ones(penguins, tmp_path, backend, untouched):
    converted = penguins.convert_dtypes(dtype_backend=backend)
    assert converted["sex"].isna().any() and converted["bill_length_mm"].isna().any()
    guard = untouched(converted)
    plain, _ = prepared(penguins, tmp_path / "plain")
    typed, _ = prepared(converted, tmp_path / "typed")
    guard.check()
    assert typed.feature_names == plain.feature_names
    np.testing.assert_allclose(typed.train.X, plain.train.X, rtol=1e-6)
    np.testing.assert_allclose(typed.val.X, plain.val.X, rtol=1e-6)


def test_times_mixing_zoned_and_naive_values_are_refused(penguins, workdir):
    df = penguins.copy()
    times = pd.date_range("2020-01-01", periods=len(df), freq="D")
    df["when"] = pd.Series([t.tz_localize("UTC") if i % 2 else t for i, t in enumerate(times)], dtype=object)
    with pytest.raises(DataError, match=r"Column 'when' mixes times with a time zone \(172 rows.*without one "
                                        r"\(172 rows.*utc=True"):
        nt.Pipeline(df, target="species", workdir=workdir).clean()
    with pytest.raises(DataError, match=r"time_col='when' mixes times with a time zone"):
        nt.Pipeline(df, target="species", time_col="when", workdir=workdir)


def zones_of_paris_and_new_york(n):
    """Instants one hour apart, written alternately in two time zones (pandas keeps them as objects)."""
    instants = pd.date_range("2021-03-01", periods=n, freq="h", tz="UTC")
    return pd.Series([t.tz_convert("Europe/Paris" if i % 2 else "America/New_York") for i, t in enumerate(instants)],
                     dtype=object), instants


def test_a_time_col_in_several_time_zones_is_split_by_instant_in_utc(penguins, workdir):
    df = penguins.copy()
    df["when"], instants = zones_of_paris_and_new_york(len(df))
    df = df.sample(frac=1.0, random_state=0)  # time order must come from the instants, not the rows
    pipe = nt.Pipeline(df, target="species", time_col="when", workdir=workdir)
    pipe.clean()
    split = pipe.split()
    assert str(pipe._frame["when"].dtype) == "datetime64[us, UTC]"
    ranges = split.time_ranges
    assert ranges.loc["train", "end"] < ranges.loc["val", "start"] <= ranges.loc["val", "end"] < ranges.loc["test", "start"]
    assert ranges.loc["train", "start"] == instants[0] and ranges.loc["test", "end"] == instants[-1]


def test_durations_periods_and_several_time_zones_are_converted_and_reported(penguins, workdir):
    df = penguins.copy()
    rng = np.random.default_rng(0)
    minutes, months = rng.integers(0, 600, len(df)) * 90, rng.integers(0, 48, len(df))
    df["wait"] = pd.to_timedelta(minutes, unit="min")
    df["month"] = pd.PeriodIndex(["2000-01"] * len(df), freq="M") + months
    df["seen"], instants = zones_of_paris_and_new_york(len(df))
    pipe = nt.Pipeline(df, target="species", workdir=workdir)
    report = pipe.clean()
    kinds = {name: plan.kind for name, plan in report.plans.items()}
    assert kinds["wait"] == "numeric" and kinds["month"] == "numeric" and kinds["seen"] == "datetime"
    kept = pipe._frame.index
    np.testing.assert_array_equal(pipe._frame["wait"], (minutes * 60.0)[kept])
    np.testing.assert_array_equal(pipe._frame["month"], (360.0 + months)[kept])  # 2000-01 is month 360 since 1970-01
    assert (pipe._frame["seen"] == instants[kept]).all()
    assert report.corrupt["wait"] == ["durations (timedelta) converted to seconds"]
    assert report.corrupt["month"] == ["periods (period[M]) converted to their number since 1970-01"]
    assert report.corrupt["seen"] == ["times in several time zones converted to UTC"]
    pipe.split()
    assert "month" in pipe.preprocess().treatments.index  # scaled as a number, not 344 labels
    assert pipe.n_inputs == 13  # 4 measures, year, wait, month, seen, 3 islands, 2 sexes


def test_complex_numbers_are_refused_with_how_to_split_them(penguins, workdir):
    df = penguins.assign(z=penguins["bill_length_mm"] + 1j)
    with pytest.raises(DataError, match=r"Column 'z' holds complex numbers \(e.g. \(39.1\+1j\) in row 0\), 344 rows.*"
                                        r"np.real\(df\['z'\]\)"):
        nt.Pipeline(df, target="species", workdir=workdir)


def test_an_infinite_regression_target_drops_its_row_and_says_so(penguins, workdir):
    df = penguins.copy()
    df.loc[[3, 10], "body_mass_g"] = [np.inf, -np.inf]
    pipe, report = prepared(df, workdir, target="body_mass_g")
    assert report.rows_with_infinite_target == 2 and report.rows_with_infinite_target_examples == [3, 10]
    assert "Dropped 2 rows whose target is infinite, e.g. [3, 10]" in repr(report)
    assert np.isfinite(pipe.train.y).all() and 3 not in pipe._frame.index
    assert pipe.baseline().best_metrics["val_r2"] > 0.6


def test_a_target_mixing_types_is_refused(penguins, workdir):
    df = penguins.copy()
    df["species"] = df["species"].astype(object)
    df.loc[:5, "species"] = 1
    with pytest.raises(DataError, match=r"target 'species' mixes value types \(str: 338 rows, number: 6 rows\), "
                                        r"e.g. \['Adelie', 1\].*astype\(str\)"):
        nt.Pipeline(df, target="species", workdir=workdir)


def test_a_categorical_target_with_unused_categories_has_only_its_observed_classes(penguins, workdir):
    df = penguins.copy()
    df["species"] = pd.Categorical(df["species"], categories=["Adelie", "Chinstrap", "Emperor", "Gentoo"])
    pipe, _ = prepared(df, workdir)
    assert pipe.classes == ["Adelie", "Chinstrap", "Gentoo"] and pipe.n_outputs == 3
    assert sorted(np.unique(pipe.train.y)) == [0, 1, 2]


def test_a_missing_indicator_never_repeats_a_column_name(penguins, workdir):
    df = penguins.copy()
    df.loc[df.index[::4], "bill_length_mm"] = np.nan  # 25%: sentinel, with a bill_length_mm__missing indicator
    df["bill_length_mm__missing"] = np.random.default_rng(0).normal(size=len(df))
    pipe = nt.Pipeline(df, target="species", workdir=workdir)
    pipe.clean()
    pipe.split()
    report = pipe.preprocess()
    names = pipe.feature_names
    assert len(set(names)) == len(names) == pipe.n_inputs
    assert names[-1] == "bill_length_mm__missing_2"
    assert set(np.unique(pipe.train.X[:, -1])) == {0.0, 1.0}  # the indicator, under its new name
    assert any("the later one is called 'bill_length_mm__missing_2'" in w for w in report.warnings)


def test_values_beyond_float32_are_missing_in_training_and_in_predict(penguins, workdir, one_thread):
    df = penguins.copy()
    df.loc[5, "bill_length_mm"] = 1e308
    pipe, report = prepared(df, workdir)
    assert "1 values beyond 3.4e+38" in report.corrupt["bill_length_mm"][0]
    assert np.isfinite(pipe.train.X).all() and np.isfinite(pipe.val.X).all()
    run = pipe.fit(epochs=3, view=None, seed=0)
    assert run.best_metrics["val_accuracy"] > 0
    rows = penguins.iloc[[0, 1]].copy()
    rows["bill_length_mm"] = [1e308, 40.0]
    with pytest.warns(NbtrainWarning, match=r"'bill_length_mm': 1 row with a value beyond 3.4e\+38 \(e.g. 1e\+308\)"):
        predicted = pipe.predict(rows)
    probabilities = predicted.filter(like="probability_").to_numpy()
    assert np.isfinite(probabilities).all() and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(DataError, match="strict=True and the new rows differ from training"):
        pipe.predict(rows, strict=True)


def test_predict_refuses_zoned_times_for_a_naive_column_and_the_reverse(penguins, workdir, one_thread):
    df = penguins.assign(when=pd.date_range("2020-01-01", periods=len(penguins), freq="D"))
    pipe, _ = prepared(df, workdir)
    pipe.fit(epochs=1, view=None)
    rows = df.iloc[[0, 1]].copy()
    rows["when"] = rows["when"].dt.tz_localize("Europe/Paris")
    with pytest.raises(DataError, match=r"'when' held times without a time zone in training.*new rows hold times "
                                        r"with a time zone \(datetime64\[us, Europe/Paris\]\).*tz_localize\(None\)"):
        pipe.predict(rows)
    zoned = df.assign(when=df["when"].dt.tz_localize("UTC"))
    pipe, _ = prepared(zoned, workdir.parent / "zoned")
    pipe.fit(epochs=1, view=None)
    with pytest.raises(DataError, match=r"held times with a time zone in training.*times without a time zone"):
        pipe.predict(df.iloc[[0, 1]])
    assert len(pipe.predict(zoned.iloc[[0, 1]].assign(when=lambda d: d["when"].dt.tz_convert("Asia/Tokyo")))) == 2


def test_a_value_that_scaling_takes_beyond_float32_is_refused_with_its_row(penguins, workdir, one_thread):
    df = penguins.assign(tiny=np.random.default_rng(0).normal(scale=1e-3, size=len(penguins)))
    pipe, _ = prepared(df, workdir)
    pipe.fit(epochs=1, view=None)
    rows = df.loc[pipe.train.index[:2]].assign(tiny=[1e37, 0.0])  # within float32, but 1e40 once scaled
    with pytest.raises(DataError, match=rf"Input \['tiny'\] of 1 row\(s\) \(e.g. row {rows.index[0]}\) is beyond the "
                                        r"range of the model's float32 inputs after scaling"):
        pipe.predict(rows)
