"""Bundles and export of ranking models: a network (or trees) of (query, document) features, and matrix
factorisation of implicit feedback with its user and item index maps. Each loaded in a fresh process predicts
what the pipeline predicted; sealed test rows are refused; cold starts score NaN; baselines that cannot ship
are refused with the reason; crafted, truncated and newer files are refused."""

import hashlib
import io
import json
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_limits

import nbtrain as nt
import nbtrain.export as exporting
from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainWarning

from bundle_files import members_of, predicted_elsewhere, rebuilt, setting
from test_ranking import graded_frame, interaction_frame

FORMATS = [pytest.param("onnx", marks=pytest.mark.skipif(not exporting.importlib.util.find_spec("onnxruntime"),
                                                          reason="onnxruntime is not installed")),
           "torch.export"]
COLD = pd.DataFrame({"user": ["u1", "newcomer", "newcomer"], "item": ["never-seen", "i1", "i2"]}, index=[901, 902, 903])


def npy(values, allow_pickle=False) -> bytes:
    out = io.BytesIO()
    np.save(out, values, allow_pickle=allow_pickle)
    return out.getvalue()


def quietly(predict, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NbtrainWarning)
        return predict(*args, **kwargs)


# ---- graded relevance: RankingPipeline ----------------------------------------------------------


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """An MLP ranking 60 queries of 8 documents (LambdaRank, 3 epochs) and the tree baseline, saved before test()."""
    folder = tmp_path_factory.mktemp("graded")
    frame = graded_frame()
    with threadpool_limits(limits=1):
        pipe = nt.Pipeline(frame, target="relevance", task="ranking", group_col="query", workdir=folder / "runs")
        pipe.clean(), pipe.split(), pipe.preprocess()
        trees = pipe.baseline()
        run = pipe.fit(epochs=3, batch_size=8, view=None, doctor=False)
        path = pipe.save(folder / "graded.nbtrain", run=run)
    return pipe, frame, run, trees, path


def test_a_ranking_bundle_predicts_in_a_fresh_process_as_the_pipeline_did(graded, tmp_path):
    pipe, frame, run, _, path = graded
    rows = frame.loc[pipe._rows("val").index].drop(columns="relevance")
    expected = pipe.predict(rows, run=run)
    assert list(expected.columns) == ["score", "rank"] and expected.index.equals(rows.index)
    assert expected["score"].round(5).nunique() > len(rows) // 2  # not a constant model
    predicted, shown = predicted_elsewhere(path, rows, tmp_path)
    pd.testing.assert_frame_equal(predicted, expected)
    # rank 1 is each query's highest score; every query's ranks are 1..n
    best = expected.assign(query=rows["query"]).groupby("query")["score"].idxmax()
    assert (expected.loc[best, "rank"] == 1).all()
    assert sorted(expected.loc[rows["query"] == rows["query"].iloc[0], "rank"]) == list(range(1, 9))
    assert (f"Run {run.name!r} (MLP) predicting 'relevance': ranking, a score per row, ranked within each query of "
            "'query'.") in shown
    assert "Test split: sealed; its 72 rows are refused until pipe.test()." in shown
    assert "Evidence behind the numbers" in shown and "whole groups of 'query' per split" in shown


def test_without_the_query_column_all_rows_are_ranked_together(graded):
    pipe, frame, run, _, path = graded
    rows = frame.loc[pipe._rows("val").index, ["x1", "x2", "x3"]]
    predicted = nt.load(path).predict(rows)
    assert sorted(predicted["rank"]) == list(range(1, len(rows) + 1))
    assert predicted["rank"].idxmin() == predicted["score"].idxmax()
    with_query = pipe.predict(frame.loc[rows.index], run=run)
    np.testing.assert_allclose(predicted["score"], with_query["score"], rtol=1e-6)  # the scores do not depend on it


