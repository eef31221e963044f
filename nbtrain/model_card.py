"""A model card in Markdown: the metrics, the evidence behind them and the doctor's findings.

`pipe.model_card()` (or `nt.load(path).model_card()`) returns a `ModelCard`: a str of Markdown that
a notebook shows rendered, `print()` shows as text, and `card.save("README.md")` writes, ready for a
repository's README or a Hugging Face model card (it opens with the Hub's YAML metadata block). The
sections a person must write (intended use, limitations) are left as marked placeholders: nbtrain
knows the numbers, not what the model is for.
"""

from __future__ import annotations

import math

from nbtrain.evidence import describe
from nbtrain.files import atomic_write

# The Hugging Face Hub's task tags, by (kind, task).
_PIPELINE_TAGS = {("tabular", "regression"): "tabular-regression", ("text", "regression"): "text-classification",
                  "tabular": "tabular-classification", "image": "image-classification",
                  "text": "text-classification", "timeseries": "time-series-forecasting"}
_TODO = "_To be written by the model's owner: {what}._"


class ModelCard(str):
    """Markdown text; shown rendered in a notebook."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def save(self, path):
        """Write the card (e.g. README.md beside the bundle), atomically; returns the path."""
        return atomic_write(path, lambda out: out.write(str(self).encode("utf-8")), doing="writing the model card")


def render(*, run: dict, target, task: str, kind: str, classes, evidence, test=None,
           bundle: str | None = "model.nbtrain") -> ModelCard:
    """The card of one run (`run`: the run's summary, nbtrain.predictor.run_summary; `test`: its TestReport,
    when pipe.test() evaluated it and you want the test scores shown; `bundle`: the bundle's file name in
    the usage example, None where the kind has no bundle yet)."""
    if test is not None and getattr(test, "run", run.get("name")) != run.get("name"):
        from nbtrain.errors import ConfigError
        raise ConfigError(f"test= is the test report of run {test.run!r}, but this card is of run {run.get('name')!r}. "
                          f"Pass that run's report, or model_card(run={test.run!r}).")
    name = run.get("name")
    lines = [*_metadata(kind, task, run), f"# {name}", "",
             f"A {run.get('model') or 'model'} trained with nbtrain to predict `{target}` ({_task_words(task, classes)}).",
             "", "## Intended use", "", _TODO.format(what="who should use this model, for what, and for what not"),
             "", "## Metrics", "", *_metrics(run, test), "", "## Evidence behind the numbers", "",
             *[f"- {line}" for line in describe(evidence)], "", "## Training doctor's findings", "",
             *_findings(evidence), "", "## Limitations", "",
             _TODO.format(what="where the model fails or must not be trusted (data it never saw, groups it "
                               "serves worse)"), "", "## How to use", "", *_usage(bundle), ""]
    return ModelCard("\n".join(lines))


def _usage(bundle: str | None) -> list[str]:
    if bundle is None:
        return ["This kind of model is not saved as an nbtrain bundle yet: its best weights are in the run's "
                "checkpoint (`run.checkpoint`), and the pipeline predicts with `pipe.predict(new_rows)`."]
    return ["```python", "import nbtrain as nt", "", f"model = nt.load({bundle!r})",
            "predictions = model.predict(new_rows)  # a DataFrame, indexed like them", "```"]


def _metadata(kind: str, task: str, run: dict) -> list[str]:
    tag = _PIPELINE_TAGS.get((kind, task)) or _PIPELINE_TAGS.get(kind)
    metrics = [k.removeprefix("val_") for k in run.get("val_metrics", {})]
    return ["---", "library_name: nbtrain", *([f"pipeline_tag: {tag}"] if tag else []),
            "tags:", "- nbtrain", f"- {kind}", *([f"metrics:", *(f"- {m}" for m in metrics)] if metrics else []),
            "---", ""]


def _task_words(task: str, classes) -> str:
    if task in ("binary", "multiclass") and classes:
        return f"{task} classification over {', '.join(repr(c) for c in classes)}"
    return task


def _metrics(run: dict, test) -> list[str]:
    values = {k.removeprefix("val_"): v for k, v in run.get("val_metrics", {}).items()}
    tested = dict(getattr(test, "metrics", {}) or {})
    when = f" (best epoch {run.get('best_epoch')})" if run.get("kind") != "baseline" else ""
    header = f"| metric | validation{when} |" + (" test |" if test is not None else "")
    rows = [header, "|---|---|" + ("---|" if test is not None else "")]
    for metric in dict.fromkeys([*values, *tested]):
        cells = [_number(values.get(metric))] + ([_number(tested.get(metric))] if test is not None else [])
        rows.append(f"| {metric} | " + " | ".join(cells) + " |")
    if test is not None and len(getattr(test, "interval", ())) == 2:
        low, high = test.interval
        rows += ["", f"Test {test.headline}: 95% interval {low:.4g} to {high:.4g} ({test.interval_method})."
                 + (f" A reuse of the test split ({test.reuse_reason!r}): optimistic." if test.reused else "")]
    elif test is None:
        rows += ["", "Test scores: not shown here. Pass the report of pipe.test() as model_card(test=report) to "
                     "include them (the evidence below says whether the test split was evaluated)."]
    return rows


def _number(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.4g}"
    return ""


def _findings(evidence) -> list[str]:
    found = evidence.get("doctor") if isinstance(evidence, dict) else None
    if not isinstance(found, list):
        return ["Not recorded."]
    if not found:
        return ["None: the doctor found nothing to flag."]
    rows = ["| severity | finding | evidence | fix |", "|---|---|---|---|"]
    for item in found:
        if isinstance(item, dict):
            cells = [str(item.get(k, "")).replace("|", "\\|").replace("\n", " ")
                     for k in ("severity", "code", "evidence", "fix")]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def bundle_name(pipe, run) -> str | None:
    """The file name a card's usage example loads: None for the runs pipe.save() does not write (the baselines of
    kinds other than tables and ranking by features: naive forecasts, TF-IDF, the classical recommenders)."""
    if pipe.kind != "tabular" and run.kind == "baseline":
        return None
    return f"{run.name}.nbtrain"
