"""Scoring predictions (torchmetrics), and the final test report.

Predictions here are what the metrics read: P(positive) for binary, class probabilities for
multiclass, values in data units for regression.

Labels come from the run's decision (nbtrain.training.decision: P(positive) > 0.5 by default).

Is the test score significantly worse than validation? The headline metric gets a 95% interval:
for accuracy, a proportion of independent rows, the Wilson score interval (scipy), which stays
honest at 0% and 100% and on small splits (a bootstrap of 51 rows all right collapses to "1-1");
for RMSE and NDCG@10, a bootstrap: the test split resampled with replacement 2,000 times (seeded;
a forecast window or a ranked query is resampled whole). When the validation score lies outside
that interval, on the bad side, the difference is more than test-set noise: validation was overfit
by repeated model selection (a process failure, not a model failure). The headline metric is
accuracy for classification, RMSE for regression and NDCG@10 for ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest
from torchmetrics.classification import MulticlassConfusionMatrix

from nbtrain.data.preprocess import Arrays
from nbtrain.report import Report
from nbtrain.training.decision import Decision
from nbtrain.training.metrics import ORDER, PROBABILITY_METRICS, RANK_K, compute, metric_collection
from nbtrain.training.metrics import predictions as to_predictions
from nbtrain.training.ranking import ndcg_per_group

BOOTSTRAP_RESAMPLES = 2000
HEADLINE = {"binary": "accuracy", "multiclass": "accuracy", "regression": "rmse", "ranking": "ndcg@10"}


@torch.inference_mode()
def nn_predictions(model, arrays, task: str, target_scale: tuple, batch_rows: int = 8192) -> np.ndarray:
    """Run a trained network over Arrays (on the model's device) and return its predictions."""
    model.eval()
    device = next(model.parameters()).device
    mean, std = target_scale
    parts = []
    for batch in arrays.batches(device).evaluation_batches(batch_rows):
        out = model(*batch.inputs).float()
        parts.append(to_predictions(task, out * std + mean if task == "regression" else out).cpu())
    return torch.cat(parts).numpy()


def predict_rows(model, preprocessor, rows: pd.DataFrame, task: str, target_scale: tuple) -> np.ndarray:
    """Predictions for cleaned rows: a network through the fitted preprocessor, the tree baseline
    (which has its own feature handling) directly. The one path test(), predict() and bundles share."""
    if not isinstance(model, torch.nn.Module):
        return model.predict(rows)
    if hasattr(preprocessor, "split_data"):  # images, text, windows: the kind's own preprocessing
        return nn_predictions(model, preprocessor.split_data(rows), task, tuple(target_scale))
    X, codes = preprocessor.transform(rows)
    arrays = Arrays(X=X, codes=codes, y=np.zeros(len(X), dtype=np.float32), index=rows.index)
    return nn_predictions(model, arrays, task, tuple(target_scale))


def score(task: str, n_classes: int, predicted: np.ndarray, y: np.ndarray, kind: str = "tabular",
          decision: Decision | None = None) -> dict:
    """The task's metrics of these predictions; for classification, labels by `decision` (default: the default rule)."""
    metrics = metric_collection(task, n_classes, kind)
    if task in ("binary", "multiclass"):
        labels = torch.as_tensor(decide(task, predicted, decision))
        predicted, y = torch.as_tensor(predicted), torch.as_tensor(y)
        values = {}
        for name, metric in metrics.items():  # probabilities for AUC and log loss, the decided labels for the rest
            metric.update(predicted if name in PROBABILITY_METRICS else labels, y)
            values[name] = float(metric.compute())
        return {name: values[name] for name in ORDER if name in values}
    predicted, y = torch.as_tensor(predicted), torch.as_tensor(y)
    if task == "regression":  # a forecast's (windows, horizon) values are scored step by step, as in training
        predicted, y = predicted.reshape(-1), y.reshape(-1)
    if task == "ranking":  # y: (rows, 2) relevance and group, as the ranking losses read it
        metrics.update(predicted.float().reshape(-1), y[:, 0].float(), indexes=y[:, 1].long())
        return compute(metrics)
    metrics.update(predicted, y)
    return compute(metrics)


def decide(task: str, predicted: np.ndarray, decision: Decision | None = None) -> np.ndarray:
    """Class indices from probabilities by the run's decision (default: P(positive) > 0.5, or the argmax)."""
    return (decision or Decision(threshold=0.5 if task == "binary" else None)).labels(np.asarray(predicted))


def confusion(task: str, n_classes: int, predicted: np.ndarray, y: np.ndarray,
              decision: Decision | None = None) -> np.ndarray:
    matrix = MulticlassConfusionMatrix(num_classes=max(n_classes, 2))
    return matrix(torch.as_tensor(decide(task, predicted, decision)), torch.as_tensor(y)).numpy()


def comparable_loss(task: str, predicted: np.ndarray, y: np.ndarray, target_scale: tuple) -> float:
    """The default loss of a network on these predictions (log loss, or MSE on the standardised target),
    so that models that are not networks (the tree baseline) sit in the same val_loss column."""
    eps = 1e-7
    if task == "binary":
        p = np.clip(predicted, eps, 1 - eps)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    if task == "multiclass":
        return float(-np.mean(np.log(np.clip(predicted[np.arange(len(y)), y], eps, 1))))
    return float(np.mean(((predicted - y) / target_scale[1]) ** 2))


def headline_interval(task: str, predicted: np.ndarray, y: np.ndarray, seed: int,
                      decision: Decision | None = None) -> tuple[float, float, str]:
    """95% interval of the headline metric on the test split: (low, high, method). Accuracy is a proportion
    of independent rows: Wilson's score interval (scipy); RMSE and NDCG@10: a bootstrap."""
    if task not in ("binary", "multiclass"):
        return (*bootstrap_interval(task, predicted, y, seed), "bootstrap")
    if not len(y):
        return math.nan, math.nan, "Wilson"
    right = int(np.sum(decide(task, predicted, decision) == y))
    interval = binomtest(right, len(y)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high), "Wilson"


def bootstrap_interval(task: str, predicted: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    """95% interval of the headline metric over test resamples (classification: of accuracy at 0.5 / argmax)."""
    if task == "ranking":  # whole queries (users) are resampled: the rows of one are not independent draws
        per_row = ndcg_per_group(predicted, y[:, 0], y[:, 1], RANK_K)
        if not len(per_row):
            return math.nan, math.nan
    elif task == "regression":
        per_row = (predicted - y) ** 2
        # a forecast window is resampled whole: its horizon steps are not independent draws
        per_row = per_row.reshape(len(per_row), -1).mean(axis=1)
    else:
        per_row = (decide(task, predicted) == y).astype(float)
    rng = np.random.default_rng(seed)
    draws = per_row[rng.integers(0, len(per_row), size=(BOOTSTRAP_RESAMPLES, len(per_row)))].mean(axis=1)
    if task == "regression":
        draws = np.sqrt(draws)
    low, high = np.quantile(draws, [0.025, 0.975])
    return float(low), float(high)


@dataclass(repr=False)
class TestReport(Report):
    """The final, once-only evaluation on the test split."""

    __test__ = False
    title = "Test report"
    run: str = ""
    metrics: dict = field(default_factory=dict)
    val_metrics: dict = field(default_factory=dict)
    interval: tuple = ()                 # 95% interval (low, high) of the headline test metric
    interval_method: str = "bootstrap"   # "Wilson" (accuracy) or "bootstrap" (RMSE, NDCG@10)
    headline: str = ""
    decision: str = ""                   # classification: how labels were read from the probabilities
    class_recall: dict = field(default_factory=dict)  # classification: test recall of each class
    confusion: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    reused: bool = False
    reuse_reason: str | None = None
    diagnoses: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    units: str = "rows"                  # what a prediction is of: rows, or forecast windows for time series

    def _summary(self) -> list[str]:
        low, high = self.interval
        shown = len(self.predictions) if self.predictions is not None else 0
        lines = [f"Run {self.run!r} on {shown} test {self.units}. "
                 f"Test {self.headline} {self.metrics.get(self.headline, float('nan')):.4g} "
                 f"(95% interval {low:.4g}-{high:.4g}, {self.interval_method}); "
                 f"validation {self.val_metrics.get(self.headline, float('nan')):.4g}."]
        if self.decision:
            recall = ", ".join(f"{c} {r:.2f}" for c, r in self.class_recall.items())
            lines.append(f"Predicts {self.decision}. Test recall per class: {recall}.")
        if self.reused:
            lines.append(f"This test split was evaluated before: the estimate is optimistic "
                         f"(reason given: {self.reuse_reason!r}).")
        return lines

    def _sections(self):
        table = pd.DataFrame({"test": self.metrics, "validation": self.val_metrics}).round(4)
        sections = [("Metrics", table)]
        if self.confusion is not None:
            sections.append(("Confusion matrix (rows: true, columns: predicted)", self.confusion))
        sections += [("Diagnosis", [f"{d.code}: {d.evidence} {d.fix}" for d in self.diagnoses])] if self.diagnoses else []
        return sections
