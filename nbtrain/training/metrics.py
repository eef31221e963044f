"""Validation metrics per task, computed with torchmetrics on the device, read once per epoch.

Each metric declares its direction (torchmetrics' `higher_is_better`), so early stopping and the
runs table never guess it from a name. Multiclass averages are macro: every class counts the same.
Classification adds `log_loss`: the unweighted log loss of the predicted probabilities (scikit-learn's
log_loss), whatever loss the model was trained with, so that every run, network or not, is compared
on one scale (nbtrain.training.runs selects by it). Accuracy, precision, recall and F1 read a decision:
P(positive) >= threshold (0.5 unless given) for binary, the most probable class for multiclass.
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
ORDER = ("accuracy", "precision", "recall", "f1", "auc", "log_loss", "rmse", "mae", "r2", "mape", "smape",
         "ndcg@10", "map", "recall@10")
RANK_K = 10
# what reads probabilities rather than a decision (a threshold or the most probable class)
PROBABILITY_METRICS = ("auc", "log_loss")
_EPS = 1e-7  # scikit-learn's clipping of probabilities in log_loss: a confident mistake costs ~16, not inf


class LogLoss(torchmetrics.Metric):
    """Mean negative log-likelihood of the true class, from probabilities: P(positive) of shape (N,) for
    binary, class probabilities (N, C) for multiclass; probabilities are clipped to [1e-7, 1 - 1e-7]."""

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probabilities: torch.Tensor, target: torch.Tensor) -> None:
        p = probabilities.double()
        if p.ndim == 2:
            true = p.gather(1, target.long().view(-1, 1)).view(-1)
        else:
            true = torch.where(target.view(-1) == 1, p.view(-1), 1 - p.view(-1))
        self.total += -torch.log(true.clamp(_EPS, 1 - _EPS)).sum()
        self.count += true.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def metric_collection(task: str, n_classes: int, kind: str = "tabular",
                      threshold: float = 0.5) -> torchmetrics.MetricCollection:
    if task == "binary":
        at = {"threshold": threshold}
        metrics = {"accuracy": cls.BinaryAccuracy(**at), "precision": cls.BinaryPrecision(**at),
                   "recall": cls.BinaryRecall(**at), "f1": cls.BinaryF1Score(**at), "auc": cls.BinaryAUROC(),
                   "log_loss": LogLoss()}
    elif task == "multiclass":
        options = {"num_classes": n_classes, "average": "macro"}
        metrics = {"accuracy": cls.MulticlassAccuracy(num_classes=n_classes, average="micro"),
                   "precision": cls.MulticlassPrecision(**options), "recall": cls.MulticlassRecall(**options),
                   "f1": cls.MulticlassF1Score(**options), "auc": cls.MulticlassAUROC(**options),
                   "log_loss": LogLoss()}
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
