"""Working with several runs: the tree baseline as a run, picking a run, comparing runs, the test report.

Runs are compared on one scale: the task's selection metric on validation, recorded for every run,
networks and baselines alike, whatever loss trained them (SELECTION):

| task                    | selection metric     | why                                                      |
|-------------------------|----------------------|----------------------------------------------------------|
| binary, multiclass      | val_log_loss (lower) | unweighted, needs no threshold, rewards calibration      |
| regression, time series | val_rmse (lower)     | in the target's units, whatever the loss                 |
| ranking                 | val_ndcg@10 (higher) | the order a user sees                                    |

A run's val_loss is its own training loss (a weighted one for loss="weighted_bce"): it compares only
runs trained with the same loss. `pipe.runs` lists runs best first by the selection metric, and
`test()` evaluates, when not told which, the best run of the session by it: the same order, so the
table's first run of this session is the one tested. Ties (equal values) go to the run recorded first.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

import numpy as np
import pandas as pd

from nbtrain.errors import ConfigError
from nbtrain.training.decision import DEFAULT, choose, class_recall, from_config
from nbtrain.training.evaluation import (HEADLINE, TestReport, comparable_loss, confusion, decide, headline_interval,
                                         nn_predictions, score)
from nbtrain.training.fit import target_scale
from nbtrain.training.metrics import ORDER
from nbtrain.training.run import Run

HIGHER_IS_BETTER = {"accuracy": True, "rmse": False, "ndcg@10": True, "log_loss": False}
SELECTION = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse", "ranking": "ndcg@10"}


def fit_baseline(baseline, train: pd.DataFrame, y_train: np.ndarray, val: pd.DataFrame, y_val: np.ndarray, *,
                 task: str, n_classes: int, name: str, kind: str = "tabular", threshold=DEFAULT,
                 classes=None) -> Run:
    """Fit a baseline on the train split and score it on validation like a network's best epoch: the tree
    baseline on rows, or (kind "timeseries") a naive forecast on windows (nbtrain.kinds.timeseries.naive)."""
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
    run = Run(name=name, config=config, history=history, best_epoch=1, best_value=val_loss, stop_reason="fitted",
              model=baseline, wall_seconds=time.perf_counter() - started, notes=list(getattr(baseline, "notes", [])))
    if task in ("binary", "multiclass"):
        settle_decision(run, predicted, y_val, y_train, threshold, classes or list(range(max(n_classes, 2))))
    return run


def settle_network(run: Run, data, threshold, classes) -> None:
    """After fit: the decision of a classification network's run (see settle_decision), from its best weights'
    validation probabilities. `data` is the run's FitData."""
    if data.task not in ("binary", "multiclass"):
        return
    probabilities = nn_predictions(run.model, data.val, data.task, (0.0, 1.0))
    settle_decision(run, probabilities, np.asarray(data.val.y), np.asarray(data.train.y), threshold, classes)


def settle_decision(run: Run, probabilities: np.ndarray, y_val: np.ndarray, y_train: np.ndarray, threshold,
                    classes) -> None:
    """Choose how the run reads labels from its probabilities (nbtrain.training.decision), record it in the
    run's config with the validation recall of each class, put the validation metrics at that decision into
    the best epoch's row of the history (they were read at 0.5 while training), and say it in the notes."""
    task = "binary" if probabilities.ndim == 1 else "multiclass"
    if not np.isfinite(probabilities).all():  # a model that outputs NaN: nothing to choose a threshold from
        threshold = DEFAULT
    decision = choose(threshold, task, probabilities, y_val, y_train)
    labels = decision.labels(probabilities)
    recall = class_recall(labels, y_val, classes)
    run.config["decision"] = decision.to_config()
    run.config["val_class_recall"] = list(recall.values())
    if run.best_epoch and decision.rule != "default":
        at_best = run.history["epoch"] == run.best_epoch
        for name, value in score(task, len(classes), probabilities, y_val, decision=decision).items():
            run.history.loc[at_best, f"val_{name}"] = value
    shown = ", ".join(f"{c} {r:.2f}" for c, r in recall.items())
    run.notes.append(f"Predicts {decision.describe(classes)}. Validation recall per class: {shown}.")


def headline_value(run: Run, task: str) -> float:
    return run.best_metrics.get(f"val_{HEADLINE[task]}", math.nan)


def selection_value(best_metrics: dict, task: str) -> float:
    """The run's validation value of its task's selection metric (NaN when it has none)."""
    return best_metrics.get(f"val_{SELECTION[task]}", math.nan)


