"""The evidence behind a model's numbers: the record a bundle, a tracker run and a model card carry.

A validation score means little without how it was earned. `collect(pipe, run)` reads it from the
pipeline and its ledger when a model leaves the pipeline (pipe.save, a tracker's finish,
pipe.model_card):

- split: how the rows were split (method, ratios, seed, sizes, time ranges, groups, the reason given
  for a random split of time-ordered data), and the split's id;
- preprocessing: what was fitted, on which rows (the train split only), checked where the fitted
  objects count the rows they saw (scikit-learn's scalers do);
- validation: how many runs were compared on this validation split (the ledger's runs of this
  dataset and split, baselines included) and where this run ranks among them by the metric test()
  picks by: the more runs compared, the more optimistic the best validation score;
- test: whether this split's test rows were evaluated, by which run, when, and whether this run's
  evaluation was the first look at them or a reuse (with its recorded reason);
- doctor: the training doctor's findings on the run.

It is plain JSON (`dict`), so a bundle's manifest holds it and trackers log it as a file.
`describe(evidence)` puts it in sentences; `model_card(...)` renders a Markdown model card.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from nbtrain.training.runs import HIGHER_IS_BETTER, SELECTION, selection_value

VERSION = 1
_SHOWN_EVALUATIONS = 10
# What each kind's preprocess() learns from the train rows (and what it takes from elsewhere).
_FITTED = {
    "tabular": "imputers, scalers and encoders",
    "image": "the class list only; normalisation uses the pretrained model's own statistics",
    "text": "the maximum length (from the train texts' lengths); the tokenizer is pretrained, not fitted",
    "timeseries": "the scaler of each series and of the covariates",
    "ranking": "the feature preprocessing (imputers, scalers, encoders)",
    "interactions": "the user and item index maps",
}


def collect(pipe, run) -> dict:
    """The evidence behind `run`'s numbers, read from `pipe` and its ledger now."""
    return {"version": VERSION, "recorded_at": _now(), "dataset": pipe.fingerprint, "split": _split(pipe),
            "preprocessing": _preprocessing(pipe), "validation": _validation(pipe, run),
            "test": _test(pipe, run), "doctor": [_finding(d) for d in pipe.diagnose(run)]}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _split(pipe) -> dict:
    report = pipe.split_
    times = getattr(report, "time_ranges", None)
    return {"id": report.split_id, "method": report.method, "ratios": [float(r) for r in report.ratios],
            "seed": report.seed, "sizes": {str(k): int(v) for k, v in report.sizes.items()},
            "time_col": _name(getattr(pipe, "time_col", None)), "group_col": _name(getattr(pipe, "group_col", None)),
            "time_ranges": {str(part): [_moment(v) for v in row] for part, row in times.iterrows()}
            if isinstance(times, pd.DataFrame) else None,
            "groups": {str(k): int(v) for k, v in report.groups.items()} if report.groups else None,
            "random_split_reason": report.random_split_reason}


def _moment(value) -> str:
    """A split's first or last time: the date alone where the time of day is midnight (daily or coarser)."""
    stamp = pd.Timestamp(value) if not isinstance(value, str) else None
    return str(stamp.date()) if stamp is not None and stamp == stamp.normalize() else str(value)


def _name(column) -> str | None:
    return None if column is None else str(column)


def _preprocessing(pipe) -> dict:
    kind = "ranking" if pipe.task == "ranking" and pipe.kind == "tabular" else pipe.kind
    train_rows = int(pipe.split_.sizes.get("train", 0))
    seen = sorted(set(_rows_seen(getattr(pipe, "preprocessor_", None))))
    return {"fitted_on": "train", "train_rows": train_rows, "fitted": _FITTED.get(kind, "the preprocessing"),
            "rows_seen_by_fitted_objects": seen or None,
            "checked": bool(seen) and all(n <= train_rows for n in seen)}


def _rows_seen(fitted, depth: int = 0) -> list[int]:
    """How many rows each fitted scikit-learn scaler inside `fitted` saw (its n_samples_seen_): what shows,
    rather than states, that preprocessing learned from the train rows alone."""
    if fitted is None or depth > 6:
        return []
    seen = getattr(fitted, "n_samples_seen_", None)
    found = [int(np.max(seen))] if seen is not None and np.size(seen) else []  # per column: the most any saw
    children = [*(step for _, step in getattr(fitted, "steps", [])),
                *(t for _, t, _ in getattr(fitted, "transformers_", []) if not isinstance(t, str))]
    children += [v for k, v in getattr(fitted, "__dict__", {}).items() if k.endswith("_") and hasattr(v, "get_params")]
    for child in children:
        found += _rows_seen(child, depth + 1)
    return found


def _validation(pipe, run) -> dict:
    records = pipe.ledger.runs(pipe.fingerprint, pipe.split_id)
    if run.name not in {r["name"] for r in records}:
        records = [*records, {"name": run.name, "kind": run.kind, "best_metrics": run.best_metrics}]
    metric = SELECTION.get(pipe.task, "")
    mine = selection_value(run.best_metrics, pipe.task)
    sign = -1 if HIGHER_IS_BETTER.get(metric, False) else 1
    values = [selection_value(r["best_metrics"], pipe.task) for r in records]
    better = sum(1 for v in values if not math.isnan(v) and sign * v < sign * mine)
    return {"runs_compared": len(records), "networks": sum(r["kind"] != "baseline" for r in records),
            "baselines": sum(r["kind"] == "baseline" for r in records), "selected_by": metric,
            "rank": None if math.isnan(mine) else better + 1, "run": run.name, "best_epoch": run.best_epoch,
            "metrics": {k: float(v) for k, v in run.best_metrics.items()}}


