"""The validation budget: how optimistic the best validation score is after comparing N runs on one split.

Every run recorded on a split (networks, baselines, sweep trials) is one comparison on its validation
rows, counted from the ledger. The estimate (the documented rule):

    optimism ~= E[max of N standard normals] x SE

If N runs were equally good, each validation score would be its true value plus noise with the
score's standard error SE, and the best of N would look better than its true value by the expected
maximum of N standard normal draws times SE (0.56 SE for 2 runs, 1.54 for 10, 1.97 for 25, 2.51 for
100). Runs that truly differ are picked less by luck, so this is an upper estimate of the selection's
bias: it says how far the best score may be from what the test split will show, not that it will be.

SE comes, in order of preference, from the validation rows themselves (the spread of the best run's
per-row losses: the standard error of their mean, or for RMSE a bootstrap of the rows), or from the
spread of the compared runs' scores (their standard deviation: real differences count as noise there,
so that estimate is larger). The doctor's `validation_overuse` fires by the same rule
(nbtrain.doctor.rules): once the expected optimism reaches OVERUSE_INFO standard errors (10 runs),
a warning from OVERUSE_WARNING (28 runs).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

OVERUSE_INFO = 1.5     # standard errors of optimism: 10 runs on one split
OVERUSE_WARNING = 2.0  # 28 runs
BOOTSTRAP_DRAWS = 400


@functools.lru_cache(maxsize=512)
def expected_max(n: int) -> float:
    """E[max of n independent standard normal draws] (0 for one draw): the integral of x n phi(x) Phi(x)^(n-1)."""
    if n <= 1:
        return 0.0
    from scipy import integrate, stats  # scipy.stats takes a while to import: only when a rule needs it
    value, _ = integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -12, 12,
                              limit=200)
    return float(value)


@dataclass
class Budget:
    """How much of the validation split's honesty N comparisons have spent."""

    compared: int                 # runs recorded on this split, this one included
    metric: str                   # the selection metric, e.g. "val_log_loss"
    best: float                   # the best run's validation value
    standard_error: float         # of that value (NaN when unknown)
    source: str                   # where the standard error comes from, in words
    higher_is_better: bool = False

    @property
    def standard_errors(self) -> float:
        """The expected optimism in standard errors: E[max of `compared` standard normals]."""
        return expected_max(self.compared)

    @property
    def optimism(self) -> float:
        """How much better than its true value the best score may look, in the metric's units."""
        return self.standard_errors * self.standard_error

    @property
    def corrected(self) -> float:
        """The best score moved back by the optimism: what to expect from it on fresh rows, at worst."""
        return self.best - self.optimism if self.higher_is_better else self.best + self.optimism

    def describe(self) -> str:
        shown = self.metric.removeprefix("val_").replace("_", " ")
        head = (f"{self.compared} runs have been compared on this validation split: the best {shown} of "
                f"{self.compared} equally good runs would look better than its true value by {self.standard_errors:.2f} "
                "standard errors (the expected maximum of that many normal draws).")
        return f"{head} {self.in_units()}".rstrip()

    def in_units(self) -> str:
        """The optimism in the metric's units ("" when the standard error is unknown)."""
        if not math.isfinite(self.standard_error):
            return ""
        shown = self.metric.removeprefix("val_").replace("_", " ")
        expect = "lower values, down to" if self.higher_is_better else "higher values, up to"
        return (f"One standard error of {shown} here is {self.standard_error:.3g} ({self.source}), so the best "
                f"validation {shown}, {self.best:.4g}, may be optimistic by up to {self.optimism:.3g}: expect "
                f"{expect} {self.corrected:.4g}, on fresh rows.")


def mean_standard_error(per_unit: np.ndarray) -> float:
    """The standard error of a mean over validation units (rows, windows, queries)."""
    values = np.asarray(per_unit, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def rmse_standard_error(squared_errors: np.ndarray, seed: int = 0) -> float:
    """The standard error of an RMSE by a bootstrap of the validation units' squared errors."""
    values = np.asarray(squared_errors, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(BOOTSTRAP_DRAWS, len(values)))
    return float(np.std(np.sqrt(values[draws].mean(axis=1)), ddof=1))


def spread_standard_error(scores) -> float:
    """The standard deviation of the compared runs' scores (an upper stand-in for the noise of one score)."""
    values = np.asarray([s for s in scores if s is not None and math.isfinite(s)], dtype=float)
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan
