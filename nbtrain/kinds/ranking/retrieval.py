"""Full-ranking evaluation of implicit feedback: every user ranks the whole catalogue.

A recommender is used by showing each user the top of a ranking of every item, so that is what is
measured (as RecBole's and Elliot's "full" evaluation, and implicit's `ranking_metrics_at_k`). Per user:
the model scores every item; the items the user interacted with before (train; for test, validation
too) are left out of the ranking; each held-out item's rank is its place among the rest, ties broken
by item order. From those ranks, exactly:

- NDCG@k: sum over held-out items ranked <= k of 1 / log2(1 + rank), over the same sum for an ideal
  ranking of all the user's held-out items;
- recall@k: held-out items ranked <= k / held-out items;
- MAP: the mean over users of average precision over the whole ranking, (1 / held-out items) x sum over
  held-out items of (held-out items ranked at or above it) / its rank.

Held-out interactions a model of users and items cannot score (cold starts: an item, or a user, train
never saw) stay in the denominators as misses; a user train never saw scores 0. The metrics without
them ("warm") are reported beside, so both are known.

Memory: users are scored in chunks of at most CHUNK_ELEMENTS scores (users x items plus each chunk's
held-out items x items for their ranks), so a catalogue of 100,000 items needs ~100 MB whatever the
number of users. A model scores a chunk through `score_all(users) -> (users, items)` when it has one
(matrix factorisation: one matrix product), else as model(users, items) on every (user, item) pair.

Sampled metrics (each user's held-out items among a few sampled items) are another protocol: far
higher, and they can order two models wrongly (Krichene & Rendle 2020). `sampled_label` names them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from nbtrain.kinds.ranking.data import GroupedRows, HeldOut
from nbtrain.training.metrics import RANK_K

CHUNK_ELEMENTS = 1 << 23      # scores held at once: 8M float32 (32 MB), plus the comparisons of one chunk
PAIR_ROWS = 1 << 18           # (user, item) rows per call of a model without score_all
METRIC_NAMES = (f"ndcg@{RANK_K}", "map", f"recall@{RANK_K}")
FULL_LABEL = "full ranking: every item a user has not interacted with"
SAMPLED_WHY = ("sampled metrics rank each user's held-out items among a few sampled items, so they are far higher "
               "than full-ranking ones and not comparable with them, and can even order two models wrongly")


def sampled_label(negatives: int) -> str:
    return f"sampled: {negatives} negatives per user"


@dataclass
class Ranked:
    """Per user (warm users, then one row per cold user): NDCG@k, recall@k and average precision, with cold
    starts counted as misses (`all`) and without them (`warm`); plus each held-out item's rank."""

    ndcg: np.ndarray
    recall: np.ndarray
    ap: np.ndarray
    warm_ndcg: np.ndarray           # per warm user with a held-out item train knows
    warm_recall: np.ndarray
    warm_ap: np.ndarray
    ranks: np.ndarray               # per relevant pair (HeldOut.relevant, CSR order): 1 = first
    scores: np.ndarray              # the model's score of each relevant pair
    candidates: np.ndarray          # per warm user: the items ranked (the catalogue less the excluded)

    def metrics(self, warm: bool = False) -> dict:
        values = (self.warm_ndcg, self.warm_ap, self.warm_recall) if warm else (self.ndcg, self.ap, self.recall)
        return {name: float(v.mean()) if len(v) else float("nan") for name, v in zip(METRIC_NAMES, values)}