def test_the_ranking_bundle_is_a_tables_with_the_query_column_and_the_evidence(graded):
    pipe, _, run, _, path = graded
    members = members_of(path)
    manifest = json.loads(members["manifest.json"])
    assert set(members) == {"manifest.json", "weights.pt", "preprocessor.skops", "sealed.npy"}
    assert (manifest["kind"], manifest["task"], manifest["classes"]) == ("ranking", "ranking", None)
    assert manifest["ranking"] == {"group_col": "query"} and manifest["bundle_version"] == 3
    assert (manifest["model"]["module"], manifest["model"]["qualname"]) == ("nbtrain.models.tabular", "MLP")
    assert manifest["evidence"]["preprocessing"]["fitted"] == "the feature preprocessing (imputers, scalers, encoders)"
    assert manifest["evidence"]["split"]["group_col"] == "query" and manifest["info"]["packages"]["torch"]
    assert all(m["sha256"] == hashlib.sha256(members[n]).hexdigest() for n, m in manifest["members"].items())


def test_the_ranking_tree_baseline_is_bundled_and_not_exported(graded, tmp_path):
    pipe, frame, _, trees, _ = graded
    rows = frame.loc[pipe._rows("val").index]
    path = pipe.save(tmp_path / "trees.nbtrain", run=trees)
    assert set(members_of(path)) == {"manifest.json", "baseline.skops", "sealed.npy"}
    loaded = nt.load(path)
    pd.testing.assert_frame_equal(loaded.predict(rows), pipe.predict(rows, run=trees))
    assert f"Run {trees.name!r} (HistGradientBoostingRegressor)" in repr(loaded)
    with pytest.raises(ConfigError, match=r"export\(\) is for networks; run .* is a tree baseline"):
        loaded.export(tmp_path / "trees.onnx")


@pytest.mark.parametrize("format", FORMATS)
def test_the_ranking_network_exports_one_score_per_row(graded, tmp_path, format):
    pipe, frame, run, _, path = graded
    report = pipe.export(tmp_path / "graded", format, run=run)
    assert report.sample == "validation rows" and report.rows_checked == 72 and report.max_abs_diff <= 1e-5
    assert report.inputs == ["X float32 (batch, 3)"]
    assert report.output == "a score per row, shape (batch,): higher ranks first within a query"
    rows = frame.loc[pipe._rows("val").index]
    X, _ = nt.load(path).transform(rows)
    if format == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        served = session.run(None, {"X": X[:5]})[0]
    else:
        served = torch.export.load(str(report.path)).module()(torch.as_tensor(X[:5])).detach().numpy()
    np.testing.assert_allclose(served, pipe.predict(rows, run=run)["score"].to_numpy()[:5], rtol=1e-4, atol=1e-5)


def test_crafted_ranking_bundles_are_refused(graded, tmp_path):
    _, _, _, _, path = graded
    no_query = rebuilt(path, tmp_path / "query.nbtrain", setting(ranking={"group_col": ["query"]}))
    with pytest.raises(DataError, match=r"'ranking' should hold the query column"):
        nt.load(no_query)
    as_table = rebuilt(path, tmp_path / "table.nbtrain", lambda m: {k: v for k, v in m.items() if k != "kind"})
    with pytest.raises(DataError, match=r"task 'ranking' with kind \"tabular\" \(task 'ranking' goes with the kinds"):
        nt.load(as_table)
    binary = rebuilt(path, tmp_path / "binary.nbtrain", setting(task="binary"))
    with pytest.raises(DataError, match=r"task 'binary' with kind \"ranking\""):
        nt.load(binary)
    extra = rebuilt(path, tmp_path / "extra.nbtrain", add={"baseline.skops": b"PK"})
    with pytest.raises(DataError, match=r"a bundle of a network has \['preprocessor.skops', 'sealed.npy', "
                                        r"'weights.pt'\]"):
        nt.load(extra)


