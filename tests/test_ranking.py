"""Ranking: pairwise losses, retrieval metrics, leak-free splits, negatives, and both pipelines end to end."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import ndcg_score

import nbtrain as nt
from nbtrain.kinds.ranking.data import Interactions, split_per_user
from nbtrain.kinds.ranking.retrieval import rank_held_out, rank_with_model
from nbtrain.training.evaluation import bootstrap_interval, score
from nbtrain.training.losses import choose_loss
from nbtrain.training.metrics import compute, metric_collection
from nbtrain.training.ranking import BPRLoss, LambdaRankLoss, RelevantRecall, ndcg_per_group


def target(relevance, groups):
    return torch.tensor(np.column_stack([relevance, groups]), dtype=torch.float32)


def softplus(x):
    return math.log1p(math.exp(x))


def graded_frame(n_queries=60, docs=8, seed=0):
    """Query-document rows whose relevance (0-3) follows two of the features, with noise."""
    rng = np.random.default_rng(seed)
    query = np.repeat([f"q{i}" for i in range(n_queries)], docs)
    x1, x2, x3 = rng.normal(size=(3, len(query)))
    relevance = np.digitize(x1 + 0.5 * x2 + rng.normal(scale=0.4, size=len(query)), [0.3, 1.2, 2.0])
    return pd.DataFrame({"query": query, "x1": x1, "x2": x2, "x3": x3, "relevance": relevance})


def interaction_frame(users=120, items=60, seed=0, times=False):
    """Implicit feedback from a latent-factor model: user u picks items with probability ~ exp(p_u . q_i)."""
    rng = np.random.default_rng(seed)
    affinity = rng.normal(size=(users, 3)) @ rng.normal(size=(3, items)) * 1.5
    rows = []
    for u in range(users):
        p = np.exp(affinity[u] - affinity[u].max())
        chosen = rng.choice(items, size=int(rng.integers(6, 16)), replace=False, p=p / p.sum())
        rows += [(f"u{u}", f"i{i}") for i in chosen]
    frame = pd.DataFrame(rows, columns=["user", "item"])
    if times:
        frame["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.permutation(len(frame)), unit="h")
    return frame


# ---- losses ----------------------------------------------------------------------------------

def test_bpr_is_the_mean_of_minus_log_sigmoid_over_pairs_within_groups():
    # group 0: rows 0 and 3; group 1: rows 1, 2 and 4 (interleaved: only the group column joins them)
    scores = torch.tensor([2.0, 0.0, 1.0, 0.5, -1.0], requires_grad=True)
    y = target([1, 1, 0, 0, 0], [0, 1, 1, 0, 1])
    # pairs: (2.0 over 0.5), (0.0 over 1.0), (0.0 over -1.0); -log sigmoid(d) = log(1 + e^-d)
    expected = (softplus(-1.5) + softplus(1.0) + softplus(-1.0)) / 3
    loss = BPRLoss()(scores, y)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert scores.grad[0] < 0 < scores.grad[3]  # descending raises the positive, lowers the negative
    flat = BPRLoss()(torch.tensor([1.0, 2.0], requires_grad=True), target([1, 1], [0, 0]))
    assert flat.item() == 0.0 and flat.requires_grad  # no pair to order: nothing to learn


def test_lambdarank_weights_pairs_by_the_ndcg_change_of_swapping_them():
    # query 0: relevance 2, 0, 1 scored 0.0, 1.0, 0.5: ranked doc1, doc2, doc0 (discounts 1, 1/log2 3, 1/2)
    # query 1: relevance 1, 0 scored 0.0, 1.0: ranked doc1, doc0 (discounts 1, 1/log2 3)
    scores = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0])
    y = target([2, 0, 1, 1, 0], [0, 0, 0, 1, 1])
    d3 = 1 / math.log2(3)
    ideal0 = 3 + 1 * d3                     # gains 2^rel - 1 = 3, 0, 1; best order 3, 1, 0
    query0 = (3 * (1 - 0.5) / ideal0 * softplus(1.0)      # doc0 over doc1
              + 2 * (d3 - 0.5) / ideal0 * softplus(0.5)   # doc0 over doc2
              + 1 * (1 - d3) / ideal0 * softplus(0.5))    # doc2 over doc1
    query1 = 1 * (1 - d3) / 1 * softplus(1.0)
    assert LambdaRankLoss()(scores, y).item() == pytest.approx((query0 + query1) / 2, rel=1e-5)
    # already in the ideal order, a pair still costs a little (log(1 + e^-margin)), weighted the same way
    right = LambdaRankLoss()(torch.tensor([1.0, 0.0]), target([1, 0], [0, 0])).item()
    assert right == pytest.approx((1 - d3) * softplus(-1.0), rel=1e-5)


def test_ranking_gets_pairwise_losses_and_refuses_classification_ones():
    loss, why = choose_loss("ranking", "auto", np.array([0, 1, 2, 0], dtype=np.float32), 1)
    assert isinstance(loss, LambdaRankLoss) and "graded relevance (3 levels, 0-2)" in why
    loss, why = choose_loss("ranking", "auto", np.ones(5, dtype=np.float32), 1)
    assert isinstance(loss, BPRLoss) and "implicit feedback has no grades" in why
    assert isinstance(choose_loss("ranking", "bpr", np.array([0.0, 2.0]), 1)[0], BPRLoss)
    assert isinstance(choose_loss("ranking", "lambdarank", np.ones(3), 1)[0], LambdaRankLoss)
    for wrong in ("cross_entropy", "bce", "mse", torch.nn.CrossEntropyLoss(), torch.nn.BCEWithLogitsLoss()):
        with pytest.raises(nt.ConfigError, match=r"does not fit a ranking task: ranking is judged by the order"):
            choose_loss("ranking", wrong, np.ones(3), 1)


# ---- metrics ---------------------------------------------------------------------------------

def test_ranking_metrics_match_a_reference_computation():
    # query 0: negative scores (a raw model's) rank doc0, doc2, doc1, doc3; relevant (>0): doc2 (2nd), doc1 (3rd)
    # query 1: the relevant doc first. query 2: nothing relevant, so no order to judge: skipped
    scores = np.array([-0.1, -0.5, -0.3, -0.9, 3.0, 1.0, 0.2, 0.1])
    relevance = np.array([0, 2, 1, 0, 1, 0, 0, 0])
    groups = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    metrics = score("ranking", 1, scores, np.column_stack([relevance, groups]))
    ap0 = (1 / 2 + 2 / 3) / 2
    assert metrics["map"] == pytest.approx((ap0 + 1) / 2, rel=1e-5)
    assert metrics["recall@10"] == pytest.approx(1.0)
    ndcg0 = ndcg_score([relevance[:4]], [scores[:4]], k=10)
    assert metrics["ndcg@10"] == pytest.approx((ndcg0 + 1) / 2, rel=1e-5)
    recall = RelevantRecall(top_k=2, empty_target_action="skip")
    recall.update(torch.tensor(scores), torch.tensor(relevance), indexes=torch.tensor(groups))
    assert float(recall.compute()) == pytest.approx((1 / 2 + 1) / 2)  # query 0: doc2 in the top 2, doc1 not


def test_ndcg_is_sklearns_averaged_over_queries_whatever_the_batches():
    rng = np.random.default_rng(3)
    sizes = [3, 7, 12, 15, 5]
    groups = np.repeat(np.arange(len(sizes)), sizes)
    relevance = rng.integers(0, 4, size=len(groups)).astype(float)
    scores = rng.normal(size=len(groups))
    reference = np.mean([ndcg_score([relevance[groups == g]], [scores[groups == g]], k=10) for g in range(5)])
    collection = metric_collection("ranking", 1)
    for part in np.array_split(np.arange(len(groups)), 3):  # the loop updates batch by batch
        collection.update(torch.tensor(scores[part], dtype=torch.float32), torch.tensor(relevance[part]),
                          indexes=torch.tensor(groups[part]))
    values = compute(collection)
    assert values["ndcg@10"] == pytest.approx(reference, rel=1e-5)
    assert all(collection[name].higher_is_better for name in ("ndcg@10", "map", "recall@10"))
    per_query = ndcg_per_group(scores, relevance, groups, 10)
    assert per_query.mean() == pytest.approx(reference, rel=1e-5)
    low, high = bootstrap_interval("ranking", scores, np.column_stack([relevance, groups]), seed=0)
    assert low <= reference <= high and low < high


# ---- splits and negatives ----------------------------------------------------------------------

def test_graded_split_keeps_each_query_in_one_split_and_batches_whole_queries(workdir):
    pipe = nt.Pipeline(graded_frame(), target="relevance", task="ranking", group_col="query", workdir=workdir)
    pipe.clean()
    report = pipe.split()
    queries = {p: set(pipe._rows(p)["query"]) for p in ("train", "val", "test")}
    assert report.method == "group" and not (queries["train"] & queries["val"]) \
        and not (queries["train"] & queries["test"]) and not (queries["val"] & queries["test"])
    pipe.preprocess()
    assert len(pipe.train) == len(queries["train"])  # the units are queries
    batches = pipe.train.batches(torch.device("cpu"))
    (X,), y_fit = batches.take(torch.tensor([0, 2]))
    assert len(X) == 16 and set(y_fit[:, 1].tolist()) == {0.0, 2.0}  # every row of both queries


def test_implicit_time_split_is_one_cut_in_time(workdir):
    frame = interaction_frame(times=True)
    pipe = nt.Pipeline.from_interactions(frame, user="user", item="item", time="when", workdir=workdir)
    pipe.clean()
    report = pipe.split()
    when = {p: pipe._rows(p)["when"] for p in ("train", "val", "test")}
    assert report.method == "time" and "A global cut in time" in repr(report)
    assert when["train"].max() < when["val"].min() and when["val"].max() < when["test"].min()
    with pytest.raises(nt.LeakageError, match=r"per-user split \(last_fraction\) holds out each user's latest "
                                               r"interactions but trains on other users' interactions from after them"):
        pipe.split(method="per_user")
    with pytest.raises(nt.LeakageError, match=r"per-user split \(leave_one_out\)"):
        pipe.split(method="leave_one_out")


def test_per_user_split_holds_out_each_users_own_interactions(workdir):
    frame = interaction_frame(times=True)
    pipe = nt.Pipeline.from_interactions(frame, user="user", item="item", time="when", workdir=workdir)
    pipe.clean()
    report = pipe.split(method="per_user", random_split_reason="a time cut leaves test users unseen")
    assert "Last fraction per user" in repr(report) and report.random_split_reason and report.method == "last_fraction"
    parts = {p: pipe._rows(p) for p in ("train", "val", "test")}
    when = {p: rows.groupby("user")["when"] for p, rows in parts.items()}
    # leave-last: per user, every validation interaction is later than the user's train ones, every test one later still
    assert (when["train"].max().reindex(when["val"].min().index) < when["val"].min()).all()
    assert (when["val"].max().reindex(when["test"].min().index) < when["test"].min()).all()
    keys = {p: set(zip(rows.user, rows.item)) for p, rows in parts.items()}
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["val"])
    # without times: random per user, seeded; users with fewer than 3 interactions stay in train
    users = pd.Series(["a"] * 10 + ["b"] * 2 + ["c"] * 5)
    first = split_per_user(users, (0.6, 0.2, 0.2), np.random.default_rng(1))
    again = split_per_user(users, (0.6, 0.2, 0.2), np.random.default_rng(1))
    assert all((first[p] == again[p]).all() for p in first)
    assert set(users.iloc[first["val"]]) == set(users.iloc[first["test"]]) == {"a", "c"}
    assert set(users.iloc[first["train"]]) == {"a", "b", "c"} and (users.iloc[first["train"]] == "b").sum() == 2


def test_negatives_are_never_a_users_train_items():
    # user 0 knows 9 of 10 items: the rejection draws mostly fail, so the exact fallback is exercised too
    users = np.array([0] * 9 + [1, 1], dtype=np.int64)
    items = np.array(list(range(9)) + [3, 4], dtype=np.int64)
    data = Interactions(users, items, 10, np.unique(users * 10 + items), pd.RangeIndex(11))
    batches = data.batches(torch.device("cpu"))
    torch.manual_seed(0)
    for _ in range(30):
        (u, i), y_fit = batches.take(torch.arange(11))
        negatives, owners = i[11:], u[11:]
        assert (negatives[owners == 0] == 9).all()
        assert not np.isin(negatives[owners == 1].numpy(), [3, 4]).any()
        assert y_fit[:11, 0].eq(1).all() and y_fit[11:, 0].eq(0).all() and (y_fit[:11, 1] == y_fit[11:, 1]).all()
    torch.manual_seed(5)
    first = batches.take(torch.arange(11))[0][1]
    torch.manual_seed(5)
    assert torch.equal(first, batches.take(torch.arange(11))[0][1])  # the run's seed fixes the draws


def test_validation_candidates_are_held_out_items_and_unseen_negatives(workdir):
    pipe = nt.Pipeline.from_interactions(interaction_frame(), user="user", item="item", workdir=workdir)
    pipe.clean()
    assert "Random fraction per user" in repr(pipe.split())
    report = pipe.preprocess(negatives=20)
    assert "among 20 items drawn" in repr(report) and "sampled: 20 negatives per user" in repr(report)
    val, codes = pipe.val, pipe.preprocessor_
    train_keys = set(zip(*codes.encode(pipe._rows("train"))))
    held = set(zip(*codes.encode(pipe._rows("val"))))
    users, items = val.inputs
    pairs = list(zip(users.tolist(), items.tolist()))
    positives = {p for p, r in zip(pairs, val.relevance) if r == 1}
    negatives = [p for p, r in zip(pairs, val.relevance) if r == 0]
    assert positives == {p for p in held if min(p) >= 0}
    assert not set(negatives) & (train_keys | held) and len(negatives) == len(set(negatives))
    assert max(pd.Series(negatives).map(lambda p: p[0]).value_counts()) <= 20


# ---- pipelines end to end ------------------------------------------------------------------------

def test_graded_ranking_end_to_end(workdir):
    pipe = nt.Pipeline(graded_frame(), target="relevance", task="ranking", group_col="query", workdir=workdir)
    assert type(pipe).__name__ == "RankingPipeline" and "4 relevance levels" in pipe.task_reason
    pipe.clean(), pipe.split(), pipe.preprocess()
    trees = pipe.baseline()
    run = pipe.fit(epochs=4, batch_size=8, view=None)
    history = run.history
    assert run.config["loss"] == "LambdaRankLoss" and history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    val = pipe.val
    random = score("ranking", 1, np.random.default_rng(0).normal(size=len(val.relevance)), val.target())
    assert run.best_metrics["val_ndcg@10"] > random["ndcg@10"] + 0.1
    assert trees.best_metrics["val_ndcg@10"] > random["ndcg@10"] + 0.1
    report = pipe.test(run)
    assert report.headline == "ndcg@10" and set(report.metrics) == {"ndcg@10", "map", "recall@10"}
    assert report.confusion is None and report.interval[0] <= report.metrics["ndcg@10"] <= report.interval[1]
    frame = report.predictions
    assert list(frame.columns) == ["score", "rank", "relevance"] and frame.index.names[0] == "query"
    assert len(frame) == len(pipe._rows("test"))
    assert pipe.diagnose().title  # the doctor ran on a ranking run without failing
    predicted = pipe.predict(pipe._rows("val"), run=run)  # nbtrain.kinds.ranking.bundle; tests/test_bundle_ranking.py
    assert list(predicted.columns) == ["score", "rank"] and predicted.index.equals(pipe._rows("val").index)


def test_implicit_feedback_end_to_end_with_the_test_lock(workdir, one_thread):
    frame = interaction_frame()
    pipe = nt.Pipeline.from_interactions(frame, user="user", item="item", workdir=workdir)
    pipe.clean(), pipe.split()
    report = pipe.preprocess()
    assert "each ranking every item they have no train interaction with" in repr(report)
    popular = pipe.baseline()
    run = pipe.fit(epochs=12, batch_size=64, patience=None, view=None)  # ~1,200 train pairs: small batches
    history = run.history
    assert run.config["loss"] == "BPRLoss" and history.train_loss.iloc[-1] < 0.9 * history.train_loss.iloc[0]
    assert run.monitor == "val_ndcg@10" and run.config["evaluation"].startswith("full ranking")
    # the validation metrics of every epoch are the full ranking's: recomputed from the kept (best) weights
    assert run.best_metrics["val_ndcg@10"] == pytest.approx(rank_with_model(run.model, pipe.val.held).metrics()["ndcg@10"])
    chance = rank_held_out(lambda u: torch.rand(len(u), pipe.n_items, generator=torch.Generator().manual_seed(0)),
                           pipe.val.held, torch.device("cpu")).metrics()["ndcg@10"]
    assert run.best_metrics["val_ndcg@10"] > chance + 0.05 and popular.best_metrics["val_ndcg@10"] > chance
    assert any("best classical baseline 'baseline-popularity" in note for note in run.notes)
    report = pipe.test(run)
    assert report.headline == "ndcg@10" and report.predictions.index.names == ["user", "item"]
    assert (report.predictions["rank"] >= 1).all() and "Full ranking: each of the" in repr(report)
    # the lock is keyed by the test interactions' content: a new pipeline on the same data is refused
    test_rows = pipe._rows("test")
    evaluated = pipe.ledger.evaluated_row_hashes()
    from nbtrain.data import fingerprint
    assert set(fingerprint.combine(test_rows, ["user", "item"]).tolist()) <= set(evaluated.tolist())
    again = nt.Pipeline.from_interactions(frame.sample(frac=1, random_state=1), user="user", item="item",
                                          workdir=workdir)
    again.clean()
    assert any("already evaluated" in w for w in again.split().warnings)  # same rows, same hashes
    again.preprocess()
    again.baseline()
    with pytest.raises(nt.TestSetLockedError):
        again.test()


def test_ranking_input_errors_say_what_to_do(workdir):
    frame = graded_frame(n_queries=6)
    with pytest.raises(nt.ConfigError, match=r"pass group_col='<column naming the query of each row>'"):
        nt.Pipeline(frame, target="relevance", task="ranking", workdir=workdir)
    with pytest.raises(nt.ConfigError, match=r"grades >= 0 \(they are gains in NDCG\); 'relevance' holds -1\."):
        nt.Pipeline(frame.assign(relevance=frame.relevance - 1), target="relevance", task="ranking",
                    group_col="query", workdir=workdir)
    with pytest.raises(nt.DataError, match=r"item='itm' is not a column of the DataFrame. Did you mean 'item'"):
        nt.Pipeline.from_interactions(interaction_frame(users=5), user="user", item="itm", workdir=workdir)
    pipe = nt.Pipeline.from_interactions(interaction_frame(users=20), user="user", item="item", workdir=workdir)
    with pytest.raises(nt.LeakageError, match=r"preprocess\(\) learns from data; before split\(\)"):
        pipe.preprocess()
    pipe.clean()
    with pytest.raises(nt.ConfigError, match=r"method='time' needs the time of each interaction"):
        pipe.split(method="time")
