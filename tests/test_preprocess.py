import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.preprocessing import RobustScaler, StandardScaler

import nbtrain as nt
from nbtrain.errors import ConfigError, LeakageError

from conftest import make_frame


def prepared(df, workdir, target="label", clean=None, **options):
    pipe = nt.Pipeline(df, target=target, workdir=workdir)
    pipe.clean(**(clean or {}))
    pipe.split()
    return pipe, pipe.preprocess(**options)


def train_rows(pipe):
    return pipe._frame.iloc[pipe._split.positions["train"]]


def test_statistics_come_from_the_train_rows_only(workdir):
    df = make_frame(1000)
    df.loc[df.index[::7], "x2"] = np.nan  # 14%: sentinel strategy, median + indicator
    pipe, _ = prepared(df, workdir)
    train = train_rows(pipe)
    numeric = pipe.preprocessor_.dense_.named_transformers_["numeric"]
    imputer, scaler = numeric[0], numeric[-1]
    assert imputer.statistics_ == pytest.approx(train[["x1", "x2"]].median().to_numpy())
    filled = train[["x1", "x2"]].fillna(train[["x1", "x2"]].median())
    assert scaler.mean_ == pytest.approx(filled.mean().to_numpy())
    everything = pipe._frame[["x1", "x2"]].fillna(pipe._frame[["x1", "x2"]].median())
    assert not np.allclose(scaler.mean_, everything.mean().to_numpy())  # the test would notice a leak
    col = pipe.feature_names.index("x1")
    assert pipe.train.X[:, col].mean() == pytest.approx(0, abs=1e-5)
    assert pipe.train.X[:, col].std() == pytest.approx(1, abs=1e-3)


def test_feature_layout_and_indicator(workdir):
    df = make_frame(1000)
    df.loc[df.index[::7], "x2"] = np.nan
    pipe, report = prepared(df, workdir)
    assert pipe.feature_names == ["x1", "x2", "color_blue", "color_green", "color_red", "x2__missing"]
    assert pipe.n_inputs == 6 == pipe.train.X.shape[1] == pipe.val.X.shape[1]
    missing_col = pipe.train.X[:, -1]
    assert set(np.unique(missing_col)) == {0.0, 1.0}
    assert missing_col.sum() == train_rows(pipe)["x2"].isna().sum()
    assert report.treatments.loc["x2", "missing filled with"] == "median + indicator"
    assert "Fitted on the 700 train rows only" in repr(report)


def test_labels_and_targets(workdir):
    pipe, _ = prepared(make_frame(500), workdir)
    assert pipe.classes == ["a", "b", "c"] and pipe.n_outputs == 3
    train = train_rows(pipe)
    assert list(np.array(pipe.classes)[pipe.train.y]) == train["label"].tolist()
    assert pipe.train.y.dtype == np.int64 and pipe.train.X.dtype == np.float32
    assert list(pipe.train.index) == list(train.index)


def test_regression_and_binary_outputs(workdir):
    df = make_frame(400).assign(value=lambda d: d.x1 * 2.5).drop(columns="label")
    pipe, _ = prepared(df.assign(x1=df.x1 + np.random.default_rng(1).normal(size=400)), workdir, target="value")
    assert pipe.n_outputs == 1 and pipe.train.y.dtype == np.float32
    with pytest.raises(ConfigError, match=r"classes exist only for classification"):
        pipe.classes
    binary, _ = prepared(make_frame(400, classes=("no", "yes")), workdir)
    assert binary.task == "binary" and binary.n_outputs == 1 and set(binary.train.y) == {0, 1}


def test_high_cardinality_labels_become_embedding_codes(workdir):
    df = make_frame(2000)
    rng = np.random.default_rng(0)
    df["city"] = rng.choice([f"city{i}" for i in range(60)], size=2000)
    df.loc[df.index[::9], "city"] = None  # 11%: sentinel, its own code
    pipe, report = prepared(df, workdir)
    assert "city" not in " ".join(pipe.feature_names)
    seen = train_rows(pipe)["city"].nunique()
    assert pipe.cardinalities == {"city": seen + 2}  # + "__missing__" + code 0 for unseen
    codes = pipe.train.codes[:, 0]
    assert codes.min() >= 1 and codes.max() == seen + 1  # every train label is known
    assert report.treatments.loc["city", "encoding"] == f"embedding codes ({seen + 2})"
    X, new_codes = pipe.preprocessor_.transform(df.iloc[:3].assign(city=["nowhere", "city1", None]))
    assert new_codes[0, 0] == 0 and new_codes[1, 0] > 0