def test_a_loaded_ranking_model_refuses_the_sealed_test_rows_until_test(graded, tmp_path):
    """Last of the graded tests: it runs test()."""
    pipe, frame, run, _, path = graded
    test_rows = frame.loc[pipe._rows("test").index]
    with pytest.raises(LeakageError, match=r"New rows belong to the test split of the pipeline this model was saved "
                                           r"from; it was saved before pipe.test\(\)"):
        nt.load(path).predict(test_rows.iloc[:3])
    with pytest.raises(LeakageError, match=r"this pipeline's test split, which stays sealed until pipe.test\(\)"):
        pipe.predict(test_rows, run=run)
    pipe.test(run)
    after = nt.load(pipe.save(tmp_path / "after.nbtrain", run=run))
    assert "Test split: evaluated." in repr(after)
    pd.testing.assert_frame_equal(after.predict(test_rows), pipe.predict(test_rows, run=run))


# ---- implicit feedback: InteractionPipeline -------------------------------------------------------


@pytest.fixture(scope="module")
def implicit(tmp_path_factory):
    """Matrix factorisation (BPR, 4 epochs) of 120 users and 60 items and the popularity baseline, saved before
    test()."""
    folder = tmp_path_factory.mktemp("implicit")
    frame = interaction_frame()
    with threadpool_limits(limits=1):
        pipe = nt.Pipeline.from_interactions(frame, user="user", item="item", workdir=folder / "runs")
        pipe.clean(), pipe.split(), pipe.preprocess()
        popular = pipe.baseline()
        run = pipe.fit(epochs=4, batch_size=64, patience=None, view=None, doctor=False)
        path = pipe.save(folder / "implicit.nbtrain", run=run)
    return pipe, frame, run, popular, path


def test_an_interactions_bundle_predicts_in_a_fresh_process_as_the_pipeline_did(implicit, tmp_path):
    pipe, _, run, _, path = implicit
    pairs = pd.concat([pipe._rows("val")[["user", "item"]], COLD])
    expected = quietly(pipe.predict, pairs, run=run)
    assert list(expected.columns) == ["score", "rank"] and expected.index.equals(pairs.index)
    assert expected["score"].iloc[:-3].notna().all() and expected["score"].round(5).nunique() > len(pairs) // 2
    predicted, shown = predicted_elsewhere(path, pairs, tmp_path)
    pd.testing.assert_frame_equal(predicted, expected)
    # the scores are the network's own, as test() computes them
    users, items = pipe.preprocessor_.encode(pairs.iloc[:5])
    with torch.no_grad():
        direct = run.model(torch.as_tensor(users), torch.as_tensor(items)).numpy()
    np.testing.assert_allclose(expected["score"].iloc[:5], direct, rtol=1e-6)
    assert (f"Run {run.name!r} (MatrixFactorization) scoring interactions of 'user' with 'item': ranking, higher "
            "scores first.") in shown
    assert (f"Reads pairs of 'user' and 'item': {pipe.n_users} users and {pipe.n_items} items known from train; a pair "
            "with a user or item train never saw (a cold start) scores NaN.") in shown
    assert "Preprocessing fitted on the" in shown and "the user and item index maps" in shown


