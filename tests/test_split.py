import sqlite3

import numpy as np
import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.data import split as splitting
from nbtrain.errors import ConfigError, DataError, LeakageError

from conftest import make_frame


def ready(df, workdir, **options):
    pipe = nt.Pipeline(df, workdir=workdir, **options)
    pipe.clean()
    return pipe


def part_rows(pipe, part):
    return pipe._frame.iloc[pipe._split.positions[part]]


@pytest.mark.parametrize("n, expected", [(50, (0.7, 0.15, 0.15)), (9_999, (0.7, 0.15, 0.15)),
                                         (10_000, (0.8, 0.1, 0.1)), (999_999, (0.8, 0.1, 0.1)),
                                         (1_000_000, (0.98, 0.01, 0.01)), (50_000_000, (0.98, 0.01, 0.01))])
def test_auto_ratios_follow_the_documented_thresholds(n, expected):
    assert splitting.auto_ratios(n) == expected


def test_auto_ratios_on_real_sizes(workdir):
    medium = ready(make_frame(12_000), workdir, target="label").split()
    assert medium.ratios == (0.8, 0.1, 0.1)
    assert medium.sizes == {"train": 9600, "val": 1200, "test": 1200}


@pytest.mark.parametrize("ratios", [(0.8, 0.2), (0.5, 0.5, 0.5), (1.0, 0.0, 0.0), "half", 3, (0.8, "x", 0.1)])
def test_bad_ratios(frame, workdir, ratios):
    with pytest.raises(ConfigError, match=r"ratios must be 'auto' or three positive shares.*received"):
        ready(frame, workdir, target="label").split(ratios)


def test_parts_are_disjoint_and_cover_every_row(frame, workdir):
    pipe = ready(frame, workdir, target="label")
    report = pipe.split((0.6, 0.2, 0.2))
    positions = pipe._split.positions
    together = np.concatenate([positions[p] for p in splitting.PARTS])
    assert len(together) == len(set(together)) == 600
    assert report.sizes == {"train": 360, "val": 120, "test": 120}


def test_stratified_split_keeps_class_balance(workdir):
    df = make_frame(2000)
    df.loc[df.index[:100], "label"] = "rare"  # 5%
    pipe = ready(df, workdir, target="label")
    report = pipe.split()
    assert report.method == "stratified"
    rare = report.class_balance.loc["rare"]
    assert np.allclose(rare.to_numpy(), 0.05, atol=0.002)
    assert "Class balance" in repr(report) and "<table" in report._repr_html_()


def test_same_seed_same_split_other_seed_other_split(frame, workdir):
    a = ready(frame, workdir, target="label").split(seed=1)
    b = ready(frame, workdir, target="label").split(seed=1)
    c = ready(frame, workdir, target="label").split(seed=2)
    assert a.split_id == b.split_id != c.split_id


def test_dataset_fingerprint_ignores_row_and_column_order(frame, workdir):
    base = nt.Pipeline(frame, target="label", workdir=workdir).fingerprint
    shuffled = nt.Pipeline(frame.sample(frac=1, random_state=5), target="label", workdir=workdir)
    reordered = nt.Pipeline(frame[frame.columns[::-1]], target="label", workdir=workdir)
    changed = frame.copy()
    changed.loc[0, "x1"] += 1e-9
    assert base == shuffled.fingerprint == reordered.fingerprint
    assert nt.Pipeline(changed, target="label", workdir=workdir).fingerprint != base


def test_regression_split_is_random_and_summarised(workdir):
    df = make_frame(500).assign(value=lambda d: d.x1 * 3 + d.x2).drop(columns="label")
    report = ready(df, workdir, target="value").split()
    assert report.method == "random" and report.class_balance is None
    assert list(report.target_summary.columns) == ["mean", "std"]


