"""Ranking data: queries of documents with graded relevance, and implicit user-item interactions.

Units. A ranking model is judged on the order it gives the rows of one group (the documents of a
query, the candidate items of a user), so the split data a loop walks holds groups:

- `GroupedRows`: rows sorted by group; `len()` = groups. Graded data (train, validation, test) and
  the candidates of implicit validation and test (a user's held-out items plus sampled unobserved
  ones) take this form. Its batches (`GroupBatches`) hand out whole groups.
- `Interactions`: the observed (user, item) pairs of the implicit train split; `len()` = pairs. Its
  batches (`PairBatches`) draw, for every pair, an item the user has not interacted with in train.
- `HeldOut`: the validation or test interactions of implicit feedback as full ranking reads them (every
  user against the whole catalogue, nbtrain.kinds.ranking.retrieval): per user, the held-out items, the items
  left out of the ranking (those the user interacted with before), and the cold starts (counted as misses).

Targets: every batch's y_fit is (rows, 2), relevance and group number (nbtrain.training.ranking).

Implicit feedback is split without leaks (`split_per_user`, or a global cut by time with
nbtrain.data.split.split_by_time), and cleaned by `clean_interactions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from nbtrain.data import fingerprint
from nbtrain.data.batches import EvaluationBatch
from nbtrain.data.clean import CleaningReport, rows_phrase
from nbtrain.data.inputs import naive_times
from nbtrain.data.split import PARTS, allocate
from nbtrain.errors import DataError

MIN_USER_INTERACTIONS = 3   # fewer cannot reach train, validation and test in a per-user split
MAX_DRAWS = 32              # rounds of redrawing a negative that hit a known item, before drawing exactly
_EXAMPLES = 5


# ---- groups of rows: graded queries, and candidates per user ---------------------------------------------

@dataclass(frozen=True)
class GroupedRows:
    """One split whose units are groups: rows sorted by group (stable), group numbers 0..len-1."""

    inputs: tuple               # numpy arrays, one row per candidate: (X[, codes]) or (users, items)
    relevance: np.ndarray       # float32 per row
    groups: np.ndarray          # int64 per row, sorted
    group_labels: pd.Index      # the query (user) of each group, as the user's data names it
    index: pd.Index             # per row: the row labels (graded) or (user, item) pairs (implicit)
    input_names: tuple = ("X",)
    order: np.ndarray | None = None  # how the rows given were reordered (rows given -> sorted by group)

    def __len__(self) -> int:
        return len(self.group_labels)

    @property
    def y(self) -> np.ndarray:
        return self.relevance

    def target(self) -> np.ndarray:
        """(rows, 2) relevance and group, the convention the ranking losses and test scoring read."""
        return np.column_stack([self.relevance.astype(np.float64), self.groups.astype(np.float64)])

    def batches(self, device, scale: tuple = (0.0, 1.0)) -> GroupBatches:
        """The loop's view (nbtrain.data.batches) on `device`; relevance is not rescaled."""
        return GroupBatches(tuple(torch.as_tensor(a, device=device) for a in self.inputs),
                            torch.as_tensor(self.relevance, device=device),
                            torch.as_tensor(self.groups, device=device), len(self), self.input_names)


def group_rows(inputs: tuple, relevance, group_labels, index: pd.Index, input_names=("X",)) -> GroupedRows:
    """GroupedRows from rows in any order: `group_labels` names each row's query or user."""
    codes, labels = pd.factorize(np.asarray(group_labels, dtype=object))
    if (codes < 0).any():
        raise DataError("A ranking row has no query or user; clean() drops such rows: call pipe.clean() first.")
    order = np.argsort(codes, kind="stable")
    return GroupedRows(inputs=tuple(np.asarray(a)[order] for a in inputs),
                       relevance=np.asarray(relevance, dtype=np.float32)[order], groups=codes[order].astype(np.int64),
                       group_labels=pd.Index(labels), index=index[order], input_names=tuple(input_names), order=order)


