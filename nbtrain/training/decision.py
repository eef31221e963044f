"""From probabilities to a label: the decision rule of a classification run, chosen once and used everywhere.

nbtrain's classifiers give calibrated probabilities (nbtrain.training.losses says how, a weighted loss
included). Which label to predict from them is a separate choice, made after training with
`fit(threshold=...)` (or `baseline(threshold=...)`), stored in the run's config and applied to its
validation metrics, test(), predict() and saved bundles:

| threshold=    | binary: the positive class when                  | multiclass: predict                      |
|---------------|--------------------------------------------------|------------------------------------------|
| 0.5 (default) | P(positive) > 0.5: the fewest errors             | the most probable class                  |
| a float t     | P(positive) > t                                  | (refused: no single threshold)           |
| "balanced"    | P(positive) > the positive share of train        | the largest P(class) / its train share   |
| "f1"          | P(positive) > the t with the best F1 on validation | (refused)                              |

"balanced" is the rule that maximises balanced accuracy (the mean of the per-class recalls) when the
probabilities are calibrated: a rare class's misses count as much as a common class's. It is read
from the train split's class shares, so validation stays an honest check of it. "f1" is fitted on
validation (the best of its distinct predicted probabilities), so the validation F1 of that run is
optimistic by the choice; the test report is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import precision_recall_curve

from nbtrain.errors import ConfigError

DEFAULT = 0.5
RULES = ("balanced", "f1")


@dataclass(frozen=True)
class Decision:
    """How a run turns probabilities into labels. `rule`: "default", "given", "balanced" or "f1"."""

    rule: str = "default"
    threshold: float | None = DEFAULT  # binary: P(positive) above it predicts the positive class
    priors: tuple | None = None        # multiclass "balanced": each class's share of the train rows

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """Class indices: P(positive) > threshold (binary, shape (n,)), or the argmax (multiclass, (n, classes))."""
        probabilities = np.asarray(probabilities)
        if probabilities.ndim == 1:
            return (probabilities > self.threshold).astype(np.int64)
        scores = probabilities / np.asarray(self.priors) if self.priors is not None else probabilities
        return scores.argmax(axis=1).astype(np.int64)

    def describe(self, classes=None) -> str:
        """One line for reports: what is predicted, and why this rule."""
        why = {"default": "the default", "given": "given", "balanced": "balanced: the positive share of train",
               "f1": "the best F1 on validation"}[self.rule]
        if self.threshold is not None and self.priors is None:
            positive = repr(classes[1]) if classes is not None else "positive"
            return f"P({positive}) > {self.threshold:.3g} ({why})"
        if self.priors is not None:
            return "the class with the largest probability relative to its share of train (balanced)"
        return "the most probable class (the default)"

    def to_config(self) -> dict:
        return {"rule": self.rule, "threshold": self.threshold,
                "priors": list(self.priors) if self.priors is not None else None}


def from_config(config: dict | None, task: str = "binary") -> Decision:
    """The decision a run recorded (run.config["decision"]); runs from before it was recorded: the default."""
    if not config:
        return Decision(threshold=DEFAULT if task == "binary" else None)
    priors = config.get("priors")
    return Decision(config.get("rule", "default"), config.get("threshold"), tuple(priors) if priors else None)


def check_rule(threshold, task: str):
    """The fit(threshold=...) value, checked before any training: 0.5, a float in (0, 1), "balanced", "f1"."""
    if threshold == DEFAULT and not isinstance(threshold, bool):
        return DEFAULT
    if task not in ("binary", "multiclass"):
        raise ConfigError(f"threshold={threshold!r} applies to classification; this task is {task!r}. Leave it out.")
    if threshold == "balanced":
        return threshold
    if task == "multiclass":
        raise ConfigError(f"threshold={threshold!r} needs two classes; with several, use threshold='balanced' "
                          "(each class weighed by its rarity) or leave it out (the most probable class).")
    if threshold == "f1":
        return threshold
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 < threshold < 1:
        return float(threshold)
    raise ConfigError(f"threshold={threshold!r} is not a decision rule; use a probability between 0 and 1 (default "
                      "0.5), 'balanced' (P(positive) above its share of train) or 'f1' (the best F1 on validation).")


def choose(rule, task: str, probabilities: np.ndarray, y: np.ndarray, train_y: np.ndarray) -> Decision:
    """The Decision for `rule` (from check_rule), from validation probabilities and targets and the train targets."""
    if task == "multiclass":
        if rule != "balanced":
            return Decision(threshold=None)
        counts = np.bincount(train_y, minlength=probabilities.shape[1]).astype(float)
        return Decision("balanced", None, tuple(np.maximum(counts, 1) / counts.sum()))
    if rule == "balanced":
        return Decision("balanced", float(np.mean(train_y == 1)))
    if rule == "f1":
        return Decision("f1", best_f1_threshold(probabilities, y))
    return Decision("default" if rule == DEFAULT else "given", float(rule))


def best_f1_threshold(probabilities: np.ndarray, y: np.ndarray) -> float:
    """The threshold t that maximises F1 of the positive class for the rule P > t: halfway between the
    chosen cut (scikit-learn's precision_recall_curve, whose rule is P >= cut) and the next lower probability."""
    if not np.any(y == 1):
        return DEFAULT  # nothing to find on this validation split
    precision, recall, cuts = precision_recall_curve(y, probabilities)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    cut = cuts[int(np.argmax(f1))]
    below = probabilities[probabilities < cut]
    return float((cut + below.max()) / 2 if len(below) else cut / 2)


def class_recall(labels: np.ndarray, y: np.ndarray, classes) -> dict:
    """Recall of each class (NaN for a class with no rows): the share of its rows predicted as it."""
    return {c: float(np.mean(labels[y == i] == i)) if np.any(y == i) else float("nan") for i, c in enumerate(classes)}
