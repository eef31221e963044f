"""`SweepReport`: what a sweep found and what it cost the validation split.

The trials table (best first by the task's selection metric), the best trial and its %%train cell to
copy, a plot of the metric against each hyperparameter, and the validation budget
(nbtrain.doctor.budget): how many runs this split has now judged, and how optimistic its best score may
be, with the doctor's validation_overuse finding when that rule fires.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbtrain.doctor.budget import Budget, mean_standard_error, rmse_standard_error, spread_standard_error
from nbtrain.doctor.rules import validation_overuse
from nbtrain.report import Report
from nbtrain.sweep_space import Range, searched
from nbtrain.training.evaluation import nn_predictions

_EPS = 1e-7  # as the log loss metric clips probabilities (nbtrain.training.metrics)


@dataclass(repr=False)
class SweepReport(Report):
    title = "Sweep"
    sweep_id: str = ""
    method: str = ""
    metric: str = ""
    planned: int = 0
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per trial that trained, best first
    best_run: str | None = None          # the best trial's run name (test(run=...) takes it)
    best_params: dict = field(default_factory=dict)
    best_line: str = ""                  # the %%train cell that reruns the best trial
    budget: Budget | None = None
    diagnoses: list = field(default_factory=list)  # validation_overuse, when the budget's rule fires
    stop_reason: str | None = None       # "stopped" / "interrupted" when the user ended the sweep early
    space: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def pruned(self) -> int:
        return int((self.trials.get("stop_reason", pd.Series(dtype=object)) == "pruned").sum())

    def ending(self) -> str:
        """One line: how the sweep ended and its best trial."""
        ran = len(self.trials)
        by = {"stopped": "Stop", "interrupted": "an Interrupt"}.get(self.stop_reason, self.stop_reason)
        how = (f"ended by {by} after {ran} of {self.planned} trials (the rest not started)"
               if self.stop_reason else f"{ran} of {self.planned} trials")
        if self.best_run is None:
            return f"{self.sweep_id}: {how}; no trial has a validation {self.metric.removeprefix('val_')}."
        value = self.trials[self.metric].iloc[0]
        return (f"{self.sweep_id}: {how}; best {self.best_run} with {self.metric.removeprefix('val_')} "
                f"{value:.4g}" + (f"; {self.pruned} pruned" if self.pruned else "") + ".")

    def _summary(self) -> list[str]:
        lines = [f"{self.method} search, {self.ending().split(': ', 1)[1]}"]
        if self.best_run is not None:
            lines.append(f"test() evaluates the best run of the session: pipe.test() (or pipe.test(run={self.best_run!r})); "
                         "the best trial's cell is below.")
        if self.budget is not None:
            lines.append(f"Validation budget: {self.budget.describe()}")
        return lines + self.notes

    def _sections(self):
        sections = [("Trials, best first", self.trials)] if not self.trials.empty else []
        if self.diagnoses:
            sections.append(("Diagnoses", [str(d) for d in self.diagnoses]))
        return sections

    def plot(self):
        """The metric against each searched hyperparameter, one panel each (pruned trials hollow): a Figure."""
        from matplotlib.figure import Figure  # no pyplot: leaves the notebook's backend alone
        names = [n for n in searched(self.space) if n in self.trials.columns]
        figure = Figure(figsize=(3.2 * max(1, len(names)), 3), dpi=100, layout="constrained")
        axes = figure.subplots(1, max(1, len(names)), squeeze=False)[0]
        pruned = (self.trials["stop_reason"] == "pruned").to_numpy() if "stop_reason" in self.trials else None
        for ax, name in zip(axes, names):
            _panel(ax, self.trials, name, self.metric, self.space[name], pruned)
        axes[0].set_ylabel(self.metric)
        return figure

    def _repr_png_(self) -> bytes | None:
        if self.trials.empty:
            return None
        buffer = io.BytesIO()
        self.plot().savefig(buffer, format="png")
        return buffer.getvalue()

    def __repr__(self) -> str:
        cell = ["", "The best trial's cell:", *("  " + line for line in self.best_line.splitlines())]
        return "\n".join([super().__repr__(), *(cell if self.best_line else [])])

    def _repr_html_(self) -> str:
        png = self._repr_png_()
        image = (f'<img style="max-width:900px" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                 if png else "")
        cell = f"<h5>The best trial's cell</h5><pre>{html.escape(self.best_line)}</pre>" if self.best_line else ""
        return super()._repr_html_() + cell + image


def _panel(ax, trials: pd.DataFrame, name: str, metric: str, dim, pruned) -> None:
    values, scores = trials[name], trials[metric].to_numpy(dtype=float)
    if isinstance(dim, Range):
        x = values.to_numpy(dtype=float)
        if dim.log:
            ax.set_xscale("log")
    else:
        labels = list(dict.fromkeys(str(v) for v in getattr(dim, "values", values)))
        x = np.array([labels.index(str(v)) if str(v) in labels else -1 for v in values], dtype=float)
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    kept = ~pruned if pruned is not None else np.ones(len(x), bool)
    ax.scatter(x[kept], scores[kept], color="tab:blue", label="trials")
    if pruned is not None and pruned.any():
        ax.scatter(x[pruned], scores[pruned], facecolors="none", edgecolors="tab:red", label="pruned")
        ax.legend(fontsize=8)
    ax.set_xlabel(name)


def make_report(pipe, state, space: dict, note: str = "") -> SweepReport:
    """The report of a finished (or stopped) sweep."""
    done = [t for t in state.trials if t.run is not None]
    report = SweepReport(sweep_id=state.id, method=state.method, metric=state.metric, planned=state.planned,
                         trials=trials_table(state, done), space=space, stop_reason=state.stop_reason,
                         notes=[note] if note else [])
    best = state.best
    if best is None:
        return report
    report.best_run, report.best_params, report.best_line = best.run.name, dict(best.params), best.cell_text
    compared = len(pipe.ledger.runs(pipe.fingerprint, pipe.split_id))
    se, source = standard_error(pipe, best.run, [state.value(t) for t in done])
    report.budget = Budget(compared=compared, metric=state.metric, best=state.value(best), standard_error=se,
                           source=source, higher_is_better=state.higher_is_better)
    accuracy = best.run.best_metrics.get("val_accuracy") if pipe.task != "regression" else None
    report.diagnoses = [f.diagnosis for f in validation_overuse(compared, len(pipe.val), pipe.task, accuracy,
                                                               report.budget)]
    return report


def trials_table(state, trials: list) -> pd.DataFrame:
    """One row per trial: its values, the selection metric, where and why it stopped; best first (NaN last)."""
    if not trials:
        return pd.DataFrame()
    rows = [{"trial": t.number, "run": t.run.name, **{k: _shown(v) for k, v in t.params.items()},
             state.metric: state.value(t), "best_epoch": t.run.best_epoch, "epochs": len(t.run.history),
             "stop_reason": t.run.stop_reason} for t in trials]
    table = pd.DataFrame(rows).set_index("trial")
    return table.sort_values(state.metric, ascending=not state.higher_is_better, na_position="last", kind="stable")


def _shown(value):
    return str(value) if isinstance(value, (tuple, list)) else value


def standard_error(pipe, run, scores: list) -> tuple[float, str]:
    """The standard error of the best run's selection metric, and where it comes from (nbtrain.doctor.budget):
    its per-row losses on the validation split when its rows can be scored one by one, else the trials' spread."""
    per_unit = _per_unit_losses(pipe, run)
    if per_unit is not None and len(per_unit) >= 2:
        if pipe.task == "regression":
            return rmse_standard_error(per_unit, pipe.seed), f"a bootstrap of its {len(per_unit)} validation units"
        return mean_standard_error(per_unit), f"the spread of its log loss over {len(per_unit)} validation rows"
    spread = spread_standard_error(scores)
    return spread, "the spread of the trials' scores, an upper estimate: real differences count as noise there"