class GroupBatches:
    """Whole groups per batch: `take(units)` gathers every row of those groups."""

    def __init__(self, inputs: tuple, relevance: torch.Tensor, groups: torch.Tensor, n_groups: int,
                 input_names: tuple):
        self.inputs, self.y, self.groups, self.input_names = inputs, relevance, groups, input_names
        self.y_fit = torch.stack([relevance.float(), groups.float()], dim=1)
        self.counts = torch.bincount(groups, minlength=n_groups)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.X = inputs[0]  # the doctor scans float features for NaN/inf (ids are not scanned)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def device(self) -> torch.device:
        return self.y.device

    def rows_of(self, units: torch.Tensor) -> torch.Tensor:
        counts, starts = self.counts[units], self.starts[units]
        first = torch.cumsum(counts, 0) - counts  # where each group begins in the batch
        return (torch.arange(int(counts.sum()), device=counts.device)
                + torch.repeat_interleave(starts - first, counts))

    def take(self, units: torch.Tensor) -> tuple:
        rows = self.rows_of(units)
        return tuple(t[rows] for t in self.inputs), self.y_fit[rows]

    def load(self, chunks):
        return (self.take(units) for units in chunks)

    def evaluation_batches(self, batch_rows: int):
        """Consecutive whole groups of about `batch_rows` rows (a larger group comes alone)."""
        ends = torch.cumsum(self.counts, 0).cpu().numpy()
        unit = 0
        while unit < len(ends):
            start = int(ends[unit - 1]) if unit else 0
            stop = max(unit + 1, int(np.searchsorted(ends, start + batch_rows, side="right")))
            part = slice(start, int(ends[stop - 1]))
            yield EvaluationBatch(tuple(t[part] for t in self.inputs), self.y_fit[part], self.y[part], stop - unit,
                                  {"indexes": self.groups[part]})
            unit = stop


# ---- implicit feedback: train pairs with sampled negatives -------------------------------------------------

@dataclass(frozen=True)
class Interactions:
    """The observed (user, item) pairs of the train split, as codes; `len()` = pairs."""

    users: np.ndarray          # int64 codes
    items: np.ndarray          # int64 codes
    n_items: int
    known: np.ndarray          # sorted int64 keys user * n_items + item of every train pair
    index: pd.Index            # the rows' labels in the user's DataFrame
    input_names: tuple = ("users", "items")
    negatives: int = 1         # negatives drawn per observed pair, every epoch

    def __len__(self) -> int:
        return len(self.users)

    @property
    def y(self) -> np.ndarray:
        return np.ones(len(self.users), dtype=np.float32)  # every observed pair is a positive

    def batches(self, device, scale: tuple = (0.0, 1.0)) -> PairBatches:
        return PairBatches(*(torch.as_tensor(a, device=device) for a in (self.users, self.items, self.known)),
                           self.n_items, self.negatives)


