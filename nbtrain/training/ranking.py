"""Ranking losses and metrics: rows are compared only with the other rows of their group.

The convention the loop relies on (it calls loss_fn(scores, y_fit)): for task "ranking", `y_fit` is a
float tensor of shape (rows, 2); column 0 is the row's relevance (a grade >= 0, or 1 for an observed
interaction and 0 for a sampled negative), column 1 the number of its group (a query, or a user) as
a float. The scores are the model's outputs, (rows,) or (rows, 1).

- `BPRLoss` (Rendle et al. 2009): the mean over every pair (i, j) of one group with rel_i > rel_j of
  -log sigmoid(s_i - s_j). With one observed item and one sampled negative per group it is the
  classic BPR of implicit feedback. With 0/1 relevance only the (relevant, other) pairs are built;
  graded relevance pads each group (G x L x L), as LambdaRank does.
- `LambdaRankLoss` (Burges 2010): the same pairs, each weighted by |delta NDCG|, how much NDCG would
  change if the two rows swapped places in the current ranking; gains 2^rel - 1, discounts
  1 / log2(1 + rank). Dividing by the group's ideal DCG normalises every query to the same scale, and
  the loss is the mean over groups that have at least one pair.

Metrics (nbtrain.training.metrics): NDCG@k reads the relevance grades as gains (the convention of
scikit-learn's ndcg_score and torchmetrics; equal to LambdaRank's 2^rel - 1 for 0/1 relevance); MAP
and recall@k need binary relevance, so they read "relevance > 0". A group without a relevant row
says nothing about the order and is skipped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.functional.retrieval import retrieval_normalized_dcg
from torchmetrics.retrieval import RetrievalMAP, RetrievalNormalizedDCG, RetrievalRecall

EMPTY = "skip"  # what the retrieval metrics do with a group that has no relevant row


def relevance_and_groups(y_fit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the ranking target (rows, 2) into relevance (float) and group numbers (long)."""
    if y_fit.ndim != 2 or y_fit.shape[1] != 2:
        raise ValueError(f"A ranking target has shape (rows, 2): relevance and group; received {tuple(y_fit.shape)}.")
    return y_fit[:, 0].float(), y_fit[:, 1].long()


def padded(scores: torch.Tensor, relevance: torch.Tensor, groups: torch.Tensor) -> tuple:
    """(G, L) matrices of scores and relevance, one row per group (L: its largest size), and the mask of
    real entries: pairwise terms within groups then become batched (G, L, L) tensor operations."""
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(inverse)
    slot[order] = torch.arange(len(groups), device=groups.device) - starts[inverse[order]]
    width = int(counts.max())
    S = scores.new_zeros((len(counts), width))
    R = relevance.new_zeros((len(counts), width))
    mask = torch.zeros((len(counts), width), dtype=torch.bool, device=scores.device)
    S[inverse, slot], R[inverse, slot], mask[inverse, slot] = scores, relevance, True
    return S, R, mask


