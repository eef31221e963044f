"""`pipe.sweep(space, trials=, method=)`: a hyperparameter search whose every trial is an ordinary run.

Each trial is `pipe.fit(...)` with the trial's values: logged in the ledger, TensorBoard (its HParams
view lists every trial) and any tracker, watched by the doctor, its config tagged with the sweep
(`config["sweep"]`: id, trial, method, values). Trials are compared on the task's selection metric
(nbtrain.training.runs.SELECTION), as pipe.runs and test() compare runs, and test() still evaluates
once: the best run, or the run you name.

Methods: "random" (each dimension drawn independently, seeded), "grid" (every combination of the listed
values), "auto" (the default: the grid when the space only lists values and `trials` leaves room for all of
them, else random) and "optuna" (Optuna's TPE sampler with its median pruner on the per-epoch validation metric;
`pip install 'nbtrain[optuna]'`; pass your own `study=` or `pruner=`). Names in the space that are
fit keywords (lr, weight_decay, batch_size, ...) go to fit; the others (dropout, hidden) build the
model: the tabular MLP's own parameters when `model` is None, else `model(**those values)`.

Stop (the view's button, pipe.request_stop(), Kernel > Interrupt) ends the trial in progress as it ends
any run, and the sweep with it: finished trials are kept, the rest are not started. The report
(nbtrain.sweep_report) counts what the sweep cost the validation split (nbtrain.doctor.budget).
"""

from __future__ import annotations

import copy
import inspect
import math
import uuid
from dataclasses import dataclass, field

import torch
from torch import nn

from nbtrain import sweep_space
from nbtrain.doctor.fixes import format_value, train_line
from nbtrain.errors import ConfigError
from nbtrain.models.tabular import MLP
from nbtrain.sweep_report import SweepReport, make_report, progress_line
from nbtrain.training import fit as training
from nbtrain.training.interrupts import GracefulInterrupt
from nbtrain.training.runs import HIGHER_IS_BETTER, SELECTION

METHODS = ("auto", "random", "grid", "optuna")
DEFAULT_TRIALS = 10  # Keras Tuner's max_trials default
FIT_KEYWORDS = frozenset(training.DEFAULTS) | {"threshold"}
USER_ENDED = ("stopped", "interrupted")


@dataclass
class Trial:
    number: int                # from 1
    params: dict               # the values searched for this trial
    run: object = None         # the Run (None until it trained)
    cell_text: str = ""        # the %%train cell that reruns it


@dataclass
class Sweep:
    """A sweep in progress: its id and plan, its trials so far, and the stop flag Stop and Interrupt set."""

    id: str
    method: str
    planned: int
    metric: str                 # the selection metric, e.g. "val_log_loss"
    higher_is_better: bool
    trials: list = field(default_factory=list)
    stop_reason: str | None = None

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    @property
    def best(self) -> Trial | None:
        scored = [t for t in self.trials if math.isfinite(self.value(t))]
        if not scored:
            return None
        return (max if self.higher_is_better else min)(scored, key=self.value)  # the first of equals

    def value(self, trial: Trial) -> float:
        return trial.run.best_metrics.get(self.metric, math.nan) if trial.run is not None else math.nan


def sweep(pipe, space, trials: int | None = None, method: str = "auto", *, seed: int | None = None, model=None,
          view="auto", study=None, pruner=None, cell_text: str | None = None, **fit_keywords) -> SweepReport:
    """Run the sweep (Pipeline.sweep's docstring says what each argument does)."""
    pipe._require("preprocessed", "sweep")
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not a sweep method; use one of {list(METHODS)}.")
    parsed = sweep_space.parse(space)
    method = _method(method, parsed, trials)
    seed = pipe.seed if seed is None else seed
    metric = f"val_{SELECTION[pipe.task]}"
    higher = HIGHER_IS_BETTER[SELECTION[pipe.task]]
    sweep_id = f"sweep-{uuid.uuid4().hex[:8]}"
    plan = _plan(method, parsed, trials, seed, study, pruner, higher, sweep_id)
    state = Sweep(id=sweep_id, method=method, planned=plan.planned, metric=metric,
                  higher_is_better=higher)
    shown = make_sweep_view(view, state, pipe.request_stop)
    fixed = {k: v for k, v in fit_keywords.items() if k != "callbacks"}
    if seed != pipe.seed and "seed" not in fixed:  # the trials trained with it: their cells say so
        fixed["seed"] = seed
    pipe._sweep = state
    # between trials a first Interrupt ends the sweep gracefully too; inside one, fit's own handler does
    with GracefulInterrupt(state=state):
        try:
            for number in range(1, plan.planned + 1):
                if state.stop_reason is not None:
                    break
                params, handle = plan.ask(number)
                trial = Trial(number, params)
                state.trials.append(trial)
                try:
                    _train(pipe, state, trial, plan.callbacks(handle, metric, higher), model=model, shown=shown,
                           fixed=fixed, seed=seed, cell_text=cell_text, fit_keywords=fit_keywords)
                finally:  # a trial that raised (its run is logged with stop_reason "error") is a failed one
                    plan.tell(handle, trial.run, state.value(trial))
                if trial.run.stop_reason in USER_ENDED:
                    state.request_stop(trial.run.stop_reason)
                if shown is not None:
                    shown.trial_done(trial)
        finally:
            pipe._sweep = None
    report = pipe.last_sweep = make_report(pipe, state, parsed, plan.note)
    if shown is not None:
        shown.finish(report)
    return report


