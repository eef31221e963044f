"""Validation metrics per task, computed with torchmetrics on the device, read once per epoch.

Each metric declares its direction (torchmetrics' `higher_is_better`), so early stopping and the
runs table never guess it from a name. Multiclass averages are macro: every class counts the same.
Forecasts (kind "timeseries") add MAPE and sMAPE, as fractions (0.05 is 5%), over every horizon step.
Ranking metrics are per query (torchmetrics' retrieval metrics, grouped by `indexes`), then averaged:
NDCG and recall at RANK_K, and mean average precision. NDCG keeps graded relevance as its gains; MAP
and recall count relevance > 0 as relevant; queries without a relevant row are skipped
(nbtrain.training.ranking).
"""

from __future__ import annotations

import torch
import torchmetrics
from torchmetrics import classification as cls
from torchmetrics import regression as reg

from nbtrain.errors import ConfigError
from nbtrain.training.ranking import ranking_metrics

# The order reports show them in (torchmetrics' collection sorts by name).
ORDER = ("accuracy", "precision", "recall", "f1", "auc", "rmse", "mae", "r2", "mape", "smape",
         "ndcg@10", "map", "recall@10")
RANK_K = 10


def metric_collection(task: str, n_classes: int, kind: str = "tabular") -> torchmetrics.MetricCollection:
    if task == "binary":
        metrics = {"accuracy": cls.BinaryAccuracy(), "precision": cls.BinaryPrecision(),
                   "recall": cls.BinaryRecall(), "f1": cls.BinaryF1Score(), "auc": cls.BinaryAUROC()}
    elif task == "multiclass":
        options = {"num_classes": n_classes, "average": "macro"}
        metrics = {"accuracy": cls.MulticlassAccuracy(num_classes=n_classes, average="micro"),
                   "precision": cls.MulticlassPrecision(**options), "recall": cls.MulticlassRecall(**options),
                   "f1": cls.MulticlassF1Score(**options), "auc": cls.MulticlassAUROC(**options)}
    elif task == "ranking":
        # no compute groups: NDCG reads graded targets, MAP and recall binarised ones, so their states may
        # agree on a first batch of 0/1 relevance and differ later; a shared state would be wrong then
        return torchmetrics.MetricCollection(ranking_metrics(RANK_K), compute_groups=False)
    else:
        metrics = {"rmse": reg.MeanSquaredError(squared=False), "mae": reg.MeanAbsoluteError(),
                   "r2": reg.R2Score()}
        if kind == "timeseries":
            metrics.update(mape=reg.MeanAbsolutePercentageError(), smape=reg.SymmetricMeanAbsolutePercentageError())
    return torchmetrics.MetricCollection(metrics)


def compute(metrics: torchmetrics.MetricCollection) -> dict:
    """The metrics' values as floats, in ORDER."""
    values = metrics.compute()
    return {name: float(values[name]) for name in ORDER if name in values}


def predictions(task: str, outputs: torch.Tensor) -> torch.Tensor:
    """What the metrics read: P(positive) for binary, class probabilities for multiclass, values otherwise."""
    if task == "binary":
        return torch.sigmoid(outputs.float()).view(-1)
    if task == "multiclass":
        return torch.softmax(outputs.float(), dim=1)
    return outputs.float().reshape(-1)


def targets(task: str, y: torch.Tensor) -> torch.Tensor:
    """What the metrics compare with: one value per prediction (a forecast's horizon steps flattened;
    ranking relevance as 0/1 for MAP and recall, graded relevance kept for NDCG — see ranking)."""
    return y.reshape(-1) if task in ("regression", "ranking") else y


def direction(name: str, task: str, n_classes: int = 2, kind: str = "tabular") -> str:
    """"max" or "min" for a monitored quantity: a loss, or a metric of this task."""
    if name.endswith("loss"):
        return "min"
    metrics = metric_collection(task, max(n_classes, 2), kind)
    key = name.removeprefix("val_")
    if key not in metrics:
        raise ConfigError(f"monitor={name!r} is not something this {task} run measures; use 'auto', 'val_loss' "
                          f"or one of {['val_' + k for k in metrics.keys()]}.")
    return "max" if metrics[key].higher_is_better else "min"