def _rank_key(best_metrics: dict, task: str) -> float:
    """Smaller is better; NaN (no validation score) last."""
    value = selection_value(best_metrics, task)
    if math.isnan(value):
        return math.inf
    return -value if HIGHER_IS_BETTER[SELECTION[task]] else value


def choose_run(runs: list, run, task: str) -> Run:
    """A Run as given, a run by name, or (None) the best run by the task's selection metric (SELECTION);
    ties go to the run recorded first, as in the runs table."""
    if isinstance(run, Run):
        return run
    if run is not None:
        named = [r for r in runs if r.name == run]
        if not named:
            raise ConfigError(f"No run named {run!r} in this pipeline; its runs are {[r.name for r in runs]}.")
        return named[-1]
    scored = [r for r in runs if not math.isnan(selection_value(r.best_metrics, task))]
    if not scored:
        raise ConfigError(f"No run has a validation {SELECTION[task]} to choose by (did every run stop before its "
                          "first epoch ended?). Pass run=... explicitly.")
    return min(scored, key=lambda r: _rank_key(r.best_metrics, task))  # min keeps the first of equals


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
    "interactions": ("best classical baseline", "pipe.baseline() ranks items by their train popularity; "
                     "pipe.baseline('item_knn'), ('ease') and ('als') fit the stronger classical recommenders.",
                     "A classical recommender ranks better: keep it (pipe.test(run={name!r})), or give the network "
                     "more epochs, a tuned lr or weight decay, or more negatives per positive."),
}


def compare_with_baseline(run: Run, runs: list, task: str) -> list[str]:
    """One line for the run's report: does it beat its kind's baseline (BASELINES) on the selection metric
    (SELECTION, what pipe.runs and test() go by), and by how much?"""
    kind = run.config.get("data_kind", "tabular")
    if kind not in BASELINES:
        return []
    what, how, advice = BASELINES[kind]
    baselines = [r for r in runs if r.kind == "baseline"]
    if not baselines:
        return [f"No {what} yet: {how}"]
    metric = SELECTION[task]
    shown = metric.replace("_", " ")
    # several baselines (the naive forecasts): the network faces the strongest
    base = min(baselines, key=lambda r: _rank_key(r.best_metrics, task))
    ours, theirs = selection_value(run.best_metrics, task), selection_value(base.best_metrics, task)
    if math.isnan(ours) or math.isnan(theirs):
        return []
    mine, base_headline = headline_value(run, task), headline_value(base, task)
    also = "" if HEADLINE[task] == metric else f"; {HEADLINE[task]} {{}} vs {{}}"
    if f"{ours:.4g}" == f"{theirs:.4g}":  # equal as shown: no winner to name
        return [f"Ties with the {what} {base.name!r} on validation {shown} ({ours:.4g}"
                f"{also.format(f'{mine:.4g}', f'{base_headline:.4g}')}); on a tie, pipe.runs and test() go by the run "
                "recorded first."]
    gap = abs(ours - theirs)
    if ours > theirs if HIGHER_IS_BETTER[metric] else ours < theirs:
        return [f"Beats the {what} {base.name!r} by {gap:.4g} validation {shown} ({ours:.4g} vs {theirs:.4g}"
                f"{also.format(f'{mine:.4g}', f'{base_headline:.4g}')})."]
    return [f"The {what} {base.name!r} is better by {gap:.4g} validation {shown} ({theirs:.4g} vs {ours:.4g}"
            f"{also.format(f'{base_headline:.4g}', f'{mine:.4g}')}). " + advice.format(name=base.name)]


# The runs table: what to read first, then everything else a run recorded.
_INTEGERS = ("parameters", "best_epoch", "batch_size", "epochs", "samples_per_s")
_SETTINGS = ("parameters", "lr", "batch_size", "epochs", "seconds", "samples_per_s")


def runs_table(records: list[dict], task: str, session: tuple = ()) -> pd.DataFrame:
    """One row per run, best first by the task's selection metric (SELECTION; ties: the run recorded first).

    Key columns first: kind, model, the selection metric, the headline metric (and for binary runs the
    decision threshold), best_epoch, stop_reason, `recorded` (local time, to the second) and `test_pick`
    (the run test() evaluates when not told which: the best of `session`, the names of the runs this
    pipeline holds a model for). Then the other validation metrics, val_loss (the training loss, which
    only compares runs trained with the same loss) and the settings. Counts are integers.
    """
    if not records:
        return pd.DataFrame()
    rows = [_table_row(r) for r in records]
    table = pd.DataFrame(rows).set_index("run")
    for name in _INTEGERS:
        table[name] = pd.to_numeric(table[name], errors="coerce").round().astype("Int64")
    table = table.dropna(axis=1, how="all")
    selection, headline = f"val_{SELECTION[task]}", f"val_{HEADLINE[task]}"
    ranks = pd.Series([_rank_key(r["best_metrics"], task) for r in records], index=table.index)
    table = table.loc[ranks.sort_values(kind="stable").index]
    in_session = [n for n in table.index if n in set(session)]
    table["test_pick"] = table.index == (in_session[0] if in_session else None)
    key = ["kind", "model", selection, headline, "threshold", "best_epoch", "stop_reason", "recorded", "test_pick"]
    metrics = [f"val_{m}" for m in ORDER] + ["val_loss"]
    order = list(dict.fromkeys([*key, *metrics, *_SETTINGS, *table.columns]))
    return table[[c for c in order if c in table.columns]]