def test_a_cold_start_scores_nan_with_a_warning_or_is_refused_when_strict(implicit):
    pipe, _, _, _, path = implicit
    model = nt.load(path)
    known = pipe._rows("val")[["user", "item"]].iloc[:2]
    with pytest.warns(NbtrainWarning, match=r"3 of 5 pairs are cold starts, a user or item train never saw \(e.g. "
                                            r"rows \[901, 902, 903\]\).* their score is NaN and their rank <NA>"):
        predicted = model.predict(pd.concat([known, COLD]))
    assert predicted.loc[COLD.index, "score"].isna().all() and predicted.loc[COLD.index, "rank"].isna().all()
    assert predicted["rank"].dtype == "Int64" and predicted.loc[known.index, "rank"].notna().all()
    with pytest.raises(DataError, match=r"3 of 3 pairs are cold starts.*Drop those pairs, or call "
                                        r"predict\(strict=False\)"):
        model.predict(COLD, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cold start: no warning, ranks are plain integers
        assert model.predict(known)["rank"].dtype == np.int64
    with pytest.raises(DataError, match=r"item='item' is not a column"):
        model.predict(known[["user"]])


def test_the_interactions_bundle_holds_index_maps_and_weights_and_no_interaction(implicit):
    pipe, _, run, _, path = implicit
    members = members_of(path)
    manifest = json.loads(members["manifest.json"])
    assert set(members) == {"manifest.json", "weights.pt", "users.npy", "items.npy", "sealed.npy"}
    assert (manifest["kind"], manifest["task"]) == ("interactions", "ranking")
    assert manifest["interactions"] == {"user": "user", "item": "item", "n_users": pipe.n_users,
                                        "n_items": pipe.n_items}
    assert manifest["model"] == {"module": "nbtrain.kinds.ranking.models", "qualname": "MatrixFactorization",
                                 "config": run.model.config}
    users = np.load(io.BytesIO(members["users.npy"]), allow_pickle=False)
    items = np.load(io.BytesIO(members["items.npy"]), allow_pickle=False)
    assert users.tolist() == pipe.preprocessor_.users_.tolist() and items.tolist() == pipe.preprocessor_.items_.tolist()
    state = torch.load(io.BytesIO(members["weights.pt"]), weights_only=True)
    assert set(state) == {"users.weight", "items.weight", "item_bias"}
    assert len(np.load(io.BytesIO(members["sealed.npy"]), allow_pickle=False)) == len(pipe._rows("test"))
    assert manifest["evidence"]["preprocessing"]["fitted"] == "the user and item index maps"


def test_the_classical_baselines_predict_in_their_session_but_are_not_bundled(implicit, tmp_path):
    pipe, _, _, popular, _ = implicit
    pairs = pipe._rows("val")[["user", "item"]]
    scores = pipe.predict(pairs, run=popular)["score"].to_numpy()
    np.testing.assert_allclose(scores, popular.model.score(*pipe.preprocessor_.encode(pairs)))
    with pytest.raises(ConfigError, match=rf"save\(\) writes networks of users and items; run {popular.name!r} is the "
                                          r"popularity baseline: its scores are the train split's item counts"):
        pipe.save(tmp_path / "popular.nbtrain", run=popular)
    with pytest.raises(ConfigError, match=r"export\(\) writes networks .* the popularity baseline"):
        pipe.export(tmp_path / "popular.onnx", run=popular)
    with threadpool_limits(limits=1):
        knn = pipe.baseline("item_knn")
    with pytest.raises(ConfigError, match=r"the item_knn baseline: it scores a user from that user's own train "
                                          r"interactions, so its bundle would carry the train interaction matrix"):
        pipe.save(tmp_path / "knn.nbtrain", run=knn)
    assert not (tmp_path / "knn.nbtrain").exists()


@pytest.mark.parametrize("format", FORMATS)
def test_matrix_factorisation_exports_users_and_items_to_a_score(implicit, tmp_path, format):
    pipe, _, run, _, path = implicit
    report = pipe.export(tmp_path / "mf", format, run=run)
    pairs = pipe._rows("val")[["user", "item"]]
    assert report.sample == "validation pairs" and report.rows_checked == len(pairs) and report.max_abs_diff <= 1e-5
    assert report.inputs == [f"users int64 (batch,): codes 0..{pipe.n_users - 1} of 'user'",
                             f"items int64 (batch,): codes 0..{pipe.n_items - 1} of 'item'"]
    assert report.output == "a score per (user, item) pair, shape (batch,): higher ranks first within a user"
    users, items = nt.load(path).transform(pairs.iloc[:7])  # a batch size it was not traced with
    if format == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        served = session.run(None, {"users": users, "items": items})[0]
    else:
        module = torch.export.load(str(report.path)).module()
        served = module(torch.as_tensor(users), torch.as_tensor(items)).detach().numpy()
    np.testing.assert_allclose(served, pipe.predict(pairs.iloc[:7], run=run)["score"], rtol=1e-4, atol=1e-5)
    loaded = nt.load(path).export(tmp_path / "again", format)  # from the bundle alone: random codes
    assert loaded.sample == "random pairs" and loaded.rows_checked == 256 and loaded.max_abs_diff <= 1e-5


def test_an_interactions_bundle_saved_before_the_kind_moved_still_loads(implicit, tmp_path):
    """Bundles written before the ranking kinds moved into nbtrain.kinds.ranking name nbtrain.models.ranking."""
    pipe, _, run, _, path = implicit
    old = rebuilt(path, tmp_path / "old.nbtrain",
                  setting("model", module="nbtrain.models.ranking"))
    pairs = pipe._rows("val")[["user", "item"]]
    pd.testing.assert_frame_equal(quietly(nt.load(old).predict, pairs), quietly(nt.load(path).predict, pairs))


def test_crafted_interactions_bundles_are_refused(implicit, tmp_path):
    _, _, _, _, path = implicit
    users = np.load(io.BytesIO(members_of(path)["users.npy"]), allow_pickle=False)
    pickled = rebuilt(path, tmp_path / "pickled.nbtrain", add={"users.npy": npy(users.astype(object), True)})
    with pytest.raises(DataError, match=r"its users.npy is damaged or not plain ids \(Object arrays cannot be loaded"):
        nt.load(pickled)
    twice = rebuilt(path, tmp_path / "twice.nbtrain", add={"users.npy": npy(np.repeat(users[:1], len(users)))})
    with pytest.raises(DataError, match=rf"its users.npy should hold {len(users)} distinct ids"):
        nt.load(twice)
    fewer = rebuilt(path, tmp_path / "fewer.nbtrain", add={"items.npy": npy(np.array(["i1", "i2"]))})
    with pytest.raises(DataError, match=r"its items.npy should hold \d+ distinct ids .* shape \(2,\)"):
        nt.load(fewer)
    more = lambda m: {**m, "interactions": {**m["interactions"], "n_users": m["interactions"]["n_users"] + 1}}
    counts = rebuilt(path, tmp_path / "counts.nbtrain", more)
    with pytest.raises(DataError, match=r"its users.npy should hold"):
        nt.load(counts)
    wider = rebuilt(path, tmp_path / "wider.nbtrain",
                    setting("model", "config", n_users=10**9))
    with pytest.raises(DataError, match=r"its network has embeddings for 1000000000 users"):
        nt.load(wider)
    deeper = rebuilt(path, tmp_path / "dim.nbtrain",
                     setting("model", "config", dim=8))
    with pytest.raises(DataError, match=r"the saved weights do not fit "
                                        r"nbtrain.kinds.ranking.models.MatrixFactorization"):
        nt.load(deeper)
    foreign = rebuilt(path, tmp_path / "foreign.nbtrain", setting("model", module="os", qualname="system"))
    with pytest.raises(DataError, match=r"needs the model class 'os.system', from outside nbtrain"):
        nt.load(foreign)
    extra = rebuilt(path, tmp_path / "extra.nbtrain", add={"train.npy": npy(np.arange(3))})
    with pytest.raises(DataError, match=r"a bundle of interactions holds \['items.npy', 'sealed.npy', 'users.npy', "
                                        r"'weights.pt'\]"):
        nt.load(extra)
    fields = rebuilt(path, tmp_path / "fields.nbtrain", setting(interactions={"user": "user"}))
    with pytest.raises(DataError, match=r"'interactions' should hold the user and item columns"):
        nt.load(fields)


@pytest.mark.parametrize("which", ["graded", "implicit"])
def test_truncated_newer_and_foreign_ranking_bundles_are_refused(request, tmp_path, which):
    path = request.getfixturevalue(which)[-1]
    truncated = tmp_path / "truncated.nbtrain"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"is (a )?damaged"):
        nt.load(truncated)
    newer = rebuilt(path, tmp_path / "newer.nbtrain", setting(bundle_version=99))
    with pytest.raises(DataError, match=r"in bundle version 99; this nbtrain \(.*\) reads versions 2 to 3"):
        nt.load(newer)
    foreign = rebuilt(path, tmp_path / "foreign.nbtrain", setting(format="something-else"))
    with pytest.raises(DataError, match=r"not an nbtrain bundle \(format 'something-else'\)"):
        nt.load(foreign)
    damaged = members_of(path)
    damaged["weights.pt"] = damaged["weights.pt"][:-1] + bytes([damaged["weights.pt"][-1] ^ 1])
    with zipfile.ZipFile(tmp_path / "damaged.nbtrain", "w") as archive:
        for name, data in damaged.items():
            archive.writestr(name, data)
    with pytest.raises(DataError, match=r"its member 'weights.pt' does not match its checksum"):
        nt.load(tmp_path / "damaged.nbtrain")


