"""Full-ranking evaluation of implicit feedback, against a brute-force computation, and the classical baselines."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import ndcg_score
from torchmetrics.functional.retrieval import retrieval_average_precision

import nbtrain as nt
from nbtrain.kinds.ranking import retrieval
from nbtrain.kinds.ranking.data import InteractionCodes
from nbtrain.kinds.ranking.recommenders import EASE, ItemKNN, Popularity
from nbtrain.kinds.ranking.retrieval import rank_held_out, rank_with_baseline, rank_with_model


def random_interactions(users=40, items=300, per_user=(3, 40), seed=0):
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{i}") for u in range(users)
            for i in rng.choice(items, size=int(rng.integers(*per_user)), replace=False)]
    return pd.DataFrame(rows, columns=["user", "item"])


def split_rows(frame, seed=0):
    """About 70% of rows to train, 30% held out, plus held-out rows of a new user and of new items."""
    rng = np.random.default_rng(seed)
    held = rng.random(len(frame)) < 0.3
    train, heldout = frame[~held], frame[held]
    cold = pd.DataFrame({"user": ["new-user", "new-user", "u0", "u1"], "item": ["i1", "i2", "new-item", "new-item"]})
    return train, pd.concat([heldout, cold])


def brute_force(scores, train, heldout, codes, k=10):
    """Per user with held-out rows: rank every item the user has no train interaction with, by score
    (ties impossible: continuous random scores), straight from the definitions; cold starts are misses."""
    known = set(zip(*codes.encode(train)))
    ndcg, recall, ap, sk_ndcg, tm_ap = [], [], [], [], []
    for user, rows in heldout.groupby("user", sort=False):
        u = codes.users_.get_indexer([user])[0]
        wanted = set(codes.items_.get_indexer(rows["item"]))
        total = len(rows)
        if u < 0:
            ndcg.append(0.0), recall.append(0.0), ap.append(0.0)
            continue
        candidates = [i for i in range(codes.n_items) if (u, i) not in known]
        ranked = sorted(candidates, key=lambda i: -scores[u, i])
        hits = [i in wanted for i in ranked]
        dcg = sum(1 / np.log2(r + 2) for r, h in enumerate(hits[:k]) if h)
        ideal = sum(1 / np.log2(r + 2) for r in range(min(total, k)))
        ndcg.append(dcg / ideal)
        recall.append(sum(hits[:k]) / total)
        found = np.flatnonzero(hits)
        ap.append(sum((n + 1) / (r + 1) for n, r in enumerate(found)) / total)
        if total == sum(hits):  # no cold item: the libraries' definitions agree exactly
            relevance = np.array(hits, dtype=float)
            sk_ndcg.append(ndcg_score([relevance], [scores[u, ranked]], k=k))
            # torchmetrics counts a score <= 0 as not retrieved: shifted above 0, the order unchanged
            positive = torch.tensor(scores[u, ranked] - scores.min() + 1)
            tm_ap.append(float(retrieval_average_precision(positive, torch.tensor(hits))))
            assert sk_ndcg[-1] == pytest.approx(ndcg[-1]) and tm_ap[-1] == pytest.approx(ap[-1], rel=1e-5)
    return {"ndcg@10": np.mean(ndcg), "map": np.mean(ap), "recall@10": np.mean(recall)}, len(sk_ndcg)


def test_full_ranking_metrics_equal_a_brute_force_computation(monkeypatch):
    frame = random_interactions()
    train, heldout = split_rows(frame)
    codes = InteractionCodes("user", "item").fit(train)
    held = codes.held_out(heldout, train)
    scores = np.random.default_rng(1).normal(size=(codes.n_users, codes.n_items)).astype(np.float32)
    expected, checked_by_libraries = brute_force(scores, train, heldout, codes)
    assert checked_by_libraries >= 10
    monkeypatch.setattr(retrieval, "CHUNK_ELEMENTS", 3 * codes.n_items * 8)  # many chunks, some of one user
    ranked = rank_held_out(lambda users: torch.as_tensor(scores[users.numpy()]), held, torch.device("cpu"))
    assert ranked.metrics() == pytest.approx(expected, rel=1e-6)
    # cold starts: a new user (2 rows, scored 0) and two held-out rows of a new item are in the denominators
    cold = ~(heldout.user.isin(codes.users_) & heldout.item.isin(codes.items_))
    assert held.cold_users == 1 and held.cold_interactions == cold.sum() >= 4
    assert len(ranked.ndcg) == heldout.user.nunique()
    warm = ranked.metrics(warm=True)
    assert warm["ndcg@10"] > ranked.metrics()["ndcg@10"]
    without_cold = heldout[heldout.user.isin(codes.users_) & heldout.item.isin(codes.items_)]
    assert warm == pytest.approx(brute_force(scores, train, without_cold, codes)[0], rel=1e-6)


def test_ties_rank_by_item_order_and_nan_ranks_last():
    train = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "z"]})
    codes = InteractionCodes("user", "item").fit(train)  # items x=0, y=1, z=2
    held = codes.held_out(pd.DataFrame({"user": ["a", "b"], "item": ["z", "x"]}), train)
    flat = rank_held_out(lambda users: torch.zeros(len(users), 3), held, torch.device("cpu"))
    assert flat.ranks.tolist() == [1.0, 1.0]  # a ranks z alone (x, y are its train items); b: x before y
    nan = rank_held_out(lambda users: torch.tensor([[0.0, 0.0, float("nan")], [float("nan"), 1.0, 0.0]]),
                        held, torch.device("cpu"))
    assert np.isinf(nan.ranks).all() and nan.metrics()["ndcg@10"] == 0.0


def test_a_network_is_ranked_with_score_all_or_pair_by_pair_alike():
    frame = random_interactions(users=30, items=120)
    train, heldout = split_rows(frame, seed=2)
    codes = InteractionCodes("user", "item").fit(train)
    held = codes.held_out(heldout, train)
    torch.manual_seed(0)
    model = nt.models.MatrixFactorization(codes.n_users, codes.n_items, dim=8, init_std=1.0)

    class PairsOnly(torch.nn.Module):  # the same model without score_all: scored as model(users, items)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, users, items):
            return self.inner(users, items)

    fast, slow = rank_with_model(model, held), rank_with_model(PairsOnly(model), held)
    np.testing.assert_array_equal(fast.ranks, slow.ranks)
    assert fast.metrics() == pytest.approx(slow.metrics())


def test_a_catalogue_of_100k_items_is_ranked_in_bounded_memory():
    import tracemalloc
    rng = np.random.default_rng(0)
    users, items = 300, 100_000
    train = pd.DataFrame({"user": rng.integers(0, users, 20_000), "item": rng.integers(0, items, 20_000)})
    train = pd.concat([train, pd.DataFrame({"user": np.arange(users), "item": np.arange(users)})]).drop_duplicates()
    heldout = train.groupby("user").head(1).assign(item=lambda f: (f.item + 7) % items).drop_duplicates()
    codes = InteractionCodes("user", "item").fit(train)
    held = codes.held_out(heldout, train)
    model = nt.models.MatrixFactorization(codes.n_users, codes.n_items, dim=32)
    tracemalloc.start()
    ranked = rank_with_model(model, held)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ranked.ndcg) == held.users.size and peak < 200e6  # numpy side; torch's chunks are ~100 MB
    assert (ranked.candidates > 0.99 * codes.n_items).all()


def test_classical_baselines_rank_better_than_chance_on_structured_data():
    from test_ranking import interaction_frame
    frame = interaction_frame(users=150, items=80, seed=3)
    train, heldout = split_rows(frame, seed=4)
    codes = InteractionCodes("user", "item").fit(train)
    held = codes.held_out(heldout, train)
    X = codes.matrix(train)
    chance = rank_held_out(lambda u: torch.rand(len(u), codes.n_items, generator=torch.Generator().manual_seed(0)),
                           held, torch.device("cpu")).metrics(warm=True)["ndcg@10"]
    found = {type(m).__name__: rank_with_baseline(m.fit(X), held).metrics(warm=True)["ndcg@10"]
             for m in (Popularity(), ItemKNN(neighbours=20), EASE(l2=10.0))}
    assert all(v > chance + 0.05 for v in found.values()), (found, chance)
    pairs = EASE(l2=10.0).fit(X)
    users, items = np.array([0, 3, 3]), np.array([5, 1, 2])
    np.testing.assert_allclose(pairs.score(users, items), pairs.score_users(np.array([0, 3]))[[0, 1, 1], [5, 1, 2]])
    with pytest.raises(nt.ConfigError, match=r"EASE needs dense items x items matrices: with 30,000 items each is 3.6 GB"):
        EASE().fit(__import__("scipy").sparse.csr_matrix((2, 30_000), dtype=np.float32))
