"""Bad input gets a clear error (what happened, what was received, what to do) and loses nothing."""

import numpy as np
import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.errors import ConfigError, DataError

from conftest import make_frame


def build(df, untouched, **options):
    """Build (and clean) a Pipeline over df, checking afterwards that df did not change."""
    guard = untouched(df)
    try:
        pipe = nt.Pipeline(df, **options)
        return pipe, pipe.clean()
    finally:
        guard.check()


@pytest.mark.parametrize("df", [pd.DataFrame(), pd.DataFrame({"a": [], "y": []}), pd.DataFrame(index=[1, 2])])
def test_empty_frame(df, untouched, workdir):
    with pytest.raises(DataError, match=r"DataFrame is empty \(\d+ rows x \d+ columns\).*Check how it was loaded"):
        build(df, untouched, target="y", workdir=workdir)


def test_missing_target_suggests_close_names(frame, untouched, workdir):
    with pytest.raises(DataError, match=r"target='lable' is not a column.*Did you mean 'label'\?.*Columns:"):
        build(frame, untouched, target="lable", workdir=workdir)
    with pytest.raises(DataError, match=r"Did you mean 'label'"):
        build(frame, untouched, target="LABEL", workdir=workdir)


def test_all_missing_target(frame, untouched, workdir):
    frame["label"] = None
    with pytest.raises(DataError, match=r"target 'label' is missing in all 600 rows"):
        build(frame, untouched, target="label", workdir=workdir)


def test_one_class_only(frame, untouched, workdir):
    frame["label"] = "a"
    with pytest.raises(DataError, match=r"single value \('a'\) in all 600 rows.*pick another target"):
        build(frame, untouched, target="label", workdir=workdir)


def test_class_with_a_single_row(frame, untouched, workdir):
    frame.loc[7, "label"] = "lonely"
    with pytest.raises(DataError, match=r"Class 'lonely' of 'label' has a single row.*merge rare classes"):
        build(frame, untouched, target="label", workdir=workdir)


def test_class_left_with_a_single_row_after_cleaning_is_refused_by_split(frame, workdir):
    frame.loc[7, "label"] = "rare"
    frame.loc[8] = frame.loc[7]  # its second row is an exact duplicate: cleaning drops it
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    assert pipe.clean().duplicates == 1
    with pytest.raises(DataError, match=r"Class 'rare' .* single row"):
        pipe.split()


@pytest.mark.parametrize("data", [np.zeros((5, 3)), [[1, 2], [3, 4]], ((1, 2),)])
def test_arrays_and_lists_point_to_from_arrays(data, workdir):
    with pytest.raises(DataError, match=r"needs a pandas DataFrame.*received a (ndarray|list|tuple).*from_arrays"):
        nt.Pipeline(data, target="y", workdir=workdir)


def test_dict_and_series_get_their_own_hint(workdir):
    with pytest.raises(DataError, match=r"received a dict.*pd.DataFrame\(data\)"):
        nt.Pipeline({"a": [1, 2]}, target="a", workdir=workdir)
    with pytest.raises(DataError, match=r"received a Series.*one column"):
        nt.Pipeline(pd.Series([1, 2]), target="a", workdir=workdir)


def test_from_arrays_builds_a_pipeline(workdir):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] > 0).astype(int)
    X_before = X.copy()
    pipe = nt.Pipeline.from_arrays(X, y, feature_names=["a", "b", "c", "d"], workdir=workdir)
    assert pipe.task == "binary" and pipe.target == "target"
    pipe.clean(), pipe.split(), pipe.preprocess()
    assert pipe.feature_names == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(X, X_before)


def test_from_arrays_rejects_mismatched_shapes(workdir):
    with pytest.raises(DataError, match=r"X of shape \(10, 2\) and y of shape \(9,\)"):
        nt.Pipeline.from_arrays(np.zeros((10, 2)), np.zeros(9), workdir=workdir)
    with pytest.raises(DataError, match=r"feature_names has 3 names for 2 columns"):
        nt.Pipeline.from_arrays(np.zeros((10, 2)), np.zeros(10), feature_names="abc", workdir=workdir)


def test_duplicate_column_names(frame, untouched, workdir):
    df = pd.concat([frame, frame[["x1"]]], axis=1)
    with pytest.raises(DataError, match=r"duplicate column names: \['x1'\].*rename them"):
        build(df, untouched, target="label", workdir=workdir)