def test_unseen_one_hot_label_gives_zeros(workdir):
    pipe, _ = prepared(make_frame(300), workdir)
    X, _ = pipe.preprocessor_.transform(make_frame(3).assign(color="purple"))
    colors = [i for i, n in enumerate(pipe.feature_names) if n.startswith("color_")]
    assert (X[:, colors] == 0).all()


def test_binary_dates_and_ordinals(workdir):
    df = make_frame(600)
    df["member"] = np.arange(600) % 3 == 0
    df["joined"] = pd.Timestamp("2021-01-01") + pd.to_timedelta(np.arange(600), unit="D")
    df["size"] = np.array(["S", "M", "L", "XL"])[np.arange(600) % 4]
    pipe = nt.Pipeline(df, target="label", ordinal={"size": ["S", "M", "L", "XL"]}, workdir=workdir)
    pipe.clean(), pipe.split(method="random")
    report = pipe.preprocess()
    X = pd.DataFrame(pipe.train.X, columns=pipe.feature_names)
    assert set(X["member"]) == {0.0, 1.0}
    assert X["joined"].mean() == pytest.approx(0, abs=1e-5)  # days since 1970, standardised
    rows = train_rows(pipe)
    expected = rows["size"].map({"S": 0, "M": 1 / 3, "L": 2 / 3, "XL": 1}).to_numpy()
    assert X["size"].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert report.treatments.loc["size", "encoding"] == "ordinal codes, minmax"


def test_ordinal_checks(frame, workdir):
    frame["size"] = np.array(["S", "M", "L"])[np.arange(600) % 3]
    with pytest.raises(ConfigError, match=r"ordinal column 'size' has values missing from its order \['S', 'M'\]"):
        nt.Pipeline(frame, target="label", ordinal={"size": ["S", "M"]}, workdir=workdir)
    with pytest.raises(ConfigError, match=r"ordinal column 'size' needs its levels in order"):
        nt.Pipeline(frame, target="label", ordinal=["size"], workdir=workdir)
    frame["size"] = pd.Categorical(frame["size"], categories=["S", "M", "L"], ordered=True)
    assert nt.Pipeline(frame, target="label", ordinal=["size"], workdir=workdir).ordinal == {"size": ["S", "M", "L"]}


def test_scaler_choices(workdir):
    minmax, report = prepared(make_frame(300), workdir, scaler="minmax")
    col = minmax.feature_names.index("x1")
    assert minmax.train.X[:, col].min() == 0 and minmax.train.X[:, col].max() == pytest.approx(1)
    assert report.treatments.loc["x1", "encoding"] == "minmax"
    none, _ = prepared(make_frame(300), workdir, scaler="none")
    assert none.train.X[:, 0] == pytest.approx(train_rows(none)["x1"].to_numpy(), abs=1e-6)
    robust, report = prepared(make_frame(300), workdir, scaler=RobustScaler())
    assert report.treatments.loc["x1", "encoding"] == "RobustScaler"
    with pytest.raises(ConfigError, match=r"scaler='zscore' is not one of"):
        prepared(make_frame(300), workdir, scaler="zscore")


def test_a_scaler_fitted_elsewhere_is_a_leak(frame, workdir):
    fitted = StandardScaler().fit(frame[["x1", "x2"]])
    with pytest.raises(LeakageError, match=r"StandardScaler you passed is already fitted.*Pass an unfitted one"):
        prepared(frame, workdir, scaler=fitted)


def test_tensors_move_as_one_block(workdir):
    pipe, _ = prepared(make_frame(300), workdir)
    tensors = pipe.train.tensors()
    assert tensors["X"].dtype == torch.float32 and tensors["y"].dtype == torch.int64
    assert tensors["X"].shape == (len(pipe.train), pipe.n_inputs) and tensors["codes"].shape == (210, 0)