def test_time_split_is_ordered_and_ties_stay_together(workdir):
    df = make_frame(600)
    df["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(600) // 3, unit="D")  # 3 rows a day
    df = df.sample(frac=1, random_state=0)  # arrival order must not matter
    pipe = ready(df, workdir, target="label", time_col="when")
    report = pipe.split()
    assert report.method == "time"
    train, val, test = (part_rows(pipe, p)["when"] for p in splitting.PARTS)
    assert train.max() < val.min() and val.max() < test.min()
    ranges = report.time_ranges
    assert ranges.loc["train", "end"] < ranges.loc["val", "start"] and "Time range per split" in repr(report)


def test_time_column_as_text_or_numbers(workdir):
    df = make_frame(300).assign(year=np.repeat(np.arange(2000, 2030), 10))
    df["stamp"] = pd.date_range("2020-01-01", periods=300, freq="D").strftime("%Y-%m-%d")
    for col in ("year", "stamp"):
        pipe = ready(df, workdir, target="label", time_col=col)
        pipe.split()
        assert part_rows(pipe, "train")[col].max() < part_rows(pipe, "val")[col].min()
    assert df["stamp"].dtype != "datetime64[ns]"  # the caller's column is still text


def test_random_split_of_time_data_is_refused(workdir):
    df = make_frame(300).assign(when=pd.date_range("2020-01-01", periods=300, freq="D"))
    pipe = ready(df, workdir, target="label", time_col="when")
    for method in ("random", "stratified"):
        with pytest.raises(LeakageError, match=r"time column \('when'\); a .* split would train on rows from after"):
            pipe.split(method=method)
    assert pipe.stage == "cleaned"


def test_random_split_of_time_data_with_a_reason_is_recorded(workdir):
    df = make_frame(300).assign(when=pd.date_range("2020-01-01", periods=300, freq="D"))
    pipe = ready(df, workdir, target="label", time_col="when")
    report = pipe.split(method="random", random_split_reason="sensor order is irrelevant")
    assert report.method == "random" and report.random_split_reason == "sensor order is irrelevant"
    assert "reason recorded: 'sensor order is irrelevant'" in repr(report)
    with sqlite3.connect(workdir / "ledger.sqlite") as db:
        stored = db.execute("SELECT method, random_split_reason FROM splits WHERE id = ?",
                            (report.split_id,)).fetchall()
    assert stored == [("random", "sensor order is irrelevant")]


def test_time_split_with_too_few_distinct_times(workdir):
    df = make_frame(300).assign(when=np.repeat(["2020-01-01", "2020-01-02"], 150))
    with pytest.raises(DataError, match=r"Cannot split by time: 'when' has only 2 distinct values"):
        ready(df, workdir, target="label", time_col="when").split()


def test_group_split_never_shares_a_group(workdir):
    df = make_frame(900).assign(patient=np.repeat(np.arange(90), 10))
    pipe = ready(df, workdir, target="label", group_col="patient")
    report = pipe.split()
    groups = [set(part_rows(pipe, p)["patient"]) for p in splitting.PARTS]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(report.groups.values()) == 90 and report.sizes["train"] == 630
    with pytest.raises(LeakageError, match=r"group_col='patient' was declared; a random split would put"):
        pipe.split(method="random")


def test_group_split_needs_three_groups(workdir):
    df = make_frame(100).assign(site=np.repeat(["a", "b"], 50))
    with pytest.raises(DataError, match=r"'site' has 2 distinct groups"):
        ready(df, workdir, target="label", group_col="site").split()


def test_method_checks(frame, workdir):
    pipe = ready(frame, workdir, target="label")
    with pytest.raises(ConfigError, match=r"method='time' needs the Pipeline's time_col"):
        pipe.split(method="time")
    with pytest.raises(ConfigError, match=r"method='shuffle' is not a split method"):
        pipe.split(method="shuffle")
    df = make_frame(100).assign(value=np.arange(100.0)).drop(columns="label")
    with pytest.raises(ConfigError, match=r"method='stratified' needs classes"):
        ready(df, workdir, target="value").split(method="stratified")


def test_warns_about_identical_feature_rows_across_splits(workdir):
    df = make_frame(400)
    copies = df.iloc[:100].assign(label=lambda d: d.label.map({"a": "b", "b": "c", "c": "a"}))
    df = pd.concat([df, copies], ignore_index=True)
    report = ready(df, workdir, target="label").split()
    assert any("have exactly the same features as a train row" in w for w in report.warnings)


def test_warns_about_a_feature_that_predicts_the_target_alone(frame, workdir):
    frame["label_code"] = frame["label"].map({"a": 10.0, "b": 20.0, "c": 30.0})
    frame["label_text"] = "is-" + frame["label"]
    report = ready(frame, workdir, target="label").split()
    flagged = [w for w in report.warnings if "alone predicts the target" in w]
    assert len(flagged) == 2
    assert "'label_code'" in flagged[0] and "'label_text'" in flagged[1]


def test_no_false_alarms_on_honest_data(penguins, workdir):
    report = ready(penguins, workdir, target="species").split()
    assert not [w for w in report.warnings if "alone predicts" in w or "same features" in w]


def test_warns_about_a_regression_leak(workdir):
    df = make_frame(500).assign(value=lambda d: d.x1 * 3 + d.x2).drop(columns="label")
    df["value_x2"] = df["value"] * 2 + 1
    report = ready(df, workdir, target="value").split()
    assert any("'value_x2' alone predicts the target (R²" in w for w in report.warnings)


def test_allocate_gives_every_part_a_row():
    assert list(splitting.allocate(3, (0.98, 0.01, 0.01))) == [1, 1, 1]
    assert splitting.allocate(1001, (0.7, 0.15, 0.15)).sum() == 1001