def _train(pipe, state: Sweep, trial: Trial, pruning: list, *, model, shown, fixed: dict, seed: int,
           cell_text: str | None, fit_keywords: dict) -> None:
    """One trial: an ordinary pipe.fit with the trial's values, tagged with the sweep."""
    fit_values = {k: v for k, v in trial.params.items() if k in FIT_KEYWORDS}
    model_values = {k: v for k, v in trial.params.items() if k not in FIT_KEYWORDS}
    keywords = {"seed": seed, **fit_keywords, **fit_values}
    torch.manual_seed(keywords["seed"])  # the model is built before fit seeds: the same trial, the same weights
    built = build_model(pipe, model, model_values, trial.params)
    trial.cell_text = trial_cell(fixed, fit_values, model_values, model, cell_text)
    tag = {"id": state.id, "trial": trial.number, "of": state.planned, "method": state.method,
           "values": {k: _plain(v) for k, v in trial.params.items()}}
    keywords["callbacks"] = [*fit_keywords.get("callbacks", ()), *pruning]
    view = shown.trial_view(trial) if shown is not None else None
    if shown is not None:
        shown.trial_started(trial)
    # the model's values as plain settings too, so TensorBoard's HParams view can sort the trials by them
    shown_values = {f"sweep_{k}": v if isinstance(v, (int, float, str, bool)) else repr(v) for k, v in model_values.items()}
    trial.run = pipe.fit(built, view=view, cell_text=trial.cell_text, record={"sweep": tag, **shown_values}, **keywords)


def build_model(pipe, model, values: dict, params: dict):
    """The trial's model: `model(**values)` for a function; the tabular MLP with `values` when model is None;
    a copy of a module you pass (every trial starts from its weights), which takes no values."""
    if callable(model) and not isinstance(model, nn.Module):
        if getattr(model, "takes_all_values", False):  # the %%train cell's body: every value is bound as a name
            return model(**params)
        _check_arguments(model, values)
        return model(**values)
    if not values:
        return copy.deepcopy(model) if model is not None else None
    if model is None and pipe.kind == "tabular" and pipe.task != "ranking":
        _check_arguments(MLP, values, skip=("n_inputs", "n_outputs", "cardinalities"))
        return MLP(pipe.n_inputs, pipe.n_outputs, cardinalities=pipe.cardinalities, **values)
    names = ", ".join(values)
    what = "a model you passed" if model is not None else f"the {pipe.kind} kind's default model"
    raise ConfigError(f"{names} {'is not a fit keyword' if len(values) == 1 else 'are not fit keywords'}, so "
                      f"{'it has' if len(values) == 1 else 'they have'} to build the model, and {what} cannot take "
                      f"them. Pass model=a function that builds the model from them, e.g. "
                      f"model=lambda {', '.join(values)}: MyNet({', '.join(f'{n}={n}' for n in values)}).")


def _check_arguments(function, values: dict, skip=()) -> None:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [name for name in values if name not in parameters]
    if unknown:
        taken = [n for n in parameters if n not in skip and n != "self"]
        raise ConfigError(f"{', '.join(unknown)} in the space {'is' if len(unknown) == 1 else 'are'} neither a fit "
                          f"keyword nor a parameter of {getattr(function, '__name__', 'the model function')} "
                          f"(it takes {', '.join(taken)}). Rename it in the space, or pass model= a function that "
                          "takes it.")