def rank_held_out(score, held: HeldOut, device, k: int = RANK_K) -> Ranked:
    """Rank every held-out item of `held` among the catalogue: `score(users) -> (len(users), n_items)`
    tensor for a LongTensor of user codes (see model_scorer)."""
    n_items = held.relevant.shape[1]
    ranks, scores = np.empty(held.relevant.nnz), np.empty(held.relevant.nnz, dtype=np.float32)
    indptr = held.relevant.indptr
    for start, stop in _chunks(np.diff(indptr), n_items):
        users = torch.as_tensor(held.users[start:stop], device=device)
        chunk = score(users).float()
        chunk = torch.where(torch.isnan(chunk), float("-inf"), chunk)  # NaN ranks last, never first
        excluded = held.excluded[start:stop].tocoo()
        chunk[torch.as_tensor(excluded.row, device=device), torch.as_tensor(excluded.col, device=device)] = float("-inf")
        part = slice(indptr[start], indptr[stop])
        rows = torch.as_tensor(np.repeat(np.arange(stop - start), np.diff(indptr[start:stop + 1])), device=device)
        items = torch.as_tensor(held.relevant.indices[part], device=device, dtype=torch.long)
        ranks[part], scores[part] = _ranks(chunk, rows, items)
    return _per_user(held, ranks, scores, k)


def _chunks(relevant_per_user: np.ndarray, n_items: int):
    """Consecutive users whose scores and rank comparisons fit in CHUNK_ELEMENTS (at least one user)."""
    cost = (1 + relevant_per_user) * n_items
    start = 0
    while start < len(cost):
        stop = start + max(1, int(np.searchsorted(np.cumsum(cost[start:]), CHUNK_ELEMENTS, side="right")))
        yield start, stop
        start = stop


