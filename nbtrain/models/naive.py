"""The naive forecasts a network has to beat on a time series.

- LastValue: every horizon step repeats the last observed value, y_hat[T+h] = y[T].
- SeasonalNaive: each step repeats the value one season earlier, y_hat[T+h] = y[T+h-m*ceil(h/m)],
  with m the season (7 for daily data, 52 weekly, 12 monthly, 4 quarterly, 24 hourly).

Both read only a window's own past (`windows.history`, the target in data units), so they are
scored on exactly the windows the networks are. They are recorded as baseline runs
(nbtrain.training.runs.fit_baseline), so `pipe.runs` shows them beside every network.
"""

from __future__ import annotations

import numpy as np

from nbtrain.errors import ConfigError


class LastValue:
    """Repeat the last value of each window's inputs for every horizon step."""

    library = "naive"
    estimator_name = "LastValue"

    def __init__(self, horizon: int = 1, *, seed: int = 0):
        self.horizon, self.seed = _positive(horizon, "horizon"), seed
        self.config = {"horizon": self.horizon}

    def fit(self, windows=None, y=None) -> LastValue:
        """Nothing to learn: a naive forecast is a rule. Kept so it is fitted like every baseline."""
        return self

    def predict(self, windows) -> np.ndarray:
        history = np.asarray(windows.history, dtype=np.float32)
        return np.repeat(history[:, -1:], self.horizon, axis=1)


class SeasonalNaive:
    """Repeat the value one season before each horizon step (the last full season, cycled)."""

    library = "naive"
    estimator_name = "SeasonalNaive"

    def __init__(self, season: int, horizon: int = 1, *, seed: int = 0):
        self.season, self.horizon, self.seed = _positive(season, "season"), _positive(horizon, "horizon"), seed
        self.config = {"season": self.season, "horizon": self.horizon}

    def fit(self, windows=None, y=None) -> SeasonalNaive:
        return self

    def predict(self, windows) -> np.ndarray:
        history = np.asarray(windows.history, dtype=np.float32)
        lookback = history.shape[1]
        if lookback < self.season:
            raise ConfigError(f"A seasonal naive forecast with season={self.season} needs windows of at least "
                              f"{self.season} steps; these have lookback={lookback}. Preprocess with "
                              f"lookback>={self.season}, or pass another season.")
        steps = lookback - self.season + np.arange(self.horizon) % self.season
        return history[:, steps]


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1; received {value!r}.")
    return int(value)
