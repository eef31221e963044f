"""The naive forecasts a network has to beat on a time series.

- LastValue: every horizon step repeats the last observed value, y_hat[T+h] = y[T].
- SeasonalNaive: each step repeats the value one season earlier, y_hat[T+h] = y[T+h-m*ceil(h/m)],
  with m the season (7 for daily data, 52 weekly, 12 monthly, 4 quarterly, 24 hourly).

Both read only a window's own past (`windows.history`, the target in data units), so they are
scored on exactly the windows the networks are. They are recorded as baseline runs
(nbtrain.training.runs.fit_baseline), so `pipe.runs` shows them beside every network.

A naive forecast has little to tune, but its season is a choice: `SeasonalNaive.chosen_on` checks
the frequency's calendar season and its near neighbours (ALTERNATIVES: a year of weeks is 52.18
steps, so 53 is tried beside 52; a week of hours is 168) on the train windows only, keeps the one
with the lowest RMSE there, and says how it compares with the last value on those windows (a
strong trend can make any seasonal naive forecast worse than the last value).
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


# seasons tried beside a frequency's calendar season (nbtrain.kinds.timeseries.data.Frequency.season)
ALTERNATIVES = {24: (168,), 7: (364, 365), 52: (53,)}


class SeasonalNaive:
    """Repeat the value one season before each horizon step (the last full season, cycled)."""

    library = "naive"
    estimator_name = "SeasonalNaive"

    def __init__(self, season: int, horizon: int = 1, *, seed: int = 0):
        self.season, self.horizon, self.seed = _positive(season, "season"), _positive(horizon, "horizon"), seed
        self.config = {"season": self.season, "horizon": self.horizon}
        self.notes = []

    @classmethod
    def chosen_on(cls, train, season: int, horizon: int = 1, *, seed: int = 0) -> SeasonalNaive:
        """The seasonal naive forecast whose season, among `season` and its ALTERNATIVES that fit the windows'
        lookback, has the lowest RMSE on the train windows `train`; the check goes to its config and notes."""
        lookback = np.asarray(train.history).shape[1]
        tried = [m for m in (season, *ALTERNATIVES.get(season, ())) if m <= lookback]
        errors = {m: _rmse(cls(m, horizon).predict(train), train.y) for m in tried}
        best = min(errors, key=errors.get) if errors else season
        chosen = cls(best, horizon, seed=seed)
        last = _rmse(LastValue(horizon).predict(train), train.y)
        chosen.config["season_check"] = {"train_rmse": {str(m): round(e, 6) for m, e in errors.items()},
                                         "last_value_train_rmse": round(last, 6),
                                         "too_long": [m for m in ALTERNATIVES.get(season, ()) if m > lookback]}
        chosen.notes.append(_season_note(errors, best, last, lookback, season))
        return chosen

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


def _rmse(predicted: np.ndarray, y) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, dtype=float) - np.asarray(y, dtype=float)) ** 2)))


def _season_note(errors: dict, best: int, last: float, lookback: int, season: int) -> str:
    others = ", ".join(f"{m}: {e:.4g}" for m, e in errors.items() if m != best)
    longer = [m for m in ALTERNATIVES.get(season, ()) if m > lookback]
    note = (f"Season {best} checked on the train windows only: RMSE {errors.get(best, float('nan')):.4g}"
            + (f" (season {others})" if others else "")
            + (f"; season {', '.join(map(str, longer))} not tried: it needs lookback >= {max(longer)}" if longer else "")
            + f". The last value scores {last:.4g} there")
    if best in errors and errors[best] > last:
        note += (": over a season the series drifts further (a trend) than it moves in a few steps, so repeating "
                 "last season's values loses")
    return note + "."