def _per_unit_losses(pipe, run) -> np.ndarray | None:
    """Per validation unit: the log loss (classification) or the squared error (regression, per row or forecast
    window) of the run's best weights; None where the metric is not a mean over units (ranking)."""
    if pipe.task not in ("binary", "multiclass", "regression") or run.model is None or not hasattr(run.model, "eval"):
        return None
    data = pipe._fit_data()
    scale = tuple(run.config.get("target_scale", (0.0, 1.0))) if pipe.task == "regression" else (0.0, 1.0)
    predicted = nn_predictions(run.model, data.val, pipe.task, scale)
    y = np.asarray(data.val.y)
    if pipe.task == "regression":  # a forecast window's steps come flattened: one row of errors per window
        if predicted.size != y.size:
            return None
        return ((predicted.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2).mean(axis=1)
    if len(predicted) != len(y):
        return None
    if pipe.task == "binary":
        p = np.clip(predicted.reshape(-1), _EPS, 1 - _EPS)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    p = np.clip(predicted[np.arange(len(y)), y.astype(int)], _EPS, 1)
    return -np.log(p)


def progress_line(state, number: int, run) -> str:
    """Trial k of n of a sweep in progress (nbtrain.sweep.Sweep): its value and how it ended, the best so far,
    how many were pruned. The text view and the widgets (nbtrain.jupyter.sweep_view) both show it."""
    best, shown = state.best, state.metric.removeprefix("val_")
    value = run.best_metrics.get(state.metric, math.nan)
    pruned = sum(t.run is not None and t.run.stop_reason == "pruned" for t in state.trials)
    said = (f"trial {number} of {state.planned} ({run.name}): {shown} {value:.4g}, {run.stop_reason}"
            f" at epoch {len(run.history)}")
    if best is not None:
        said += f"; best so far trial {best.number} ({best.run.name}) {shown} {state.value(best):.4g}"
    return said + (f"; pruned {pruned}" if pruned else "")
