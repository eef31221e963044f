"""The loss for a task, chosen with a reason, and the checks that the model's last layer suits it.

| task       | loss="auto"                                                                 |
|------------|-----------------------------------------------------------------------------|
| binary     | BCE with logits; pos_weight = negatives/positives when positives < 20%      |
| multiclass | cross-entropy (loss="weighted_cross_entropy": inverse-frequency weights)    |
| regression | MSE on the standardised target (loss="mae" or "huber" instead)              |
| ranking    | LambdaRank for graded relevance; BPR for implicit feedback (nbtrain.training.ranking) |

loss="focal" (binary) down-weights easy examples (Lin et al. 2017, gamma=2, alpha=0.25).
Ranking losses compare rows within a query or user; they read y_fit of shape (rows, 2): relevance
and group (the convention is in nbtrain.training.ranking).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nbtrain.errors import ConfigError
from nbtrain.training.ranking import BPRLoss, LambdaRankLoss

RARE_POSITIVE_SHARE = 0.2  # below this, BCE gets pos_weight so the rare class is not ignored
LOSSES = {"binary": ("bce", "focal"), "multiclass": ("cross_entropy", "weighted_cross_entropy"),
          "regression": ("mse", "mae", "huber"), "ranking": ("bpr", "lambdarank")}
_LOGIT_LOSSES = (nn.BCEWithLogitsLoss, nn.CrossEntropyLoss)


class BinaryLoss(nn.Module):
    """BCE with logits (or focal loss) for outputs of shape (batch, 1) and 0/1 integer targets."""

    def __init__(self, pos_weight: float | None = None, focal_gamma: float | None = None, alpha: float = 0.25):
        super().__init__()
        self.register_buffer("pos_weight", None if pos_weight is None else torch.tensor([float(pos_weight)]))
        self.focal_gamma, self.alpha = focal_gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype).view_as(logits)
        if self.focal_gamma is None:
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_true = torch.exp(-bce)  # the probability given to the true class
        weight = self.alpha * target + (1 - self.alpha) * (1 - target)
        return (weight * (1 - p_true) ** self.focal_gamma * bce).mean()


class RegressionLoss(nn.Module):
    """MSE, MAE (L1) or Huber on outputs of shape (batch, 1) against float targets."""

    def __init__(self, kind: str = "mse"):
        super().__init__()
        self.kind = kind
        self.fn = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}[kind]

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(output, target.to(output.dtype).view_as(output))


def choose_loss(task: str, loss, y_train: np.ndarray, n_classes: int) -> tuple[nn.Module, str]:
    """Return (loss module, why). `loss` is "auto", a name from LOSSES, or an nn.Module."""
    if task == "ranking":
        return _ranking(loss, y_train)
    if isinstance(loss, nn.Module):
        return loss, f"your {type(loss).__name__}"
    names = LOSSES.get(task, ())
    if loss != "auto" and loss not in names:
        raise ConfigError(f"loss={loss!r} does not fit a {task} task; use 'auto', one of {list(names)}, "
                          "or an nn.Module.")
    if task == "binary":
        return _binary(loss, y_train)
    if task == "multiclass":
        if loss == "weighted_cross_entropy":
            counts = np.bincount(y_train, minlength=n_classes).astype(float)
            weights = len(y_train) / (n_classes * np.maximum(counts, 1))
            return (nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32)),
                    "cross-entropy weighted by inverse class frequency (requested)")
        return nn.CrossEntropyLoss(), f"cross-entropy: {n_classes} classes, one label per row"
    kind = "mse" if loss == "auto" else loss
    return RegressionLoss(kind), {"mse": "mean squared error on the standardised target",
                                  "mae": "mean absolute error (requested; robust to outliers)",
                                  "huber": "Huber loss (requested; quadratic near 0, linear for outliers)"}[kind]


def _binary(loss: str, y_train: np.ndarray) -> tuple[nn.Module, str]:
    positives = float(np.mean(y_train == 1))
    if loss == "focal":
        return BinaryLoss(focal_gamma=2.0), "focal loss (requested): easy examples count less"
    if 0 < positives < RARE_POSITIVE_SHARE:
        weight = (1 - positives) / positives
        return BinaryLoss(pos_weight=weight), (f"BCE with logits, pos_weight={weight:.2f}: positives are "
                                               f"{positives:.1%} of train, so each counts {weight:.1f}x")
    return BinaryLoss(), f"BCE with logits: two classes ({positives:.0%} positive in train)"


def _ranking(loss, y_train: np.ndarray) -> tuple[nn.Module, str]:
    """Ranking learns an order within each query or user: a loss over pairs of its rows, never a
    classification or regression loss over rows one by one."""
    pointwise = isinstance(loss, (BinaryLoss, RegressionLoss, *_LOGIT_LOSSES, nn.MSELoss, nn.L1Loss))
    if pointwise or not isinstance(loss, (str, nn.Module)) or (isinstance(loss, str) and loss not in
                                                                ("auto", *LOSSES["ranking"])):
        shown = type(loss).__name__ if isinstance(loss, nn.Module) else repr(loss)
        raise ConfigError(f"loss={shown} does not fit a ranking task: ranking is judged by the order of the rows "
                          "within each query or user, which a loss scoring each row on its own (classification, "
                          "regression) does not see. Use 'auto', 'lambdarank' (graded relevance), 'bpr' (implicit "
                          "feedback) or your own nn.Module reading (scores, y_fit), y_fit = (relevance, group) per "
                          "row.")
    if isinstance(loss, nn.Module):
        return loss, f"your {type(loss).__name__}"
    levels = np.unique(np.asarray(y_train, dtype=float))
    if len(levels) < 2:  # implicit feedback holds only observed interactions: one level
        if loss == "lambdarank":
            return LambdaRankLoss(), "LambdaRank (requested) on pairs of an observed and a sampled unobserved item"
        return BPRLoss(), ("BPR: implicit feedback has no grades, only interactions, so what there is to learn is "
                           "that a user's observed items rank above the items they did not interact with (pairs "
                           "of an observed item and a sampled unobserved one)")
    if loss == "bpr":
        return BPRLoss(), "BPR (requested): every pair of rows of a query where one is more relevant, unweighted"
    why = (f"graded relevance ({len(levels)} levels, {levels.min():g}-{levels.max():g}): pairs weighted by how "
           "much swapping them changes NDCG, so the top of each query's ranking counts most")
    return LambdaRankLoss(), f"LambdaRank: {why}" if loss == "auto" else f"LambdaRank (requested): {why}"


def check_output_activation(model: nn.Module, loss: nn.Module, task: str) -> None:
    """Catch a squashing last layer paired with a loss that expects raw outputs, before training."""
    last = _last_module(model)
    squash = isinstance(last, (nn.Sigmoid, nn.Softmax, nn.LogSoftmax))
    logits_loss = isinstance(loss, (BinaryLoss, *_LOGIT_LOSSES))
    if squash and logits_loss:
        raise ConfigError(f"The model ends in {type(last).__name__}, but the loss ({type(loss).__name__}) applies "
                          "its own sigmoid/softmax to raw outputs: the squashing would happen twice and learning "
                          "stalls. Remove the final activation; nbtrain applies it when it reports probabilities.")
    if isinstance(last, nn.Sigmoid) and isinstance(loss, (RegressionLoss, nn.MSELoss)) and task != "regression":
        raise ConfigError(f"A sigmoid output trained with {type(loss).__name__} on a {task} task gives vanishing "
                          "gradients for confident mistakes. Drop the Sigmoid and use loss='auto' (BCE with logits).")


def _last_module(model: nn.Module) -> nn.Module | None:
    """The last leaf module registered (for Sequential-style models, the last applied)."""
    leaves = [m for m in model.modules() if not list(m.children())]
    return leaves[-1] if leaves else None