def _table_row(record: dict) -> dict:
    config = record["config"]
    decision = config.get("decision") or {}
    threshold = decision.get("threshold") if decision.get("priors") is None else None
    return {"run": record["name"], "kind": record["kind"], "model": record["model"],
            "parameters": record["parameters"], **record["best_metrics"], "threshold": threshold,
            "best_epoch": record["best_epoch"], "stop_reason": record["stop_reason"], "lr": config.get("lr"),
            "batch_size": config.get("batch_size"), "epochs": config.get("epochs"),
            "seconds": round(record["wall_seconds"] or 0, 1), "samples_per_s": record["samples_per_s"] or None,
            "recorded": _local_time(record["recorded_at"]), "sweep": _sweep_trial(config.get("sweep"))}


def _sweep_trial(tag: dict | None) -> str | None:
    """"sweep-1a2b3c4d #3": the sweep a run was a trial of (nbtrain.sweep), or None."""
    return f"{tag['id']} #{tag['trial']}" if isinstance(tag, dict) and "id" in tag else None


def _local_time(iso: str) -> pd.Timestamp:
    """The ledger's UTC ISO timestamp as local wall-clock time to the second (what a reader compares)."""
    moment = datetime.fromisoformat(iso).astimezone()
    return pd.Timestamp(moment.replace(tzinfo=None, microsecond=0))


def test_report(run: Run, predicted: np.ndarray, y: np.ndarray, index: pd.Index, task: str, classes, *,
                seed: int) -> TestReport:
    """The test report of `run`'s predictions; classification labels by the run's decision."""
    n_classes = len(classes) if classes is not None else 1
    decision = from_config(run.config.get("decision"), task) if task in ("binary", "multiclass") else None
    metrics = score(task, n_classes, predicted, y, run.config.get("data_kind", "tabular"), decision)
    val = {k.removeprefix("val_"): v for k, v in run.best_metrics.items() if k != "val_loss"}
    low, high, method = headline_interval(task, predicted, y, seed, decision)
    report = TestReport(run=run.name, metrics=metrics, val_metrics=val, headline=HEADLINE[task],
                        interval=(low, high), interval_method=method,
                        predictions=prediction_frame(predicted, index, task, classes, decision))
    if task == "ranking":
        report.predictions["relevance"] = y[:, 0]
    if decision is not None:
        report.confusion = pd.DataFrame(confusion(task, n_classes, predicted, y, decision), index=classes,
                                        columns=classes)
        report.decision = decision.describe(classes)
        report.class_recall = class_recall(decide(task, predicted, decision), y, classes)
    return report


def prediction_frame(predicted: np.ndarray, index: pd.Index, task: str, classes, decision=None) -> pd.DataFrame:
    """Predictions as reports and predict() show them; classification labels by `decision` (a Decision, or the
    dict a run's config or a bundle holds; None: the default rule)."""
    if task == "regression" and predicted.ndim == 2:  # forecasts: a column per horizon step
        return pd.DataFrame(predicted, index=index, columns=[f"t+{h + 1}" for h in range(predicted.shape[1])])
    if task == "regression":
        return pd.DataFrame({"prediction": predicted}, index=index)
    if task == "ranking":  # index: (query or user, row label or item); rank 1 = first place in its group
        frame = pd.DataFrame({"score": predicted}, index=index)
        frame["rank"] = frame.groupby(level=0, sort=False)["score"].rank(ascending=False, method="first").astype(int)
        return frame
    decision = from_config(decision, task) if isinstance(decision, dict) or decision is None else decision
    labels = pd.Index(classes).take(decide(task, predicted, decision)).to_numpy()  # the labels' own dtype
    if task == "binary":
        return pd.DataFrame({"prediction": labels, f"probability_{classes[1]}": predicted}, index=index)
    frame = pd.DataFrame(predicted, index=index, columns=[f"probability_{c}" for c in classes])
    frame.insert(0, "prediction", labels)
    return frame
