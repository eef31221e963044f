"""The train/validation/test split, made before anything learns parameters.

Automatic ratios by the number of rows (after cleaning):

| rows                 | train/val/test | why                                                        |
|----------------------|----------------|------------------------------------------------------------|
| < 10,000             | 70/15/15       | validation and test need enough rows to measure anything   |
| 10,000 - 999,999     | 80/10/10       | 10% is already >= 1,000 rows                               |
| >= 1,000,000         | 98/1/1         | 1% is >= 10,000 rows: enough for a precise estimate, and   |
|                      |                | the model gets almost all the data                         |

Methods: "stratified" (classification: each class in the same proportion in every split),
"random", "time" (train < validation < test in time; rows sharing a timestamp stay together) and
"group" (each group wholly in one split). "auto" picks time, then group, then stratified, then random.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbtrain.data.inputs import naive_times
from nbtrain.errors import ConfigError, DataError, LeakageError
from nbtrain.report import Report

PARTS = ("train", "val", "test")
SMALL_MAX_ROWS = 10_000
LARGE_MIN_ROWS = 1_000_000
RATIOS = {"small": (0.70, 0.15, 0.15), "medium": (0.80, 0.10, 0.10), "large": (0.98, 0.01, 0.01)}
METHODS = ("auto", "stratified", "random", "time", "group")
FEW_ROWS = 100  # a validation or test split smaller than this gives a noisy estimate


def auto_ratios(n_rows: int) -> tuple[float, float, float]:
    if n_rows < SMALL_MAX_ROWS:
        return RATIOS["small"]
    return RATIOS["medium"] if n_rows < LARGE_MIN_ROWS else RATIOS["large"]


def check_ratios(ratios, n_rows: int) -> tuple[float, float, float]:
    if isinstance(ratios, str) and ratios == "auto":
        return auto_ratios(n_rows)
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) <= 0 or abs(sum(values) - 1) > 1e-6:
        raise ConfigError(f"ratios must be 'auto' or three positive shares for train, validation and test "
                          f"that add up to 1, e.g. (0.8, 0.1, 0.1); received {ratios!r}.")
    return values  # type: ignore[return-value]


@dataclass
class Split:
    """Which cleaned rows (by position) went where, and how the split was made."""

    method: str
    ratios: tuple
    seed: int | None
    positions: dict  # part -> sorted positions into the cleaned frame
    random_split_reason: str | None = None

    def sizes(self) -> dict:
        return {part: len(self.positions[part]) for part in PARTS}


def choose_method(method: str, *, task: str, time_col, group_col, random_split_reason) -> str:
    """Resolve "auto" and enforce the time and group guards."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not a split method; use one of {list(METHODS)}.")
    if time_col is not None and group_col is not None:
        raise ConfigError("A split by time and by group at once is not supported yet: pass either "
                          "time_col or group_col to the Pipeline.")
    if method == "auto":
        if time_col is not None:
            return "time"
        if group_col is not None:
            return "group"
        return "stratified" if task in ("binary", "multiclass") else "random"
    if method in ("time", "group") and {"time": time_col, "group": group_col}[method] is None:
        raise ConfigError(f"method={method!r} needs the Pipeline's {method}_col; none was given.")
    if time_col is not None and method != "time" and not random_split_reason:
        raise LeakageError(f"The data has a time column ({time_col!r}); a {method} split would train on rows "
                           "from after the ones it is evaluated on, so validation and test scores would use "
                           "the future. Use method='time' (the default), or, if rows really are independent "
                           "of time, pass random_split_reason='...' to accept it; the reason is recorded.")
    if group_col is not None and method != "group":
        raise LeakageError(f"group_col={group_col!r} was declared; a {method} split would put rows of the same "
                           "group in two splits, so the model would be evaluated on groups it has seen. "
                           "Use method='group' (the default).")
    if method == "stratified" and task not in ("binary", "multiclass"):
        raise ConfigError(f"method='stratified' needs classes; the task is {task!r}. Use 'random'.")
    return method


def allocate(n: int, ratios) -> np.ndarray:
    """Row counts per part by largest remainder; every part gets a row when there are 3 or more."""
    exact = n * np.asarray(ratios, dtype=float)
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact, kind="stable")[: n - counts.sum()]] += 1
    if n >= 3:
        for part in (1, 2):
            if counts[part] == 0:
                counts[part] = 1
                counts[np.argmax(counts)] -= 1
    return counts


def _cut(order: np.ndarray, counts: np.ndarray) -> dict:
    bounds = np.cumsum(counts)[:2]
    return {part: np.sort(chunk) for part, chunk in zip(PARTS, np.split(order, bounds))}


def split_random(n: int, ratios, rng: np.random.Generator) -> dict:
    return _cut(rng.permutation(n), allocate(n, ratios))