def _test(pipe, run) -> dict:
    """The test split's evaluations (any that shares a row with this split's test rows, oldest first)."""
    keys = pipe._test_keys()
    ledger = pipe.ledger
    done = ledger.test_evaluations(rows=keys)
    unfinished = len(ledger.test_evaluations(rows=keys, unfinished=True))
    mine = [e for e in done if e.run_name == run.name]
    if not done:
        status = "untested"
    elif not mine:
        status = "other_run"
    else:
        status = "first_look" if mine[0].id == done[0].id and not mine[0].reused else "reuse"
    return {"status": status, "run": run.name, "test_rows": int(pipe.split_.sizes.get("test", 0)), "unfinished": unfinished,
            "evaluations": [{"run": e.run_name, "split": e.split_id, "at": e.evaluated_at.isoformat(timespec="seconds"),
                             "rows": e.n_rows, "first": i == 0, "reuse_reason": e.reuse_reason}
                            for i, e in enumerate(done[:_SHOWN_EVALUATIONS])],
            "evaluations_total": len(done)}


def _finding(diagnosis) -> dict:
    fields = diagnosis if isinstance(diagnosis, dict) else vars(diagnosis)
    return {k: str(fields.get(k, "")) for k in ("code", "severity", "evidence", "fix")}


# ---- in words -----------------------------------------------------------------------------------


def describe(evidence) -> list[str]:
    """The evidence in sentences (a loaded model's repr, the model card). Tolerates a crafted or partial
    record: a missing part reads as not recorded, never as an error."""
    if not isinstance(evidence, dict):
        return ["Evidence: not recorded (this bundle was written before nbtrain recorded it)."]
    parts = [_split_line(evidence.get("split")), _preprocessing_line(evidence.get("preprocessing")),
             _validation_line(evidence.get("validation")), _test_line(evidence.get("test"))]
    return [line for line in parts if line]


def _split_line(split) -> str:
    if not isinstance(split, dict):
        return "Split: not recorded."
    ratios = "/".join(f"{r:.0%}" for r in split.get("ratios") or [] if isinstance(r, (int, float)))
    sizes = ", ".join(f"{k} {v}" for k, v in (split.get("sizes") or {}).items())
    line = f"Split: {split.get('method')} (ratios {ratios}, seed {split.get('seed')}); rows {sizes}"
    if split.get("group_col") and split.get("groups"):
        groups = ", ".join(f"{k} {v}" for k, v in split["groups"].items())
        line += f"; whole groups of {split['group_col']!r} per split ({groups})"
    if split.get("time_ranges"):
        spans = ", ".join(f"{k} {v[0]} to {v[-1]}" for k, v in split["time_ranges"].items() if isinstance(v, list))
        line += f"; by {split.get('time_col')!r}: {spans}"
    if split.get("random_split_reason"):
        line += f"; a random split of time-ordered data, accepted because {split['random_split_reason']!r}"
    return line + "."


def _preprocessing_line(pre) -> str:
    if not isinstance(pre, dict):
        return "Preprocessing: not recorded."
    seen = pre.get("rows_seen_by_fitted_objects")
    check = (f" (its scalers saw at most {max(seen)} rows)" if pre.get("checked") and seen else "")
    return f"Preprocessing fitted on the {pre.get('train_rows')} train rows only{check}: {pre.get('fitted')}."


def _validation_line(val) -> str:
    if not isinstance(val, dict):
        return "Validation: not recorded."
    count = val.get("runs_compared")
    rank = f", ranked {val['rank']} of {count} by validation {val.get('selected_by')}" if val.get("rank") else ""
    caution = " (the best of many validation scores is optimistic; the test score is the unbiased one)" \
        if isinstance(count, int) and count > 1 else ""
    return (f"Validation: {count} run(s) compared on this validation split ({val.get('networks')} network, "
            f"{val.get('baselines')} baseline){rank}{caution}.")


def _test_line(test) -> str:
    if not isinstance(test, dict):
        return "Test: not recorded."
    evaluations = [e for e in test.get("evaluations") or [] if isinstance(e, dict)]
    mine = next((e for e in evaluations if e.get("run") == test.get("run")), None)
    status = test.get("status")
    if status == "untested":
        return (f"Test: not yet evaluated; the {test.get('test_rows')} test rows were sealed when this was "
                "recorded.")
    if status == "first_look" and mine:
        return f"Test: evaluated once, at {mine.get('at')}: this run's score is the first look at the test split."
    first = evaluations[0] if evaluations else {}
    if status == "other_run":
        return (f"Test: the test split was opened by run {first.get('run')!r} at {first.get('at')}; this run has no "
                "first-look test score (testing it now is a reuse).")
    reasons = "; ".join(f"{e.get('run')!r}: {e.get('reuse_reason')!r}" for e in evaluations if e.get("reuse_reason"))
    return (f"Test: a reuse: the test split was first evaluated by run {first.get('run')!r} at {first.get('at')}, so "
            f"this run's test score is optimistic ({test.get('evaluations_total')} evaluations; reasons given: "
            f"{reasons or 'none'}).")