def test_a_loaded_interactions_model_refuses_the_sealed_test_pairs_until_test(implicit, tmp_path):
    """Last of the implicit tests: it runs test()."""
    pipe, _, run, _, path = implicit
    test_pairs = pipe._rows("test")[["user", "item"]]
    with pytest.raises(LeakageError, match=r"New rows belong to the test split of the pipeline this model was saved "
                                           r"from.*\d+ of 3"):
        nt.load(path).predict(test_pairs.iloc[:3])
    with pytest.raises(LeakageError, match=r"this pipeline's test split"):
        quietly(pipe.predict, test_pairs, run=run)
    pipe.test(run)
    after = nt.load(pipe.save(tmp_path / "after.nbtrain", run=run))
    assert "Test split: evaluated." in repr(after)
    pd.testing.assert_frame_equal(quietly(after.predict, test_pairs), quietly(pipe.predict, test_pairs, run=run))


def test_whole_number_ids_round_trip_and_ids_of_mixed_types_are_refused_at_save(tmp_path):
    frame = interaction_frame(users=40, items=30, seed=1)
    numbered = frame.assign(user=frame["user"].str[1:].astype(int), item=frame["item"].str[1:].astype(int))
    with threadpool_limits(limits=1):
        pipe = nt.Pipeline.from_interactions(numbered, user="user", item="item", workdir=tmp_path / "a")
        pipe.clean(), pipe.split(), pipe.preprocess()
        run = pipe.fit(epochs=1, batch_size=64, view=None, doctor=False)
    loaded = nt.load(pipe.save(tmp_path / "numbered.nbtrain", run=run))
    assert loaded.preprocessor.users_.dtype == np.int64
    pairs = pipe._rows("val")[["user", "item"]]
    pd.testing.assert_frame_equal(loaded.predict(pairs), pipe.predict(pairs, run=run))
    mixed = frame.assign(user=[int(u[1:]) if int(u[1:]) % 2 else u for u in frame["user"]])
    with threadpool_limits(limits=1):
        pipe = nt.Pipeline.from_interactions(mixed, user="user", item="item", workdir=tmp_path / "b")
        pipe.clean(), pipe.split(), pipe.preprocess()
        pipe.fit(epochs=1, batch_size=64, view=None, doctor=False)
    with pytest.raises(ConfigError, match=r"The ids of 'user' are mixed-integer values .* a bundle stores ids as whole "
                                          r"numbers or text"):
        pipe.save(tmp_path / "mixed.nbtrain")
    assert not (tmp_path / "mixed.nbtrain").exists()