def test_duplicate_index_labels(frame, untouched, workdir):
    df = pd.concat([frame.iloc[:10], frame.iloc[10:20]]).set_axis([0] * 20)
    with pytest.raises(DataError, match=r"index has duplicate labels.*reset_index\(drop=True\)"):
        build(df, untouched, target="label", workdir=workdir)


def test_unhashable_cells(frame, untouched, workdir):
    frame["tags"] = [["x", "y"]] * len(frame)
    with pytest.raises(DataError, match=r"Column 'tags' holds list values \(e.g. in row 0\), 600 rows.*explode"):
        build(frame, untouched, target="label", workdir=workdir)


def test_unparseable_time_col(frame, untouched, workdir):
    frame["when"] = pd.date_range("2024-01-01", periods=len(frame), freq="D").astype(str)
    frame.loc[[3, 9], "when"] = ["yesterday", "31/31/2020"]
    with pytest.raises(DataError, match=r"time_col='when' has 2 values that are not dates.*'yesterday'"):
        build(frame, untouched, target="label", time_col="when", workdir=workdir)


def test_all_missing_feature_is_dropped_and_cannot_be_filled(frame, untouched, workdir):
    frame["empty"] = np.nan
    pipe, report = build(frame, untouched, target="label", workdir=workdir)
    assert report.dropped_columns == {"empty": "all 600 values are missing"}
    assert "empty" in repr(report)
    with pytest.raises(ConfigError, match=r"'empty' has no values at all, so 'median' has nothing to learn"):
        pipe.clean(missing={"empty": "median"})
    untouched(frame).check()


def test_infinite_values_become_missing_and_never_reach_the_model(frame, untouched, workdir):
    frame.loc[[1, 5, 9], "x1"] = [np.inf, -np.inf, np.inf]
    pipe, report = build(frame, untouched, target="label", workdir=workdir)
    assert report.corrupt["x1"] == ["3 infinite values (treated as missing)"]
    assert report.plans["x1"].missing == 3
    pipe.split()
    pipe.preprocess()
    assert np.isfinite(pipe.train.X).all() and np.isfinite(pipe.val.X).all()


def test_undeclared_datetime_column_warns_and_suggests_time_col(frame, untouched, workdir):
    frame["day"] = pd.date_range("2024-01-01", periods=len(frame), freq="h")
    pipe, report = build(frame, untouched, target="label", workdir=workdir)
    assert any("time_col='day'" in w for w in report.warnings)
    split = pipe.split()
    assert any("time_col='day'" in w and "random split" in w for w in split.warnings)


def test_time_col_that_is_the_target(frame, workdir):
    with pytest.raises(ConfigError, match=r"time_col='label' is also the target"):
        nt.Pipeline(frame, target="label", time_col="label", workdir=workdir)


def test_frame_with_only_a_target(workdir):
    with pytest.raises(DataError, match=r"no feature columns besides the target 'y'"):
        nt.Pipeline(pd.DataFrame({"y": [1, 2, 1, 2]}), target="y", workdir=workdir)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(frame, seed, workdir):
    with pytest.raises(ConfigError, match=r"seed must be a whole number >= 0"):
        nt.Pipeline(frame, target="label", seed=seed, workdir=workdir)


def test_an_unknown_kind_is_refused(frame, workdir):
    with pytest.raises(ConfigError, match=r"kind='pictures' is not a data kind"):
        nt.Pipeline(frame, target="label", kind="pictures", workdir=workdir)


def test_every_verb_leaves_a_messy_frame_untouched(untouched, workdir):
    df = make_frame(400)
    df["x1"] = df["x1"].astype(object)
    df.loc[3, "x1"] = "n/a"
    df.loc[4, "x2"] = np.inf
    df["code"] = df["color"].map({"red": "007", "green": "010", "blue": "123"})
    df["amount"] = df["x2"].round(2).astype(str)
    df.loc[11, "label"] = None
    df = pd.concat([df, df.iloc[:5]], ignore_index=True)
    df.attrs["source"] = "test"
    guard = untouched(df)
    pipe = nt.Pipeline(df, target="label", workdir=workdir)
    pipe.clean(missing={"x2": "sentinel"})
    pipe.split(seed=3)
    pipe.preprocess(scaler="minmax")
    pipe.split(seed=4)
    pipe.preprocess()
    guard.check()
