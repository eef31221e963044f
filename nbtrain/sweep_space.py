"""Search spaces for `pipe.sweep`: what each hyperparameter may be, and how trials draw from it.

In Python, a space is a dict from a name (a fit keyword such as lr, or a model hyperparameter such
as dropout) to one of:

| value                         | means                                           | magic form (%%train)   |
|-------------------------------|-------------------------------------------------|------------------------|
| `nt.loguniform(1e-4, 1e-2)`   | log-uniform between the bounds                  | `--lr 1e-4:1e-2:log`   |
| `nt.uniform(0.1, 0.5)`, or `(0.1, 0.5)` | uniform between the bounds (two whole numbers: an integer) | `--dropout 0.1:0.5` |
| `nt.choice([...])`, or a list | one of the values, each as likely               | `--lr 1e-4,3e-4,1e-3`  |
| anything else                 | fixed: every trial gets it                      | `--epochs 30`          |

Random search draws every dimension independently from a seeded generator (the same seed, the same
trials); grid search runs every combination of the choices (ranges have no grid: list the values);
Optuna's samplers ask through `suggest` (nbtrain.sweep). Nothing here trains.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from nbtrain.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """A number between `low` and `high`: uniform, or uniform in its logarithm (`log`); whole numbers when
    `integer`."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self):
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
                raise ConfigError(f"A range needs two finite numbers; received ({self.low!r}, {self.high!r}).")
        if not self.low < self.high:
            raise ConfigError(f"A range needs low < high; received ({self.low!r}, {self.high!r}). For one value, "
                              "give the value itself.")
        if self.log and self.low <= 0:
            raise ConfigError(f"A log-uniform range needs positive bounds; received ({self.low!r}, {self.high!r}).")

    def draw(self, rng: np.random.Generator):
        if self.log:
            value = float(np.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        else:
            value = float(rng.uniform(self.low, self.high))
        return int(round(value)) if self.integer else value

    def describe(self) -> str:
        kind = "log-uniform" if self.log else "uniform"
        return f"{kind} {'whole numbers ' if self.integer else ''}in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Choice:
    """One of `values`, each as likely."""

    values: tuple

    def __post_init__(self):
        if not self.values:
            raise ConfigError("A choice needs at least one value; received an empty list.")

    def draw(self, rng: np.random.Generator):
        return self.values[int(rng.integers(len(self.values)))]

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


def loguniform(low: float, high: float) -> Range:
    """Log-uniform between low and high (learning rates, weight decay): each decade as likely."""
    return Range(low, high, log=True)


def uniform(low: float, high: float) -> Range:
    """Uniform between low and high (dropout)."""
    return Range(low, high)


def intrange(low: int, high: int, *, log: bool = False) -> Range:
    """A whole number between low and high, both included (epochs, embedding sizes)."""
    return Range(low, high, log=log, integer=True)


def choice(values) -> Choice:
    """One of the values (layer sizes, optimizers)."""
    return Choice(tuple(values))


def dimension(name: str, value):
    """A space entry as a Range, a Choice, or the fixed value itself (the table in the module docstring)."""
    if isinstance(value, (Range, Choice)):
        return value
    if isinstance(value, list):
        return Choice(tuple(value))
    if isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        whole = all(isinstance(v, int) for v in value)
        try:
            return Range(value[0], value[1], integer=whole)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return value


def parse(space) -> dict:
    """The space as {name: Range | Choice | fixed value}, with at least one dimension to search."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"A sweep needs a space: a dict such as {{'lr': nt.loguniform(1e-4, 1e-2), 'dropout': "
                          f"(0.1, 0.5)}}; received {type(space).__name__} {space!r}.")
    parsed = {str(name): dimension(str(name), value) for name, value in space.items()}
    if not any(isinstance(v, (Range, Choice)) for v in parsed.values()):
        raise ConfigError(f"The space {space!r} has nothing to search: every value is fixed. Give a range "
                          "(low, high), nt.loguniform(low, high) or a list of values for at least one name.")
    return parsed


def random_trials(space: dict, trials: int, seed: int) -> list[dict]:
    """`trials` draws, each dimension independently; the same seed gives the same trials."""
    rng = np.random.default_rng(seed)
    return [{name: dim.draw(rng) if isinstance(dim, (Range, Choice)) else dim for name, dim in space.items()}
            for _ in range(trials)]


def grid_trials(space: dict) -> list[dict]:
    """Every combination of the choices, in the order they are listed."""
    ranges = [name for name, dim in space.items() if isinstance(dim, Range)]
    if ranges:
        raise ConfigError(f"A grid needs values to list, and {', '.join(ranges)} {'is a range' if len(ranges) == 1 else 'are ranges'}"
                          f" ({space[ranges[0]].describe()}). Give a list of values instead, or use method='random' "
                          "or 'optuna'.")
    names = list(space)
    columns = [dim.values if isinstance(dim, Choice) else (dim,) for dim in space.values()]
    return [dict(zip(names, values)) for values in itertools.product(*columns)]


def searched(space: dict) -> list[str]:
    """The names that vary between trials."""
    return [name for name, dim in space.items() if isinstance(dim, (Range, Choice))]

