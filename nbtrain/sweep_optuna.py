"""method="optuna" for pipe.sweep: Optuna's ask-and-tell interface, with pruning on the per-epoch metric.

The default study minimises (or maximises) the task's selection metric with the TPE sampler seeded by the
sweep's seed and Optuna's MedianPruner: no pruning during the first 5 trials, nor before a trial's
WARMUP_EPOCHS-th epoch has ended (Optuna's default, 0, judged penguins trials by their first epoch, where a
large lr that went on to the best score looked worst); then a trial whose metric at an epoch is worse than
the median of earlier trials at that epoch is stopped, with stop_reason "pruned". A study you pass keeps its own sampler, pruner and storage, so a sweep can
continue one; its direction must match the metric's. `pip install 'nbtrain[optuna]'`.
"""

from __future__ import annotations

import math

from nbtrain.errors import ConfigError
from nbtrain.sweep_space import Choice, Range
from nbtrain.training.callbacks import Callback, RunState

_CATEGORICAL = (type(None), bool, int, float, str)
WARMUP_EPOCHS = 3  # what Optuna's suggest_categorical stores as is


def _optuna():
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError("method='optuna' needs Optuna: pip install 'nbtrain[optuna]'. method='random' and 'grid' "
                          "need nothing more.") from exc
    return optuna


class OptunaPlan:
    def __init__(self, space: dict, trials: int, seed: int, study, pruner, higher: bool, name: str):
        optuna = _optuna()
        direction = "maximize" if higher else "minimize"
        if study is None:
            study = _quietly(optuna, lambda: optuna.create_study(
                study_name=name, direction=direction, sampler=optuna.samplers.TPESampler(seed=seed),
                pruner=pruner if pruner is not None else optuna.pruners.MedianPruner(n_warmup_steps=WARMUP_EPOCHS)))
        elif pruner is not None:
            raise ConfigError("Pass pruner= or study=, not both: a study you pass keeps its own pruner.")
        if study.direction.name.lower() != direction:
            raise ConfigError(f"The study's direction is {study.direction.name.lower()!r}, but this task's selection "
                              f"metric is {'higher' if higher else 'lower'} when better: create it with "
                              f"direction={direction!r}.")
        self.optuna, self.study, self.space, self.planned, self.note = optuna, study, space, trials, ""

    def ask(self, number: int):
        trial = self.study.ask()
        return {name: suggest(trial, name, dim) for name, dim in self.space.items()}, trial

    def callbacks(self, handle, metric: str, higher: bool) -> list:
        return [PruneCallback(handle, metric, "val_loss")]

    def tell(self, handle, run, value: float) -> None:
        states = self.optuna.trial.TrialState
        if run is not None and run.stop_reason == "pruned":
            self.study.tell(handle, state=states.PRUNED)
        elif run is None or run.stop_reason == "error" or not math.isfinite(value):
            self.study.tell(handle, state=states.FAIL)
        else:
            self.study.tell(handle, value)


def _quietly(optuna, make):
    """Without Optuna's "A new study created" log line (the sweep's view says what runs)."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return make()
    finally:
        optuna.logging.set_verbosity(previous)


def suggest(trial, name: str, dim):
    """The trial's value of one space entry, asked of Optuna (fixed values are not searched)."""
    if isinstance(dim, Range):
        if dim.integer:
            return trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        return trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)
    if isinstance(dim, Choice):
        if all(isinstance(v, _CATEGORICAL) for v in dim.values):
            return trial.suggest_categorical(name, list(dim.values))
        labels = [repr(v) for v in dim.values]  # tuples (layer sizes): Optuna stores their text
        return dim.values[labels.index(trial.suggest_categorical(name, labels))]
    return dim


class PruneCallback(Callback):
    """Reports the validation metric to an Optuna trial after every epoch; asks the run to stop when pruned."""

    def __init__(self, trial, metric: str, fallback: str):
        self.trial, self.metric, self.fallback = trial, metric, fallback

    def on_epoch_end(self, state: RunState) -> None:
        record = state.history[-1]
        value = record.get(self.metric, record.get(self.fallback))
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), state.epoch)
        if self.trial.should_prune():
            state.request_stop("pruned")
