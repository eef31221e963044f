"""Input types users have: column labels that are not text, pandas' extension dtypes, time zones,
timedeltas and periods, odd targets. Each gets a documented conversion or an error that says what
was received and what to do (issue 18, items 1 and 7)."""

import numpy as np
import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.errors import DataError


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
