"""The loss for a task, chosen with a reason, and the checks that the model's last layer suits it.

| task       | loss="auto"                            | also by name                                           |
|------------|----------------------------------------|--------------------------------------------------------|
| binary     | BCE with logits ("bce"), unweighted    | "weighted_bce" (pos_weight = negatives/positives), "focal" |
| multiclass | cross-entropy ("cross_entropy")        | "weighted_cross_entropy" (inverse-frequency weights)   |
| regression | MSE on the standardised target ("mse") | "mae", "huber"                                         |
| ranking    | LambdaRank for graded relevance; BPR for implicit feedback (nbtrain.training.ranking)   |

Why unweighted by default, even for a rare class: a classifier's outputs are read as probabilities
(reports, log loss, predict), and the unweighted loss is what makes them calibrated. Weighting a
class by w moves the optimum logit by log(w): a weighted BCE is minimised at logit(p) + log(w), not
at logit(p). So a weighted loss here is trained on the model's logits plus log(w) (the prior shift,
"logit adjustment", Menon et al. 2021): the loss still weighs the rare class w times, and the
model's own output stays the calibrated logit. What a rare class needs is a decision rule, not a
distorted probability: fit(threshold="balanced" or "f1"), see nbtrain.training.decision.

Your own torch loss works as given (nn.BCEWithLogitsLoss(), nn.MSELoss(), nn.L1Loss(),
nn.HuberLoss(), nn.CrossEntropyLoss(), ...): it gets targets shaped and typed like the model's
output (TorchLoss), so it computes exactly what the loss of the same name does, a weighted one
(pos_weight=, weight=) with the same prior shift. A combination that cannot work is a ConfigError
before the first step. A loss module of your own class gets the targets as the data gives them:
class indices (batch,) int64, or standardised values (batch,) / forecasts (batch, horizon) float.

loss="focal" (binary) down-weights easy examples (Lin et al. 2017, gamma=2, alpha=0.25); its
probabilities are not calibrated (validation log loss shows how far).
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

LOSSES = {"binary": ("bce", "weighted_bce", "focal"), "multiclass": ("cross_entropy", "weighted_cross_entropy"),
          "regression": ("mse", "mae", "huber"), "ranking": ("bpr", "lambdarank")}
_LOGIT_LOSSES = (nn.BCEWithLogitsLoss, nn.CrossEntropyLoss)
# torch losses whose target is a class index per row; the others compare outputs with targets of their shape
_CLASS_INDEX_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MultiMarginLoss)


class BinaryLoss(nn.Module):
    """BCE with logits (or focal loss) for outputs of shape (batch, 1) and 0/1 integer targets. With
    `pos_weight`, trained on logits + log(pos_weight), so the model's outputs stay calibrated logits."""

    def __init__(self, pos_weight: float | None = None, focal_gamma: float | None = None, alpha: float = 0.25):
        super().__init__()
        self.register_buffer("pos_weight", None if pos_weight is None else torch.tensor([float(pos_weight)]))
        self.focal_gamma, self.alpha = focal_gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype).view_as(logits)
        if self.focal_gamma is None:
            if self.pos_weight is not None:
                logits = logits + torch.log(self.pos_weight)
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


class TorchLoss(nn.Module):
    """One of torch's own losses, given targets shaped and typed like the model's output: a class index
    (int64, one per row) for cross-entropy-like losses, else a float tensor of the output's shape. A class
    weighting (BCEWithLogitsLoss's pos_weight, CrossEntropyLoss's weight) is applied to the logits + log(weight)
    (the prior shift, see the module docstring), so the model's outputs stay calibrated."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss
        self.by_class = isinstance(loss, _CLASS_INDEX_LOSSES)
        weight = getattr(loss, "pos_weight", None) if isinstance(loss, nn.BCEWithLogitsLoss) else \
            getattr(loss, "weight", None) if isinstance(loss, nn.CrossEntropyLoss) else None
        self.register_buffer("offset", None if weight is None else torch.log(weight.detach().float()))

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.offset is not None:
            output = output + self.offset.to(output.dtype)
        if self.by_class:
            return self.loss(output, target.long().view(-1))
        if target.numel() != output.numel():
            raise ConfigError(f"{type(self.loss).__name__} compares each output with a target of the same shape, but "
                              f"the model's output has shape {tuple(output.shape)} and the targets "
                              f"{tuple(target.shape)}. Make the model output one value per target value "
                              "(pipe.n_outputs per row), or use loss='auto'.")
        return self.loss(output, target.to(output.dtype).view_as(output))


def loss_name(loss: nn.Module) -> str:
    """The name a user knows a loss by: the torch loss inside a TorchLoss, else the module's class."""
    return type(loss.loss if isinstance(loss, TorchLoss) else loss).__name__


