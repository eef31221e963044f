"""Exact duplicate rows: copies of one record, or different records that happen to agree?

A row that repeats another exactly is a copy (a double entry, a join that repeated rows) when
chance cannot explain it; then it is dropped, or it would sit in train and in test at once. In a
table whose columns take few values (a survey: age group, yes/no answers) different people give
the same answers all the time; dropping them loses real respondents and reweights the rest.

The rule (`judge`): count the pairs of identical rows, and the pairs expected by chance. Chance is
modelled from the columns' own values: rows that agree on every coarse column (at most
`COARSE_MAX_LEVELS` distinct values) form a group, and within it each finer column agrees by
chance as often as its values repeat in that group (independently of the other fine columns; a
small group's rate is shrunk toward the whole table's). Duplicates are dropped when the observed
pairs would come up with probability below `SIGNIFICANCE` under a Poisson count with twice that
expectation (the factor allows for dependence between fine columns that the model ignores);
otherwise they are kept, and the report says so.

What no rule can do: in a table of coarse columns only, a copy looks exactly like two people who
answered alike, so copies there are kept (clean(duplicates="drop") if you know better).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import poisson

COARSE_MAX_LEVELS = 20
SIGNIFICANCE = 0.05
CHANCE_ALLOWANCE = 2.0
PRIOR_PAIRS = 10.0


@dataclass(frozen=True)
class Verdict:
    """How many pairs of identical rows there are, how many chance explains, and what to do."""

    pairs: int
    expected: float
    drop: bool
    fine_columns: tuple


def identical_pairs(row_hash: np.ndarray) -> int:
    """Pairs of rows with the same content hash (a group of 3 identical rows is 3 pairs)."""
    counts = pd.Series(row_hash).value_counts().to_numpy()
    return int((counts * (counts - 1) // 2).sum())


def expected_pairs(frame: pd.DataFrame, columns: list) -> tuple[float, tuple]:
    """Pairs of identical rows expected by chance (see the module's rule), and the fine columns.

    A fine column's chance agreement in a group is shrunk toward its agreement in the whole table by
    `PRIOR_PAIRS` pairs' worth: in a group of two copies the column "always" agrees, which is no
    evidence of chance, while a large group speaks for itself.
    """
    levels = {name: frame[name].nunique(dropna=False) for name in columns}
    coarse = [name for name in columns if levels[name] <= COARSE_MAX_LEVELS]
    fine = tuple(name for name in columns if name not in coarse)
    group = frame.groupby(coarse, dropna=False, sort=False).ngroup().to_numpy() if coarse \
        else np.zeros(len(frame), dtype=np.int64)
    pairs = np.bincount(group).astype(float)
    pairs = pairs * (pairs - 1) / 2
    everywhere = len(frame) * (len(frame) - 1) / 2
    chance = np.ones_like(pairs)  # per group: the chance that two of its rows agree on every fine column
    for name in fine:
        agreeing = _pairs_per_group(group, frame[name], len(pairs))
        overall = _pairs_per_group(np.zeros(len(frame), dtype=np.int64), frame[name], 1)[0] / everywhere
        chance *= (agreeing + PRIOR_PAIRS * overall) / (pairs + PRIOR_PAIRS)
    return float((pairs * chance).sum()), fine


def _pairs_per_group(group: np.ndarray, values, n_groups: int) -> np.ndarray:
    """Per group, the pairs of its rows that hold the same value (missing counts as a value)."""
    codes = pd.factorize(pd.Series(values), use_na_sentinel=False)[0]
    same = pd.DataFrame({"group": group, "value": codes}).value_counts().reset_index(name="n")
    return np.bincount(same["group"], weights=same["n"] * (same["n"] - 1.0) / 2, minlength=n_groups)


def judge(frame: pd.DataFrame, columns: list, row_hash: np.ndarray) -> Verdict:
    """Whether the exact duplicates among `frame`'s rows (hashed in `row_hash`) are copies."""
    pairs = identical_pairs(row_hash)
    if not pairs:
        return Verdict(0, 0.0, False, ())
    expected, fine = expected_pairs(frame, columns)
    unlikely = poisson.sf(pairs - 1, CHANCE_ALLOWANCE * expected) < SIGNIFICANCE
    return Verdict(pairs, expected, bool(unlikely), fine)