class PairBatches:
    """Each observed pair with a negative drawn now: an item its user has not interacted with in train.

    Negatives come from torch's global generator, which fit() seeds with the run's seed (and a resumed
    run restores), so a run is reproducible and every epoch sees fresh negatives. A batch of B pairs
    with n negatives each is (1 + n)B rows: the observed items (relevance 1), then the negatives (0);
    pair k and its negatives are group k, so BPR averages over the nB (observed, negative) pairs."""

    input_names = ("users", "items")

    def __init__(self, users: torch.Tensor, items: torch.Tensor, known: torch.Tensor, n_items: int,
                 negatives: int = 1):
        self.users, self.items, self.known, self.n_items = users, items, known, n_items
        self.n_negatives = negatives
        self.y = torch.ones(len(users), device=users.device)
        self.y_fit = torch.stack([self.y, torch.arange(len(users), device=users.device, dtype=torch.float32)], 1)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def device(self) -> torch.device:
        return self.users.device

    def is_known(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        found = torch.searchsorted(self.known, keys).clamp(max=len(self.known) - 1)
        return self.known[found] == keys

    def negatives(self, users: torch.Tensor) -> torch.Tensor:
        items = torch.randint(self.n_items, users.shape, device=users.device)
        for _ in range(MAX_DRAWS):
            clash = self.is_known(users, items)
            if not bool(clash.any()):
                return items
            items[clash] = torch.randint(self.n_items, (int(clash.sum()),), device=users.device)
        return self._exact(users, items, self.is_known(users, items))

    def _exact(self, users: torch.Tensor, items: torch.Tensor, clash: torch.Tensor) -> torch.Tensor:
        """Users who know nearly every item: draw from the items they do not know, one by one."""
        known = self.known.cpu().numpy()
        for row in clash.nonzero().view(-1).tolist():
            user = int(users[row])
            low, high = np.searchsorted(known, [user * self.n_items, (user + 1) * self.n_items])
            free = np.setdiff1d(np.arange(self.n_items), known[low:high] - user * self.n_items, assume_unique=True)
            items[row] = int(free[int(torch.randint(len(free), ()))])
        return items

    def take(self, rows: torch.Tensor) -> tuple:
        users, positives = self.users[rows], self.items[rows]
        owners = users.repeat(self.n_negatives)
        negatives = self.negatives(owners)
        pair = torch.arange(len(rows), device=users.device, dtype=torch.float32)
        relevance = torch.cat([torch.ones_like(pair), torch.zeros(len(owners), device=users.device)])
        return (torch.cat([users, owners]), torch.cat([positives, negatives])), \
            torch.stack([relevance, torch.cat([pair, pair.repeat(self.n_negatives)])], dim=1)

    def load(self, chunks):
        return (self.take(rows) for rows in chunks)

    def evaluation_batches(self, batch_rows: int):
        for start in range(0, len(self), batch_rows):
            rows = torch.arange(start, min(start + batch_rows, len(self)), device=self.device)
            inputs, y_fit = self.take(rows)
            yield EvaluationBatch(inputs, y_fit, y_fit[:, 0], len(rows), {"indexes": y_fit[:, 1].long()})


@dataclass
class InteractionCodes:
    """Codes for the users and items of the train split, learned from train rows only; a user or item
    first seen later has no code (a model of users and items cannot score it: a cold start)."""

    user: object
    item: object

    def fit(self, train: pd.DataFrame) -> InteractionCodes:
        self.users_ = pd.Index(pd.unique(train[self.user]))
        self.items_ = pd.Index(pd.unique(train[self.item]))
        users, items = self.encode(train)
        self.known_ = np.unique(users * self.n_items + items)
        self.popularity_ = np.bincount(items, minlength=self.n_items)
        return self

    @property
    def n_users(self) -> int:
        return len(self.users_)

    @property
    def n_items(self) -> int:
        return len(self.items_)

    def encode(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """User and item codes of rows; -1 where train never saw the user or item."""
        return (self.users_.get_indexer(rows[self.user]).astype(np.int64),
                self.items_.get_indexer(rows[self.item]).astype(np.int64))

    def train_data(self, train: pd.DataFrame, negatives: int = 1) -> tuple[Interactions, int]:
        """The train pairs, less those of users who interacted with every item (no negative exists for
        them), each to be paired with `negatives` drawn items; returns the data and how many such users."""
        users, items = self.encode(train)
        full = np.flatnonzero(np.bincount(users, minlength=self.n_users) >= self.n_items)
        keep = ~np.isin(users, full)
        return Interactions(users[keep], items[keep], self.n_items, self.known_, train.index[keep],
                            negatives=negatives), len(full)

    def matrix(self, rows: pd.DataFrame) -> sparse.csr_matrix:
        """users x items (0/1, CSR) of the rows whose user and item both have codes."""
        users, items = self.encode(rows)
        warm = (users >= 0) & (items >= 0)
        ones = np.ones(int(warm.sum()), dtype=np.float32)
        matrix = sparse.csr_matrix((ones, (users[warm], items[warm])), shape=(self.n_users, self.n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def held_out(self, rows: pd.DataFrame, seen: pd.DataFrame) -> HeldOut:
        """The held-out interactions `rows` for full ranking: each warm user ranks every item except those
        they interacted with in `seen` (train, or train and validation for test). Interactions with items
        train never saw, and every interaction of users train never saw, are cold starts: counted as misses."""
        users, items = self.encode(rows)
        known_user = users >= 0
        cold_users = pd.unique(rows[self.user].to_numpy()[~known_user])
        ranked = np.unique(users[known_user])
        position = np.full(self.n_users, -1)
        position[ranked] = np.arange(len(ranked))
        warm = known_user & (items >= 0)
        relevant = sparse.csr_matrix((np.ones(int(warm.sum()), dtype=np.float32),
                                      (position[users[warm]], items[warm])), shape=(len(ranked), self.n_items))
        relevant.sum_duplicates()
        missed = np.bincount(position[users[known_user & (items < 0)]], minlength=len(ranked))
        excluded = self.matrix(seen)[ranked]
        return HeldOut(users=ranked, relevant=relevant, excluded=excluded, missed=missed,
                       cold_users=len(cold_users), cold_user_interactions=int((~known_user).sum()),
                       user_labels=self.users_[ranked], item_labels=self.items_, names=(self.user, self.item))

    def candidates(self, rows: pd.DataFrame, seen: pd.DataFrame, negatives, rng: np.random.Generator) -> tuple:
        """Per user of `rows` (held-out interactions) known to train: those items (relevance 1) plus
        `negatives` items drawn without replacement from those the user has no interaction with in `seen`
        or `rows` ("all": every such item). Returns (GroupedRows, rows left out as cold starts)."""
        users, items = self.encode(rows)
        warm = (users >= 0) & (items >= 0)
        users, items = users[warm], items[warm]
        seen_users, seen_items = self.encode(seen)
        both = (seen_users >= 0) & (seen_items >= 0)
        excluded = np.unique(np.concatenate([seen_users[both] * self.n_items + seen_items[both],
                                             users * self.n_items + items]))
        extra_users, extra_items = self._negatives(np.unique(users), excluded, negatives, rng)
        all_users = np.concatenate([users, extra_users])
        all_items = np.concatenate([items, extra_items])
        relevance = np.concatenate([np.ones(len(users)), np.zeros(len(extra_users))])
        index = pd.MultiIndex.from_arrays([self.users_[all_users], self.items_[all_items]],
                                          names=[self.user, self.item])
        data = group_rows((all_users, all_items), relevance, self.users_[all_users], index, ("users", "items"))
        return data, int((~warm).sum())

    def _negatives(self, users: np.ndarray, excluded: np.ndarray, negatives, rng) -> tuple[np.ndarray, np.ndarray]:
        every = np.arange(self.n_items)
        chosen_users, chosen_items = [], []
        for user in users:
            low, high = np.searchsorted(excluded, [user * self.n_items, (user + 1) * self.n_items])
            free = np.setdiff1d(every, excluded[low:high] - user * self.n_items, assume_unique=True)
            if negatives != "all" and len(free) > negatives:
                free = np.sort(rng.choice(free, size=negatives, replace=False))
            chosen_users.append(np.full(len(free), user))
            chosen_items.append(free)
        if not chosen_users:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(chosen_users).astype(np.int64), np.concatenate(chosen_items).astype(np.int64)


@dataclass(frozen=True)
class HeldOut:
    """Held-out interactions (validation or test) as full ranking reads them; row b is user `users[b]`."""

    users: np.ndarray                 # codes of the users ranked: those with a train interaction, sorted
    relevant: sparse.csr_matrix       # (users, items): their held-out items that train knows
    excluded: sparse.csr_matrix       # (users, items): items left out of their ranking (interacted with before)
    missed: np.ndarray                # per user: held-out interactions with items train never saw (misses)
    cold_users: int                   # users with held-out interactions and none in train (all misses)
    cold_user_interactions: int
    user_labels: pd.Index             # the users' own labels, per row
    item_labels: pd.Index             # the items' own labels, per code
    names: tuple = ("user", "item")

    def __len__(self) -> int:
        return len(self.users) + self.cold_users

    @property
    def interactions(self) -> int:
        return int(self.relevant.nnz + self.missed.sum() + self.cold_user_interactions)

    @property
    def cold_interactions(self) -> int:
        return int(self.missed.sum() + self.cold_user_interactions)

    def pairs_index(self) -> pd.MultiIndex:
        """(user, item) labels of the relevant pairs, in CSR order."""
        rows = np.repeat(np.arange(len(self.users)), np.diff(self.relevant.indptr))
        return pd.MultiIndex.from_arrays([self.user_labels[rows], self.item_labels[self.relevant.indices]],
                                         names=list(self.names))


# ---- splitting and cleaning implicit feedback -------------------------------------------------------------

def split_per_user(users: pd.Series, ratios, rng: np.random.Generator, times: pd.Series | None = None, *,
                   one: bool = False) -> dict:
    """Cut each user's interactions by the ratios: with `times` the latest go to validation, then test
    (the last fraction); without, random ones (seeded). `one=True`: one interaction each for validation
    and test, the ratios unused (leave-one-out: with times the user's last for test, the one before it
    for validation). Users with fewer than 3 interactions stay wholly in train."""
    codes = pd.factorize(users)[0]
    within = naive_times(times).to_numpy() if times is not None else rng.permutation(len(codes))
    order = np.lexsort((within, codes))  # by user, then by time (or at random) within the user
    sizes = np.bincount(codes)
    rank = np.arange(len(codes)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    shares = {n: ((n - 2, 1, 1) if one else allocate(n, ratios)) if n >= MIN_USER_INTERACTIONS else (n, 0, 0)
              for n in np.unique(sizes)}
    train = np.array([shares[n][0] for n in sizes])[codes[order]]
    val = np.array([shares[n][1] for n in sizes])[codes[order]]
    part = np.empty(len(codes), dtype=int)
    part[order] = np.where(rank < train, 0, np.where(rank < train + val, 1, 2))
    return {name: np.flatnonzero(part == i) for i, name in enumerate(PARTS)}


@dataclass(repr=False)
class InteractionCleaningReport(CleaningReport):
    """The result of clean() on implicit feedback: repeated and incomplete interactions dropped."""

    users: int = 0
    items: int = 0
    sparse_users: int = 0      # users with fewer than MIN_USER_INTERACTIONS interactions
    single_items: int = 0      # items with one interaction
    examples: dict = field(default_factory=dict)

    def _summary(self) -> list[str]:
        lines = [f"{self.rows_in} interactions in, {self.rows_out} kept: {self.users} users, {self.items} items."]
        if self.duplicates:
            shown = ", ".join(f"{d!r} (same as {k!r})" for d, k in self.duplicate_examples)
            lines.append(f"Dropped {rows_phrase(self.duplicates)} repeating a (user, item) pair, the earliest kept "
                         f"(implicit feedback counts an interaction once), e.g. {shown}.")
        for name, count in self.rows_dropped_for_missing.items():
            lines.append(f"Dropped {rows_phrase(count)} missing {name!r}.")
        return lines


def clean_interactions(frame: pd.DataFrame, user, item, time=None) -> tuple[pd.DataFrame, np.ndarray, CleaningReport]:
    """Drop interactions without a user, item (or time) and repeats of a (user, item) pair (the earliest
    is kept); report users and items too sparse to learn or evaluate. Returns (rows, positions, report)."""
    report = InteractionCleaningReport(rows_in=len(frame))
    keep = np.ones(len(frame), dtype=bool)
    for name in (c for c in (user, item, time) if c is not None):
        lacking = keep & frame[name].isna().to_numpy()
        if lacking.any():
            report.rows_dropped_for_missing[name] = int(lacking.sum())
            keep &= ~lacking
    candidates = np.flatnonzero(keep)
    if time is not None:
        candidates = candidates[np.argsort(naive_times(frame[time].iloc[candidates]).to_numpy(), kind="stable")]
    pairs = pd.Series(fingerprint.combine(frame.iloc[candidates], [user, item]))
    repeated = pairs.duplicated(keep="first").to_numpy()
    report.duplicates = int(repeated.sum())
    first = dict(zip(pairs[~repeated], frame.index[candidates[~repeated]]))
    report.duplicate_examples = [(frame.index[candidates[i]], first[pairs.iloc[i]])
                                 for i in np.flatnonzero(repeated)[:_EXAMPLES]]
    positions = np.sort(candidates[~repeated])
    work = frame.iloc[positions]
    if work.empty:
        raise DataError(f"Cleaning left no interactions out of {len(frame)}: {' '.join(report._summary()[1:])}")
    _sparsity(work, user, item, report)
    report.rows_out = len(work)
    return work, positions, report


def _sparsity(work: pd.DataFrame, user, item, report: InteractionCleaningReport) -> None:
    per_user, per_item = work[user].value_counts(), work[item].value_counts()
    report.users, report.items = len(per_user), len(per_item)
    sparse, single = per_user[per_user < MIN_USER_INTERACTIONS], per_item[per_item == 1]
    report.sparse_users, report.single_items = len(sparse), len(single)
    report.examples = {"users": sparse.index[:_EXAMPLES].tolist(), "items": single.index[:_EXAMPLES].tolist()}
    if len(sparse):
        report.warnings.append(
            f"{len(sparse)} of {len(per_user)} users have fewer than {MIN_USER_INTERACTIONS} interactions "
            f"(e.g. {report.examples['users']}): a per-user split keeps them wholly in train, and a time split "
            "may put them only in validation or test, where a model that has never seen them cannot rank for them.")
    if len(single):
        report.warnings.append(
            f"{len(single)} of {len(per_item)} items have a single interaction (e.g. {report.examples['items']}): "
            "too little to learn an item from; in validation or test alone they are cold starts, counted as misses.")
