"""Implicit feedback: protocols named for what they are, sampled metrics only on request and labelled,
classical baselines as runs, a large catalogue in bounded memory, and what a worse test is blamed on."""

import numpy as np
import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.doctor.diagnosis import compare_test_with_validation
from test_ranking import interaction_frame


def timed_pipeline(workdir, **frame_options):
    frame = interaction_frame(times=True, **frame_options)
    pipe = nt.Pipeline.from_interactions(frame, user="user", item="item", time="when", workdir=workdir)
    pipe.clean()
    return pipe


def test_leave_one_out_holds_out_each_users_last_interaction(workdir):
    pipe = timed_pipeline(workdir)
    report = pipe.split(method="leave_one_out", random_split_reason="evaluate known users")
    assert report.method == "leave_one_out" and "Leave-one-out per user: each user's last interaction" in repr(report)
    parts = {p: pipe._rows(p) for p in ("train", "val", "test")}
    assert (parts["val"].groupby("user").size() == 1).all() and (parts["test"].groupby("user").size() == 1).all()
    frame = pipe._frame.sort_values("when")
    last = frame.groupby("user").tail(1).set_index("user")["item"]
    second = frame.groupby("user").nth(-2).set_index("user")["item"]
    assert (parts["test"].set_index("user")["item"] == last.loc[parts["test"].user]).all()
    assert (parts["val"].set_index("user")["item"] == second.loc[parts["val"].user]).all()
    assert "1.0 interactions per user on average, test 1.0" in repr(report)
    untimed = nt.Pipeline.from_interactions(interaction_frame(), user="user", item="item", workdir=workdir)
    untimed.clean()
    with pytest.raises(nt.ConfigError, match=r"method='leave_one_out' needs the time of each interaction"):
        untimed.split(method="leave_one_out")


def test_sampled_metrics_only_on_request_and_labelled_everywhere(workdir, one_thread):
    pipe = timed_pipeline(workdir)
    pipe.split(method="last_fraction", random_split_reason="known users")
    assert pipe.preprocess().negatives == "all" and pipe.evaluation.startswith("full ranking")
    full = pipe.baseline()
    report = pipe.preprocess(negatives=30)
    assert "Metrics are sampled: 30 negatives per user: sampled metrics rank each user's held-out items among a " \
           "few sampled items" in repr(report)
    sampled = pipe.baseline()
    run = pipe.fit(epochs=2, view=None)
    label = "sampled: 30 negatives per user"
    for each in (sampled, run):
        assert each.config["evaluation"] == label
        assert any(n.startswith(f"Validation metrics are {label}: sampled metrics") for n in each.notes)
    table = pipe.runs
    assert table.loc[full.name, "evaluation"].startswith("full ranking")
    assert (table.loc[[sampled.name, run.name], "evaluation"] == label).all()
    # sampled NDCG is far higher than full ranking's for the same model: the reason they are never mixed
    assert sampled.best_metrics["val_ndcg@10"] > full.best_metrics["val_ndcg@10"]
    test = pipe.test(sampled)
    assert any(w.startswith(f"Sampled metrics ({label})") and "not comparable with them" in w for w in test.warnings)


def test_classical_baselines_are_runs_and_the_network_faces_the_best(workdir, one_thread):
    pipe = nt.Pipeline.from_interactions(interaction_frame(users=150, items=70), user="user", item="item",
                                         workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    runs = {name: pipe.baseline(name) for name in ("popularity", "item_knn", "ease", "als")}
    assert runs["ease"].config["l2"] == 200.0 and runs["item_knn"].config["neighbours"] == 100
    assert runs["als"].config["library"] == "implicit"
    personal = max(runs[n].best_metrics["val_ndcg@10"] for n in ("item_knn", "ease", "als"))
    assert personal > runs["popularity"].best_metrics["val_ndcg@10"]  # the data is personal: they must see it
    strongest = max(runs.values(), key=lambda r: r.best_metrics["val_ndcg@10"])
    network = pipe.fit(epochs=2, view=None)
    assert any(f"best classical baseline {strongest.name!r}" in note for note in network.notes)
    assert set(pipe.runs.index) == {r.name for r in runs.values()} | {network.name}
    with pytest.raises(nt.ConfigError, match=r"library='svd' is not a baseline of implicit feedback"):
        pipe.baseline("svd")
    with pytest.raises(nt.ConfigError, match=r"baseline\('ease'\) does not take \['alpha'\]"):
        pipe.baseline("ease", alpha=3)


def test_a_100k_item_catalogue_trains_and_evaluates_in_bounded_memory(workdir, one_thread):
    # before: validation held every (user, unseen item) pair (here 11M rows) and BPR padded them per user
    rng = np.random.default_rng(0)
    users, items = 300, 100_000
    frame = pd.DataFrame({"user": rng.integers(0, users, 60_000), "item": rng.integers(0, items, 60_000)})
    frame = pd.concat([frame, pd.DataFrame({"user": np.repeat(np.arange(users), 3),
                                            "item": rng.integers(0, items, 3 * users)})], ignore_index=True)
    pipe = nt.Pipeline.from_interactions(frame, user="user", item="item", workdir=workdir)
    pipe.clean(), pipe.split()
    report = pipe.preprocess()
    assert report.items > 35_000 and len(pipe.val.pairs.relevance) < 200_000
    run = pipe.fit(epochs=1, view=None, doctor=False)
    assert np.isfinite(run.history["val_ndcg@10"]).all() and run.history["val_map"].iloc[0] >= 0


def test_a_worse_test_is_blamed_on_what_the_evidence_allows():
    one_model_time = compare_test_with_validation("ndcg@10", True, 0.06, 0.08, (0.05, 0.07), compared=1,
                                                  over_time=True)
    assert "come later in time than validation's: the data shifted" in one_model_time.fix
    assert "overfit" not in one_model_time.fix and "1 run compared" in one_model_time.evidence
    one_model = compare_test_with_validation("accuracy", True, 0.8, 0.9, (0.78, 0.82), compared=1)
    assert "One model was fitted, so this is not selection on validation" in one_model.fix
    many_time = compare_test_with_validation("ndcg@10", True, 0.06, 0.08, (0.05, 0.07), compared=5, over_time=True)
    assert "Two causes fit: (1) Selecting among several runs" in many_time.fix and "(2) The test interactions" \
        in many_time.fix
    assert "overfit by repeated model selection" in compare_test_with_validation(
        "accuracy", True, 0.8, 0.9, (0.78, 0.82), compared=6).fix


def test_bpr_on_implicit_feedback_builds_only_its_pairs_and_equals_the_padded_form():
    import torch
    from nbtrain.training.ranking import BPRLoss, _pairs, padded
    rng = np.random.default_rng(0)
    groups = torch.as_tensor(rng.integers(0, 40, 600))
    relevance = torch.as_tensor((rng.random(600) < 0.2).astype(np.float32))
    scores = torch.as_tensor(rng.normal(size=600), dtype=torch.float32)
    better, losses = _pairs(*padded(scores, relevance, groups))
    expected = float((losses * better).sum() / better.sum())
    y = torch.stack([relevance, groups.float()], 1)
    assert float(BPRLoss()(scores, y)) == pytest.approx(expected, rel=1e-5)