def choose_loss(task: str, loss, y_train: np.ndarray, n_classes: int) -> tuple[nn.Module, str]:
    """Return (loss module, why). `loss` is "auto", a name from LOSSES, or an nn.Module."""
    if task == "ranking":
        return _ranking(loss, y_train)
    if isinstance(loss, nn.Module):
        return _users_loss(loss, task, n_classes)
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
            return (TorchLoss(nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))),
                    "cross-entropy weighted by inverse class frequency (requested), on logits + log(weight) so the "
                    "class probabilities stay calibrated")
        return nn.CrossEntropyLoss(), f"cross-entropy: {n_classes} classes, one label per row"
    kind = "mse" if loss == "auto" else loss
    return RegressionLoss(kind), {"mse": "mean squared error on the standardised target",
                                  "mae": "mean absolute error (requested; robust to outliers)",
                                  "huber": "Huber loss (requested; quadratic near 0, linear for outliers)"}[kind]


def _binary(loss: str, y_train: np.ndarray) -> tuple[nn.Module, str]:
    positives = float(np.mean(y_train == 1))
    if loss == "focal":
        return BinaryLoss(focal_gamma=2.0), ("focal loss (requested): easy examples count less; its probabilities "
                                             "are not calibrated")
    if loss == "weighted_bce":
        weight = (1 - positives) / positives if 0 < positives < 1 else 1.0
        return BinaryLoss(pos_weight=weight), (
            f"BCE with logits, pos_weight={weight:.2f} (requested): positives are {positives:.1%} of train, so each "
            f"counts {weight:.1f}x; trained on logits + log({weight:.2f}) so the probabilities stay calibrated")
    return BinaryLoss(), f"BCE with logits: two classes ({positives:.1%} positive in train), probabilities calibrated"


def _users_loss(loss: nn.Module, task: str, n_classes: int) -> tuple[nn.Module, str]:
    """A loss module the user passed: torch's own get targets shaped like the output (TorchLoss); a pairing
    that cannot work fails here, before any training."""
    name = type(loss).__name__
    if not type(loss).__module__.startswith("torch.nn"):
        return loss, f"your {name}"
    if isinstance(loss, nn.BCELoss):
        raise ConfigError("nn.BCELoss reads probabilities, but nbtrain reads a classifier's outputs as logits (it "
                          "applies the sigmoid itself when it reports probabilities). Use nn.BCEWithLogitsLoss() "
                          "(the same loss, numerically stable) or loss='auto', and no final Sigmoid.")
    by_class = isinstance(loss, _CLASS_INDEX_LOSSES)
    if by_class and task != "multiclass":
        use = ("nn.BCEWithLogitsLoss() or loss='auto'" if task == "binary" else
               "nn.MSELoss(), nn.L1Loss() or nn.HuberLoss()")
        logit = " (the logit of the positive class)" if task == "binary" else ""
        raise ConfigError(f"{name} needs one output per class and a class index per row, but this {task} task's model "
                          f"has {n_classes} output per row{logit}. Use {use}.")
    if not by_class and task == "multiclass":
        raise ConfigError(f"{name} compares each output with a target of the same shape, but this multiclass task's "
                          f"targets are one class index per row (its model has {n_classes} outputs per row). Use "
                          "nn.CrossEntropyLoss() or loss='auto'.")
    wrapped = TorchLoss(loss)
    shift = " on logits + log(weight), so the probabilities stay calibrated" if wrapped.offset is not None else ""
    return wrapped, f"your {name}, with targets shaped like the model's output{shift}"


def _ranking(loss, y_train: np.ndarray) -> tuple[nn.Module, str]:
    """Ranking learns an order within each query or user: a loss over pairs of its rows, never a
    classification or regression loss over rows one by one."""
    pointwise = isinstance(loss, (BinaryLoss, RegressionLoss, TorchLoss, *_LOGIT_LOSSES, nn.MSELoss, nn.L1Loss))
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
    inner = loss.loss if isinstance(loss, TorchLoss) else loss
    squash = isinstance(last, (nn.Sigmoid, nn.Softmax, nn.LogSoftmax))
    logits_loss = isinstance(inner, (BinaryLoss, *_LOGIT_LOSSES))
    if squash and logits_loss:
        raise ConfigError(f"The model ends in {type(last).__name__}, but the loss ({type(inner).__name__}) applies "
                          "its own sigmoid/softmax to raw outputs: the squashing would happen twice and learning "
                          "stalls. Remove the final activation; nbtrain applies it when it reports probabilities.")
    if isinstance(last, nn.Sigmoid) and isinstance(inner, (RegressionLoss, nn.MSELoss)) and task != "regression":
        raise ConfigError(f"A sigmoid output trained with {type(inner).__name__} on a {task} task gives vanishing "
                          "gradients for confident mistakes. Drop the Sigmoid and use loss='auto' (BCE with logits).")


def _last_module(model: nn.Module) -> nn.Module | None:
    """The last leaf module registered (for Sequential-style models, the last applied)."""
    leaves = [m for m in model.modules() if not list(m.children())]
    return leaves[-1] if leaves else None
