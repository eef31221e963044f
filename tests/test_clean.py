import numpy as np
import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.data import clean
from nbtrain.errors import ConfigError

from conftest import make_frame


def cleaned(df, workdir, **options):
    pipe = nt.Pipeline(df, target="label", workdir=workdir)
    return pipe, pipe.clean(**options)


def test_drops_exact_duplicates_and_names_them(frame, workdir):
    df = pd.concat([frame, frame.iloc[[4, 9]]], ignore_index=True)
    pipe, report = cleaned(df, workdir)
    assert report.duplicates == 2
    assert report.duplicate_examples == [(600, 4), (601, 9)]
    assert report.rows_out == 600 and pipe.stage == "cleaned"
    assert "Dropped 2 rows that exactly repeat another, e.g. 600 (same as 4)" in repr(report)


def test_a_row_differing_only_in_the_target_is_not_a_duplicate(frame, workdir):
    twins = frame.iloc[[0, 1]].assign(label="zzz")
    df = pd.concat([frame, twins, frame.iloc[[0]]], ignore_index=True)
    _, report = cleaned(df, workdir)
    assert report.duplicates == 1 and report.duplicate_examples == [(602, 0)]  # the copy, not the twins


def test_drops_rows_without_target(frame, workdir):
    frame.loc[[2, 3], "label"] = None
    _, report = cleaned(frame, workdir)
    assert report.rows_without_target == 2 and report.rows_without_target_examples == [2, 3]


def test_numbers_stored_as_text_are_converted_and_bad_ones_reported(frame, workdir):
    frame["price"] = frame["x2"].round(3).astype(str)
    frame.loc[[5, 6], "price"] = ["?", "twelve"]
    pipe, report = cleaned(frame, workdir)
    assert report.plans["price"].kind == "numeric"
    assert "numbers stored as text (converted to numbers)" in report.corrupt["price"]
    assert "1 values that are not numbers ['twelve'] (treated as missing)" in report.corrupt["price"]
    assert "1 placeholder values ['?'] (treated as missing)" in report.corrupt["price"]
    assert report.plans["price"].missing == 2


def test_codes_with_leading_zeros_stay_labels(frame, workdir):
    frame["zip"] = np.where(frame["color"] == "red", "02134", "10001")
    frame.loc[0, "zip"] = "94110"
    _, report = cleaned(frame, workdir)
    assert report.plans["zip"].kind == "categorical"
    assert "leading zeros" in report.corrupt["zip"][0]


def test_mixed_types_are_reported_and_made_labels(frame, workdir):
    frame["mixed"] = [1, "one", 2.5] * 200
    pipe, report = cleaned(frame, workdir)
    assert report.corrupt["mixed"][0].startswith("mixed types (")
    assert report.plans["mixed"].kind == "categorical"
    pipe.split(), pipe.preprocess()
    assert {"mixed_1", "mixed_one", "mixed_2.5"} <= set(pipe.feature_names)


def test_constant_column_dropped_but_constant_with_gaps_kept(frame, workdir):
    frame["const"] = 3
    frame["flag"] = np.where(np.arange(600) % 4 == 0, np.nan, 1.0)
    _, report = cleaned(frame, workdir)
    assert report.dropped_columns["const"] == "constant: every row is 3"
    assert "flag" not in report.dropped_columns and report.plans["flag"].strategy == "sentinel"


@pytest.mark.parametrize("n_missing, kind, expected", [
    (2, "numeric", "drop_rows"),      # 0.3%: drop the rows
    (20, "numeric", "median"),        # 3.3%: fill
    (20, "categorical", "mode"),
    (90, "numeric", "sentinel"),      # 15%: sentinel + indicator
    (90, "categorical", "sentinel"),
])
def test_missing_value_strategy_follows_the_documented_rule(frame, workdir, n_missing, kind, expected):
    column = "x1" if kind == "numeric" else "color"
    frame.loc[frame.index[:n_missing], column] = None
    _, report = cleaned(frame, workdir)
    plan = report.plans[column]
    assert (plan.kind, plan.strategy, plan.missing) == (kind, expected, n_missing)
    assert plan.reason  # every choice says why


def test_drop_rows_respects_the_overall_budget(workdir):
    df = make_frame(1000)
    for i, name in enumerate(["a", "b", "c", "d"]):
        df[name] = df["x1"] + i  # measurements (a counter 0..999 would be left out as a row number)
        df.loc[df.index[i * 5:(i + 1) * 5], name] = np.nan  # 0.5% each, different rows
    _, report = cleaned(df, workdir)
    strategies = [report.plans[n].strategy for n in "abcd"]
    assert strategies == ["drop_rows", "drop_rows", "median", "median"]  # 1% of rows at most
    assert report.rows_out == 990


def test_overrides_win_and_are_checked(frame, workdir):
    frame.loc[:49, "x1"] = np.nan
    frame.loc[:9, "color"] = None
    pipe, report = cleaned(frame, workdir, missing={"x1": "median", "color": "sentinel"})
    assert report.plans["x1"].strategy == "median" and report.plans["x1"].reason == "your choice"
    assert report.strategies == {"x1": "median", "color": "sentinel"}
    report = pipe.clean(missing={"x1": "drop_column"})
    assert report.dropped_columns["x1"] == "your choice" and "x1" not in pipe._frame.columns
    with pytest.raises(ConfigError, match=r"'color' holds categorical values, which have no median"):
        pipe.clean(missing={"color": "median"})
    with pytest.raises(ConfigError, match=r"unknown strategy; use one of \['drop_rows'"):
        pipe.clean(missing={"x1": "mean"})
    with pytest.raises(ConfigError, match=r"missing='colour' is not a column.*Did you mean 'color'"):
        pipe.clean(missing={"colour": "mode"})
    with pytest.raises(ConfigError, match=r"missing= maps columns to strategies"):
        pipe.clean(missing=["x1"])


def test_placeholder_markers_can_be_turned_off(frame, workdir):
    frame.loc[:5, "color"] = "?"
    _, report = cleaned(frame, workdir, na_markers=())
    assert report.plans["color"].missing == 0
    _, report = cleaned(frame, workdir)
    assert report.plans["color"].missing == 6


def test_cleaning_that_leaves_nothing_says_so(workdir):
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "when": [None] * 4, "label": ["a", "b", "a", "b"]})
    pipe = nt.Pipeline(df, target="label", group_col="when", workdir=workdir)
    with pytest.raises(nt.DataError, match=r"Cleaning left no rows out of 4"):
        pipe.clean()


def test_repair_column_is_pure():
    column = pd.Series(["1", "2", "n/a", "3.5"] * 300 + ["x"], name="c")
    before = column.copy()
    result = clean.repair_column(column, clean.NA_MARKERS)
    repaired, found = result.column, result.found
    pd.testing.assert_series_equal(column, before)
    assert (result.missing, result.distinct) == (301, 3)
    assert repaired.dtype == float and repaired.isna().sum() == 301 and repaired.sum() == 300 * 6.5
    assert found == ["300 placeholder values ['n/a'] (treated as missing)",
                     "numbers stored as text (converted to numbers)",
                     "1 values that are not numbers ['x'] (treated as missing)"]