def trial_cell(fixed: dict, fit_values: dict, model_values: dict, model, cell_text: str | None) -> str:
    """The %%train cell that reruns a trial: the sweep's own line with the trial's values (from a %%train cell),
    or the line of its fit keywords; model values become assignments before the body that reads them."""
    line = train_line({k: _exact(v) for k, v in fit_values.items()}, fixed, cell_text)
    body = cell_text.split("\n", 1)[1] if cell_text and "\n" in cell_text else ""
    assigned = [f"{name} = {_python(value)}" for name, value in model_values.items()]
    if cell_text is not None:
        return "\n".join([line, *(assigned if body.strip() else []), *([body] if body.strip() else [])])
    if not model_values:
        return line
    shown = ", ".join(f"{n}={_python(v)}" for n, v in model_values.items())
    if model is None:
        return f"{line}\nmodel = nt.models.MLP(pipe.n_inputs, pipe.n_outputs, cardinalities=pipe.cardinalities, {shown})"
    name = getattr(model, "__name__", "")
    if name.isidentifier():
        return f"{line}\nmodel = {name}({shown})"
    return f"{line}\n# the model: your function with {shown}"


def _python(value) -> str:
    return _exact(value) if isinstance(value, float) else repr(value)


def _exact(value):
    """A searched float to 6 significant digits (format_value keeps 4: a rerun should train on the trial's value)."""
    if not isinstance(value, float) or value == 0:
        return value
    mantissa, _, exponent = f"{value:.6g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def _plain(value):
    """A value as JSON keeps it (the ledger's config): tuples become lists."""
    return list(value) if isinstance(value, tuple) else value


# ---- plans: which values each trial gets, and what the sweep learns from it ----------------------------------

class _ListPlan:
    """Random or grid: the trials' values are known before the first one trains."""

    def __init__(self, values: list, note: str = ""):
        self.values, self.planned, self.note = values, len(values), note

    def ask(self, number: int):
        return self.values[number - 1], None

    def callbacks(self, handle, metric: str, higher: bool) -> list:
        return []

    def tell(self, handle, run, value: float) -> None:
        pass


def _method(method: str, space: dict, trials) -> str:
    """"auto": the grid when every searched name lists its values and `trials` leaves room for all of them
    (--lr 1e-4,3e-4,1e-3 runs those three), else random."""
    if method != "auto":
        return method
    if any(isinstance(d, sweep_space.Range) for d in space.values()):
        return "random"
    return "grid" if trials is None or trials >= len(sweep_space.grid_trials(space)) else "random"


def _plan(method: str, space: dict, trials, seed: int, study, pruner, higher: bool, name: str):
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"trials must be a whole number >= 1; received {trials!r}.")
    if method != "optuna" and (study is not None or pruner is not None):
        raise ConfigError(f"study= and pruner= are Optuna's; method={method!r} uses neither. Pass method='optuna'.")
    if method == "grid":
        grid = sweep_space.grid_trials(space)
        if trials is None or trials >= len(grid):
            return _ListPlan(grid)
        return _ListPlan(grid[:trials], f"Covered {trials} of the grid's {len(grid)} points (trials={trials}), in the "
                                        "order listed.")
    count = DEFAULT_TRIALS if trials is None else trials
    if method == "random":
        return _ListPlan(sweep_space.random_trials(space, count, seed))
    from nbtrain.sweep_optuna import OptunaPlan  # Optuna is an optional extra: imported only when asked for
    return OptunaPlan(space, count, seed, study, pruner, higher, name)


# ---- how a sweep shows itself --------------------------------------------------------------------------------

class SweepText:
    """One line when a trial starts and one when it ends (the trials themselves train quietly)."""

    def __init__(self, state: Sweep, stream=None):
        import sys
        self.state, self.stream = state, stream or sys.stdout

    def trial_view(self, trial: Trial):
        return None

    def trial_started(self, trial: Trial) -> None:
        values = ", ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
        print(f"{self.state.id}: trial {trial.number} of {self.state.planned} ({values})", file=self.stream, flush=True)

    def trial_done(self, trial: Trial) -> None:
        print(f"{self.state.id}: {progress_line(self.state, trial.number, trial.run)}", file=self.stream, flush=True)

    def finish(self, report) -> None:
        print(report.ending(), file=self.stream, flush=True)


def make_sweep_view(view, state: Sweep, request_stop):
    """"auto": widgets in a notebook (nbtrain.jupyter.sweep_view), a line per trial elsewhere; "text"; None."""
    if view is None:
        return None
    from nbtrain.training.progress import in_notebook
    if view == "auto" and in_notebook():
        from nbtrain.jupyter.sweep_view import SweepView  # only where a kernel runs: the core needs no IPython
        return SweepView(state, request_stop)
    if view in ("auto", "text"):
        return SweepText(state)
    raise ConfigError(f"view={view!r} is not 'auto', 'text' or None for a sweep.")
