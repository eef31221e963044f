"""Working with several runs: the tree baseline as a run, picking a run, comparing runs, the test report."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from nbtrain.errors import ConfigError
from nbtrain.training.evaluation import (HEADLINE, TestReport, bootstrap_interval, comparable_loss, confusion,
                                         score)
from nbtrain.training.fit import target_scale
from nbtrain.training.run import Run

HIGHER_IS_BETTER = {"accuracy": True, "rmse": False, "ndcg@10": True}


def fit_baseline(baseline, train: pd.DataFrame, y_train: np.ndarray, val: pd.DataFrame, y_val: np.ndarray, *,
                 task: str, n_classes: int, name: str, kind: str = "tabular") -> Run:
    """Fit a baseline on the train split and score it on validation like a network's best epoch: the tree
    baseline on rows, or (kind "timeseries") a naive forecast on windows (nbtrain.models.naive)."""
    started = time.perf_counter()
    baseline.fit(train, y_train)
    predicted = baseline.predict(val)
    scale = target_scale(task, y_train)
    scores = {f"val_{k}": v for k, v in score(task, n_classes, predicted, y_val, kind).items()}
    val_loss = comparable_loss(task, predicted, y_val, scale)
    history = pd.DataFrame([{"epoch": 1, "train_loss": math.nan, "val_loss": val_loss, **scores, "lr": math.nan}])
    config = {"name": name, "kind": "baseline", "model": baseline.estimator_name, "library": baseline.library,
              "seed": baseline.seed, "target_scale": list(scale), "monitor": "val_loss", "mode": "min",
              "train_rows": len(train), "val_rows": len(val), "data_kind": kind,
              **getattr(baseline, "config", {})}
    return Run(name=name, config=config, history=history, best_epoch=1, best_value=val_loss, stop_reason="fitted",
               model=baseline, wall_seconds=time.perf_counter() - started, notes=list(getattr(baseline, "notes", [])))


def headline_value(run: Run, task: str) -> float:
    return run.best_metrics.get(f"val_{HEADLINE[task]}", math.nan)


def choose_run(runs: list, run, task: str) -> Run:
    """A Run as given, a run by name, or (None) the run with the best validation headline metric."""
    if isinstance(run, Run):
        return run
    if run is not None:
        named = [r for r in runs if r.name == run]
        if not named:
            raise ConfigError(f"No run named {run!r} in this pipeline; its runs are {[r.name for r in runs]}.")
        return named[-1]
    scored = [r for r in runs if not math.isnan(headline_value(r, task))]
    if not scored:
        raise ConfigError("No run has a validation score to choose by (did every run stop before its first "
                          "epoch ended?). Pass run=... explicitly.")
    sign = 1 if HIGHER_IS_BETTER[HEADLINE[task]] else -1
    return max(scored, key=lambda r: sign * headline_value(r, task))


# Per data kind: the baseline every network is compared with, how to get it, and the advice when it wins.
# Images have none: a pretrained network is itself the reference there.
BASELINES = {
    "tabular": ("tree baseline", "pipe.baseline() fits gradient-boosted trees to compare with.",
                "On tables, trees often win: consider them (pipe.test(run={name!r})), or give the network more "
                "epochs, capacity or a tuned lr."),
    "timeseries": ("naive forecast", "pipe.baseline() scores the last-value and seasonal naive forecasts.",
                   "The network has not learned more than repeating the past. Give it more epochs, a longer "
                   "lookback or a tuned lr (pipe.lr_find()), or keep the naive forecast."),
    "text": ("TF-IDF baseline", "pipe.baseline() fits TF-IDF n-grams with a linear model to compare with.",
             "A bag of words beats the transformer here: tune the lr (pipe.lr_find()), train longer or on more "
             "rows, or keep the TF-IDF model (pipe.test(run={name!r}))."),
    "interactions": ("popularity baseline", "pipe.baseline() ranks items by their train popularity.",
                     "The model ranks worse than showing everyone the most popular items. Give it more epochs or "
                     "a tuned lr (pipe.lr_find()), or a smaller embedding if it overfits."),
}


def compare_with_baseline(run: Run, runs: list, task: str) -> list[str]:
    """One line for the run's report: does it beat its kind's baseline (BASELINES), and by how much?"""
    kind = run.config.get("data_kind", "tabular")
    if kind not in BASELINES:
        return []
    what, how, advice = BASELINES[kind]
    baselines = [r for r in runs if r.kind == "baseline"]
    if not baselines:
        return [f"No {what} yet: {how}"]
    metric = HEADLINE[task]
    # several baselines (the naive forecasts): the network faces the strongest
    base = (max if HIGHER_IS_BETTER[metric] else min)(baselines, key=lambda r: headline_value(r, task))
    ours, theirs = headline_value(run, task), headline_value(base, task)
    if math.isnan(ours):
        return []
    better = ours > theirs if HIGHER_IS_BETTER[metric] else ours < theirs
    gap = abs(ours - theirs)
    if better:
        return [f"Beats the {what} {base.name!r} by {gap:.4g} validation {metric} ({ours:.4g} vs {theirs:.4g})."]
    return [f"The {what} {base.name!r} is better by {gap:.4g} validation {metric} ({theirs:.4g} vs {ours:.4g}). "
            + advice.format(name=base.name)]


def runs_table(records: list[dict]) -> pd.DataFrame:
    """One row per run, validation metrics at the best epoch side by side, sorted by the monitored
    metric of the latest run (its declared direction)."""
    if not records:
        return pd.DataFrame()
    rows = []
    for r in records:
        config = r["config"]
        rows.append({"run": r["name"], "kind": r["kind"], "model": r["model"], "parameters": r["parameters"],
                     **r["best_metrics"], "best_epoch": r["best_epoch"], "stop_reason": r["stop_reason"],
                     "lr": config.get("lr"), "batch_size": config.get("batch_size"),
                     "epochs": config.get("epochs"), "seconds": round(r["wall_seconds"] or 0, 2),
                     "samples_per_s": round(r["samples_per_s"] or 0), "recorded_at": r["recorded_at"]})
    table = pd.DataFrame(rows).set_index("run")
    latest = records[-1]
    monitor = latest["monitor"] if latest["monitor"] in table.columns else "val_loss"
    return table.sort_values(monitor, ascending=latest["mode"] == "min", na_position="last")


def test_report(run: Run, predicted: np.ndarray, y: np.ndarray, index: pd.Index, task: str, classes, *,
                seed: int) -> TestReport:
    n_classes = len(classes) if classes is not None else 1
    metrics = score(task, n_classes, predicted, y, run.config.get("data_kind", "tabular"))
    val = {k.removeprefix("val_"): v for k, v in run.best_metrics.items() if k != "val_loss"}
    report = TestReport(run=run.name, metrics=metrics, val_metrics=val, headline=HEADLINE[task],
                        interval=bootstrap_interval(task, predicted, y, seed),
                        predictions=prediction_frame(predicted, index, task, classes))
    if task == "ranking":
        report.predictions["relevance"] = y[:, 0]
    if classes is not None:
        report.confusion = pd.DataFrame(confusion(task, n_classes, predicted, y), index=classes, columns=classes)
    return report


def prediction_frame(predicted: np.ndarray, index: pd.Index, task: str, classes) -> pd.DataFrame:
    if task == "regression" and predicted.ndim == 2:  # forecasts: a column per horizon step
        return pd.DataFrame(predicted, index=index, columns=[f"t+{h + 1}" for h in range(predicted.shape[1])])
    if task == "regression":
        return pd.DataFrame({"prediction": predicted}, index=index)
    if task == "ranking":  # index: (query or user, row label or item); rank 1 = first place in its group
        frame = pd.DataFrame({"score": predicted}, index=index)
        frame["rank"] = frame.groupby(level=0, sort=False)["score"].rank(ascending=False, method="first").astype(int)
        return frame
    if task == "binary":
        return pd.DataFrame({"prediction": np.where(predicted >= 0.5, classes[1], classes[0]),
                             f"probability_{classes[1]}": predicted}, index=index)
    frame = pd.DataFrame(predicted, index=index, columns=[f"probability_{c}" for c in classes])
    frame.insert(0, "prediction", np.asarray(classes, dtype=object)[predicted.argmax(axis=1)])
    return frame