def _pairs(S: torch.Tensor, R: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ordered pairs (i above j: rel_i > rel_j) of each group, and -log sigmoid(s_i - s_j) for each."""
    better = (R[:, :, None] > R[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    return better, F.softplus(S[:, None, :] - S[:, :, None])  # softplus(-(s_i - s_j)) = -log sigmoid


class BPRLoss(nn.Module):
    """Mean of -log sigmoid(s_i - s_j) over the pairs of a group where row i is more relevant than j."""

    def forward(self, scores: torch.Tensor, y_fit: torch.Tensor) -> torch.Tensor:
        relevance, groups = relevance_and_groups(y_fit)
        scores = scores.reshape(-1).float()
        if bool(((relevance == 0) | (relevance == 1)).all()):  # implicit feedback: only its pairs, not L x L
            better, worse = binary_pairs(relevance, groups)
            # no pair at all (every row equally relevant): 0, still attached to the graph
            return F.softplus(scores[worse] - scores[better]).sum() / max(len(better), 1)
        better, losses = _pairs(*padded(scores, relevance, groups))
        return (losses * better).sum() / better.sum().clamp(min=1)


def binary_pairs(relevance: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row numbers (i, j) of every pair of one group with relevance 1 at i and 0 at j: P x N pairs per group
    of P relevant and N other rows, where padding every group to its largest size would cost L x L."""
    positive, negative = torch.nonzero(relevance > 0).view(-1), torch.nonzero(relevance <= 0).view(-1)
    negative = negative[torch.argsort(groups[negative], stable=True)]
    counts = torch.bincount(groups[negative], minlength=int(groups.max()) + 1 if len(groups) else 0)
    starts = torch.cumsum(counts, 0) - counts
    per_positive = counts[groups[positive]]
    first = torch.cumsum(per_positive, 0) - per_positive
    step = torch.arange(int(per_positive.sum()), device=groups.device) - first.repeat_interleave(per_positive)
    return (positive.repeat_interleave(per_positive),
            negative[starts[groups[positive]].repeat_interleave(per_positive) + step])


class LambdaRankLoss(nn.Module):
    """RankNet pairs weighted by |delta NDCG| of swapping them in the current ranking (see the module)."""

    def __init__(self, gain: str = "exponential"):
        super().__init__()
        if gain not in ("exponential", "linear"):
            raise ValueError(f"gain must be 'exponential' (2^rel - 1) or 'linear' (rel); received {gain!r}.")
        self.gain = gain

    def forward(self, scores: torch.Tensor, y_fit: torch.Tensor) -> torch.Tensor:
        relevance, groups = relevance_and_groups(y_fit)
        S, R, mask = padded(scores.reshape(-1).float(), relevance, groups)
        gains = (torch.pow(2.0, R) - 1 if self.gain == "exponential" else R) * mask
        steps = torch.arange(S.shape[1], device=S.device, dtype=S.dtype)
        ideal = (gains.sort(dim=1, descending=True).values / torch.log2(steps + 2)).sum(dim=1)
        with torch.no_grad():  # the weights are read off the current ranking; gradients flow through the scores
            order = S.masked_fill(~mask, float("-inf")).argsort(dim=1, descending=True, stable=True)
            discount = 1 / torch.log2(order.argsort(dim=1).to(S.dtype) + 2)
            delta = ((gains[:, :, None] - gains[:, None, :]).abs() * (discount[:, :, None] - discount[:, None, :]).abs()
                     / ideal.clamp(min=1e-12)[:, None, None])
        better, losses = _pairs(S, R, mask)
        per_group = (losses * delta * better).sum(dim=(1, 2))
        counted = better.flatten(1).any(dim=1)
        return per_group.sum() / counted.sum().clamp(min=1)


class _Binarised:
    """MAP and recall count relevant rows: a graded relevance counts as relevant when above 0. Their
    per-group values are computed here: torchmetrics (1.9) treats a row scored <= 0 as not retrieved,
    but a model's raw scores may have any sign; only their order within the group means something."""

    def update(self, preds: torch.Tensor, target: torch.Tensor, indexes: torch.Tensor) -> None:
        super().update(preds, target > 0, indexes=indexes)

    @staticmethod
    def _ranked(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The targets in the order of the scores, best first (ties keep the rows' order)."""
        return target[torch.argsort(preds, descending=True, stable=True)].float()


class RelevantMAP(_Binarised, RetrievalMAP):
    """Mean average precision over groups, relevance > 0 counting as relevant."""

    def _metric(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        hits = self._ranked(preds, target)
        precision = torch.cumsum(hits, 0) / torch.arange(1, len(hits) + 1, device=hits.device)
        return (precision * hits).sum() / hits.sum()


class RelevantRecall(_Binarised, RetrievalRecall):
    """Recall@k over groups (relevant rows in the top k / relevant rows), relevance > 0 counting as relevant."""

    def _metric(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        hits = self._ranked(preds, target)
        return hits[: self.top_k].sum() / hits.sum()


def ranking_metrics(k: int) -> dict:
    return {f"ndcg@{k}": RetrievalNormalizedDCG(top_k=k, empty_target_action=EMPTY),
            "map": RelevantMAP(empty_target_action=EMPTY),
            f"recall@{k}": RelevantRecall(top_k=k, empty_target_action=EMPTY)}


def ndcg_per_group(scores: np.ndarray, relevance: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of every group with a relevant row (the groups the mean metric averages), in group order:
    what a bootstrap over queries or users resamples."""
    scores, relevance, groups = (np.asarray(a) for a in (scores, relevance, groups))
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    values = []
    for rows in np.split(order, bounds):
        if relevance[rows].sum() > 0:
            values.append(float(retrieval_normalized_dcg(torch.as_tensor(scores[rows], dtype=torch.float32),
                                                         torch.as_tensor(relevance[rows], dtype=torch.float32),
                                                         top_k=k)))
    return np.asarray(values, dtype=float)