def split_stratified(labels: pd.Series, ratios, rng: np.random.Generator) -> dict:
    """Shuffle, then cut every class by the ratios, so each split keeps the class balance."""
    codes = pd.factorize(labels)[0]
    shuffled = rng.permutation(len(codes))
    by_class = shuffled[np.argsort(codes[shuffled], kind="stable")]
    class_sizes = np.bincount(codes)
    parts: dict = {part: [] for part in PARTS}
    for members in np.split(by_class, np.cumsum(class_sizes)[:-1]):
        for part, chunk in zip(PARTS, np.split(members, np.cumsum(allocate(len(members), ratios))[:2])):
            parts[part].append(chunk)
    return {part: np.sort(np.concatenate(chunks)) for part, chunks in parts.items()}


def split_by_time(times: pd.Series, ratios) -> dict:
    """Oldest rows train, then validation, then test; a boundary never falls inside a timestamp."""
    values = naive_times(times).to_numpy()
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    bounds = np.cumsum(allocate(len(values), ratios))[:2]
    # move each boundary forward past rows that share its timestamp, so no time is in two splits
    bounds = [int(np.searchsorted(ordered, ordered[b - 1], side="right")) if 0 < b < len(values) else b
              for b in bounds]
    if not 0 < bounds[0] < bounds[1] < len(values):
        raise DataError(f"Cannot split by time: {times.name!r} has only {len(np.unique(values))} distinct "
                        f"values, too few to give train, validation and test each their own period.")
    return {part: np.sort(chunk) for part, chunk in zip(PARTS, np.split(order, bounds))}


def split_by_group(groups: pd.Series, ratios, rng: np.random.Generator) -> dict:
    """Shuffle the groups, then fill train, validation and test with whole groups by row count."""
    codes, uniques = pd.factorize(groups)
    if len(uniques) < 3:
        raise DataError(f"Cannot split by group: {groups.name!r} has {len(uniques)} distinct groups; train, "
                        "validation and test need at least one each.")
    order = rng.permutation(len(uniques))
    sizes = np.bincount(codes, minlength=len(uniques))[order]
    middle = np.cumsum(sizes) - sizes / 2  # a group goes where its middle row falls
    part_of = np.searchsorted(np.cumsum(ratios)[:2] * len(codes), middle, side="right")
    if len(np.unique(part_of)) < 3:  # a few huge groups: share the groups out by count instead
        part_of = np.repeat(np.arange(3), allocate(len(uniques), ratios))
    group_part = np.empty(len(uniques), dtype=int)
    group_part[order] = part_of
    row_part = group_part[codes]
    return {part: np.flatnonzero(row_part == i) for i, part in enumerate(PARTS)}


@dataclass(repr=False)
class SplitReport(Report):
    """The result of `Pipeline.split()`."""

    title = "Split report"
    method: str = ""
    ratios: tuple = ()
    seed: int | None = None
    split_id: str = ""
    sizes: dict = field(default_factory=dict)
    class_balance: pd.DataFrame | None = None  # rows: classes; columns: parts; values: share of the part
    target_summary: pd.DataFrame | None = None  # regression: mean and std of the target per part
    time_ranges: pd.DataFrame | None = None     # rows: parts; columns: start, end
    groups: dict | None = None                  # part -> number of groups
    random_split_reason: str | None = None
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        shares = "/".join(f"{r:.0%}" for r in self.ratios)
        sizes = ", ".join(f"{part} {n}" for part, n in self.sizes.items())
        lines = [f"Method: {self.method} (ratios {shares}, seed {self.seed}); split id {self.split_id}.",
                 f"Rows: {sizes}."]
        if self.groups:
            lines.append("Groups: " + ", ".join(f"{p} {n}" for p, n in self.groups.items()) + ".")
        if self.random_split_reason:
            lines.append(f"Random split of time-ordered data accepted, reason recorded: "
                         f"{self.random_split_reason!r}.")
        return lines

    def _sections(self):
        tables = [("Class balance (share of each split)", self.class_balance),
                  ("Target per split", self.target_summary), ("Time range per split", self.time_ranges)]
        return [(title, table) for title, table in tables if table is not None]


def describe_target(target: pd.Series, positions: dict, task: str) -> dict:
    """The class balance (classification) or target summary (regression) of each part."""
    values = target.to_numpy()
    if task in ("binary", "multiclass"):
        shares = {part: pd.Series(values[pos]).value_counts(normalize=True) for part, pos in positions.items()}
        table = pd.DataFrame(shares).fillna(0.0).round(3)
        table.index.name = target.name
        return {"class_balance": table}
    # nan-aware: a time series keeps rows whose missing target is filled later, within its own period
    stats = {part: {"mean": float(np.nanmean(values[pos])), "std": float(np.nanstd(values[pos]))}
             for part, pos in positions.items()}
    return {"target_summary": pd.DataFrame(stats).T.round(4)}


def describe_times(times: pd.Series, positions: dict) -> pd.DataFrame:
    return pd.DataFrame({part: {"start": times.iloc[pos].min(), "end": times.iloc[pos].max()}
                         for part, pos in positions.items()}).T
