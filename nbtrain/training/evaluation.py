"""Scoring predictions (torchmetrics), and the final test report.

Predictions here are what the metrics read: P(positive) for binary, class probabilities for
multiclass, values in data units for regression.

Is the test score significantly worse than validation? The test split is resampled with
replacement 2,000 times (seeded); when the validation score lies outside the 95% interval of the
resampled test score, on the bad side, the difference is more than test-set noise: validation was
overfit by repeated model selection (a process failure, not a model failure). The headline metric
is accuracy for classification, RMSE for regression and NDCG@10 for ranking (whose resamples are
whole queries or users).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torchmetrics.classification import BinaryConfusionMatrix, MulticlassConfusionMatrix

from nbtrain.data.preprocess import Arrays
from nbtrain.report import Report
from nbtrain.training.metrics import RANK_K, compute, metric_collection
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


def score(task: str, n_classes: int, predicted: np.ndarray, y: np.ndarray, kind: str = "tabular") -> dict:
    metrics = metric_collection(task, n_classes, kind)
    predicted, y = torch.as_tensor(predicted), torch.as_tensor(y)
    if task == "regression":  # a forecast's (windows, horizon) values are scored step by step, as in training
        predicted, y = predicted.reshape(-1), y.reshape(-1)
    if task == "ranking":  # y: (rows, 2) relevance and group, as the ranking losses read it
        metrics.update(predicted.float().reshape(-1), y[:, 0].float(), indexes=y[:, 1].long())
        return compute(metrics)
    metrics.update(predicted, y)
    return compute(metrics)


def confusion(task: str, n_classes: int, predicted: np.ndarray, y: np.ndarray) -> np.ndarray:
    matrix = BinaryConfusionMatrix() if task == "binary" else MulticlassConfusionMatrix(num_classes=n_classes)
    return matrix(torch.as_tensor(predicted), torch.as_tensor(y)).numpy()


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


def bootstrap_interval(task: str, predicted: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    """95% interval of the headline metric over test resamples."""
    if task == "ranking":  # whole queries (users) are resampled: the rows of one are not independent draws
        per_row = ndcg_per_group(predicted, y[:, 0], y[:, 1], RANK_K)
        if not len(per_row):
            return math.nan, math.nan
    elif task == "regression":
        per_row = (predicted - y) ** 2
        # a forecast window is resampled whole: its horizon steps are not independent draws
        per_row = per_row.reshape(len(per_row), -1).mean(axis=1)
    else:
        labels = (predicted >= 0.5).astype(int) if task == "binary" else predicted.argmax(axis=1)
        per_row = (labels == y).astype(float)
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
    interval: tuple = ()                 # 95% bootstrap interval of the headline test metric
    headline: str = ""
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
                 f"(95% interval {low:.4g}-{high:.4g}); validation {self.val_metrics.get(self.headline, float('nan')):.4g}."]
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