def _ranks(chunk: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of each (row, item) among its row's scores: higher scores first, ties by item order.
    A held-out item scored -inf or NaN is a miss (rank inf)."""
    own = chunk[rows, items]
    # items scored above it: a binary search in each row's sorted scores (one sort per row, not a pass per item)
    ascending = torch.sort(-chunk, dim=1).values
    slot = torch.arange(len(rows), device=chunk.device) - torch.searchsorted(rows, rows)  # place among its row's
    wanted = torch.full((chunk.shape[0], int(slot.max()) + 1 if len(slot) else 1), float("inf"), device=chunk.device)
    wanted[rows, slot] = -own
    ahead = torch.searchsorted(ascending, wanted)[rows, slot]
    equal = torch.searchsorted(ascending, wanted, right=True)[rows, slot] - ahead
    tied = torch.nonzero(equal > 1).view(-1)
    if len(tied):  # equal scores: those of earlier items rank first
        earlier = torch.arange(chunk.shape[1], device=chunk.device)[None, :] < items[tied, None]
        ahead[tied] += ((chunk[rows[tied]] == own[tied, None]) & earlier).sum(1)
    rank = (ahead + 1).double().cpu().numpy()
    rank[~torch.isfinite(own).cpu().numpy()] = np.inf
    return rank, own.cpu().numpy()


def _per_user(held: HeldOut, ranks: np.ndarray, scores: np.ndarray, k: int) -> Ranked:
    counts = np.diff(held.relevant.indptr)
    owner = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((ranks, owner))                   # per user, best rank first
    place = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)  # 0-based among the user's
    sorted_ranks = ranks[order]
    hit = sorted_ranks <= k
    gain = np.where(hit, 1 / np.log2(1 + np.minimum(sorted_ranks, k)), 0.0)
    dcg = np.bincount(owner, weights=gain, minlength=len(counts))
    hits = np.bincount(owner, weights=hit, minlength=len(counts))
    precision = np.where(np.isfinite(sorted_ranks), (place + 1) / sorted_ranks, 0.0)
    precision_sum = np.bincount(owner, weights=precision, minlength=len(counts))
    ideal = np.concatenate([[0.0], np.cumsum(1 / np.log2(np.arange(2, k + 2)))])
    values = {}
    for name, total in (("all", counts + held.missed), ("warm", counts)):
        denominator = np.maximum(total, 1)
        values[name] = (dcg / ideal[np.minimum(total, k)].clip(min=1e-12), hits / denominator,
                        precision_sum / denominator)
    cold = np.zeros(held.cold_users)
    known = counts > 0                                   # warm metrics: users with a held-out item train knows
    all_ndcg, all_recall, all_ap = (np.concatenate([v, cold]) for v in values["all"])
    warm_ndcg, warm_recall, warm_ap = (v[known] for v in values["warm"])
    candidates = held.relevant.shape[1] - np.diff(held.excluded.indptr)
    return Ranked(all_ndcg, all_recall, all_ap, warm_ndcg, warm_recall, warm_ap, ranks, scores, candidates)


def model_scorer(model: torch.nn.Module, n_items: int):
    """score(users) -> (len(users), n_items) for a network: its `score_all` when it has one, else
    model(users, items) on every (user, item) pair, PAIR_ROWS rows at a time."""
    if hasattr(model, "score_all"):
        return model.score_all

    def score(users: torch.Tensor) -> torch.Tensor:
        items = torch.arange(n_items, device=users.device)
        pairs_users, pairs_items = users.repeat_interleave(n_items), items.repeat(len(users))
        parts = [model(pairs_users[i:i + PAIR_ROWS], pairs_items[i:i + PAIR_ROWS]).reshape(-1)
                 for i in range(0, len(pairs_users), PAIR_ROWS)]
        return torch.cat(parts).reshape(len(users), n_items)
    return score


@torch.inference_mode()
def rank_with_model(model: torch.nn.Module, held: HeldOut) -> Ranked:
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        return rank_held_out(model_scorer(model, held.relevant.shape[1]), held, device)
    finally:
        model.train(was_training)


def rank_with_baseline(baseline, held: HeldOut) -> Ranked:
    """A classical recommender (nbtrain.kinds.ranking.recommenders): `score_users(codes) -> (users, items)` array."""
    return rank_held_out(lambda users: torch.as_tensor(baseline.score_users(users.cpu().numpy())), held,
                         torch.device("cpu"))


def bootstrap_users(values: np.ndarray, seed: int, resamples: int = 2000) -> tuple[float, float]:
    """95% interval of a mean over users, users resampled with replacement."""
    if not len(values):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.quantile(draws, [0.025, 0.975])
    return float(low), float(high)


def ranks_frame(held: HeldOut, ranked: Ranked) -> pd.DataFrame:
    """One row per held-out (user, item) train knows: its score, its rank among the user's candidates."""
    counts = np.diff(held.relevant.indptr)
    return pd.DataFrame({"score": ranked.scores, "rank": ranked.ranks,
                         "candidates": np.repeat(ranked.candidates, counts), "relevance": 1.0},
                        index=held.pairs_index())


# ---- validation during fit: a cheap loss on sampled pairs, metrics on the full ranking ------------

@dataclass(frozen=True)
class FullRankingSplit:
    """Validation of implicit feedback for fit(): `pairs` (each user's held-out items among a few sampled
    items) give the loop a cheap validation loss; the reported metrics rank the whole catalogue (`held`)."""

    pairs: GroupedRows
    held: HeldOut

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def y(self) -> np.ndarray:
        return self.pairs.y

    @property
    def index(self) -> pd.Index:
        return self.pairs.index

    @property
    def relevance(self) -> np.ndarray:
        return self.pairs.relevance

    def target(self) -> np.ndarray:
        return self.pairs.target()

    def batches(self, device, scale: tuple = (0.0, 1.0)) -> FullRankingBatches:
        return FullRankingBatches(self.pairs.batches(device, scale), self.held)


class FullRankingBatches:
    """The loop's view of FullRankingSplit: the sampled pairs' batches (its loss), and `ranked_metrics(model)`,
    which the loop reads instead of the metrics of those batches (nbtrain.training.loop.evaluate)."""

    def __init__(self, pairs, held: HeldOut):
        self.pairs, self.held = pairs, held
        self.y, self.y_fit, self.X = pairs.y, pairs.y_fit, pairs.X
        self.input_names = pairs.input_names

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def device(self) -> torch.device:
        return self.pairs.device

    def take(self, units: torch.Tensor) -> tuple:
        return self.pairs.take(units)

    def load(self, chunks):
        return self.pairs.load(chunks)

    def evaluation_batches(self, batch_rows: int):
        return self.pairs.evaluation_batches(batch_rows)

    def ranked_metrics(self, model: torch.nn.Module) -> dict:
        return rank_with_model(model, self.held).metrics()


__all__ = ["FullRankingSplit", "Ranked", "rank_held_out", "rank_with_model", "rank_with_baseline",
           "sampled_label", "bootstrap_users", "ranks_frame"]
