"""A model carries its evidence: bundles, nt.load's repr, trackers and pipe.model_card() hold the record behind
the numbers, read from the real ledger (how the split was made, preprocessing on train rows only, runs compared
on validation, whether the test score was the first look at the test split)."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.errors import ConfigError, DataError

from conftest import make_frame
from trained import trained

pytestmark = pytest.mark.usefixtures("one_thread")

SHOW = "import sys, nbtrain as nt; print(repr(nt.load(sys.argv[1]))); print(nt.load(sys.argv[1]).model_card())"


def manifest_of(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("manifest.json"))


def rewrite(path, out, change):
    """A copy of the bundle at `path` whose manifest is `change(manifest)` (member sums stay valid)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["manifest.json"] = json.dumps(change(json.loads(members["manifest.json"])))
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out


@pytest.fixture(scope="module")
def pipe_and_runs(tmp_path_factory):
    from threadpoolctl import threadpool_limits
    import torch
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        pipe, frame = trained(tmp_path_factory.mktemp("evidence") / "runs", baseline=True)
    network = next(r for r in pipe._runs() if r.kind == "nn")
    baseline = next(r for r in pipe._runs() if r.kind == "baseline")
    return pipe, network, baseline


def test_a_bundle_saved_before_test_carries_the_split_the_preprocessing_and_the_runs_compared(pipe_and_runs, tmp_path):
    pipe, network, _ = pipe_and_runs
    evidence = manifest_of(pipe.save(tmp_path / "m.nbtrain", run=network))["evidence"]
    split = evidence["split"]
    assert (split["method"], split["ratios"], split["seed"], split["id"]) == \
        ("stratified", [0.7, 0.15, 0.15], 0, pipe.split_id)
    assert split["sizes"] == {"train": 420, "val": 90, "test": 90}
    pre = evidence["preprocessing"]
    assert pre["fitted_on"] == "train" and pre["train_rows"] == 420
    # the fitted scalers themselves say how many rows they saw: the train rows, not all 600
    assert pre["rows_seen_by_fitted_objects"] == [420] and pre["checked"] is True
    validation = evidence["validation"]
    assert (validation["runs_compared"], validation["networks"], validation["baselines"]) == (2, 1, 1)
    assert validation["selected_by"] == "log_loss" and validation["run"] == network.name
    assert validation["rank"] in (1, 2) and validation["metrics"]["val_log_loss"] == \
        pytest.approx(network.best_metrics["val_log_loss"])
    assert evidence["test"]["status"] == "untested" and evidence["test"]["evaluations"] == []
    assert manifest_of(tmp_path / "m.nbtrain")["bundle_version"] == 3


def test_the_loaded_model_shows_its_evidence_in_a_fresh_process(pipe_and_runs, tmp_path):
    pipe, network, _ = pipe_and_runs
    path = pipe.save(tmp_path / "m.nbtrain", run=network)
    done = subprocess.run([sys.executable, "-c", SHOW, str(path)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    shown = done.stdout
    assert "Evidence behind the numbers:" in shown
    assert "  - Split: stratified (ratios 70%/15%/15%, seed 0); rows train 420, val 90, test 90." in shown
    assert "  - Preprocessing fitted on the 420 train rows only (its scalers saw at most 420 rows)" in shown
    assert "  - Validation: 2 run(s) compared on this validation split (1 network, 1 baseline)" in shown
    assert "  - Test: not yet evaluated; the 90 test rows were sealed when this was recorded." in shown
    assert "## Evidence behind the numbers" in shown and f"model = nt.load('m.nbtrain')" in shown


def test_the_test_status_is_first_look_then_other_run_then_reuse_with_its_reason(tmp_path):
    pipe, _ = trained(tmp_path / "runs", baseline=True)
    network = next(r for r in pipe._runs() if r.kind == "nn")
    baseline = next(r for r in pipe._runs() if r.kind == "baseline")
    report = pipe.test(run=network)
    first = manifest_of(pipe.save(tmp_path / "first.nbtrain", run=network))["evidence"]["test"]
    assert first["status"] == "first_look"
    assert [(e["run"], e["first"], e["reuse_reason"]) for e in first["evaluations"]] == [(network.name, True, None)]
    other = manifest_of(pipe.save(tmp_path / "other.nbtrain", run=baseline))["evidence"]["test"]
    assert other["status"] == "other_run"
    pipe.test(run=baseline, reuse_reason="comparing with the trees after the fact")
    reuse = nt.load(pipe.save(tmp_path / "reuse.nbtrain", run=baseline))
    assert reuse.evidence["test"]["status"] == "reuse"
    assert f"Test: a reuse: the test split was first evaluated by run {network.name!r}" in repr(reuse)
    assert "'comparing with the trees after the fact'" in repr(reuse)
    # the network's record still says first look: the later reuse was of another run
    assert "this run's score is the first look at the test split" in pipe.model_card(network.name, test=report)


def test_a_time_split_records_its_time_ranges_and_a_group_split_its_groups(tmp_path):
    frame = make_frame(n=400)
    frame["when"] = pd.date_range("2024-01-01", periods=len(frame), freq="D")
    timed = nt.Pipeline(frame, target="label", time_col="when", workdir=tmp_path / "time")
    timed.clean(), timed.split(), timed.preprocess()
    timed.fit(epochs=1, view=None, doctor=False)
    split = nt.load(timed.save(tmp_path / "t.nbtrain")).evidence["split"]
    assert split["method"] == "time" and split["time_col"] == "when"
    assert split["time_ranges"]["train"][0].startswith("2024-01-01")
    assert split["time_ranges"]["test"][-1].startswith(str(frame["when"].max().date()))
    grouped = make_frame(n=400)
    grouped["site"] = np.repeat([f"s{i:02d}" for i in range(40)], 10)
    pipe = nt.Pipeline(grouped, target="label", group_col="site", workdir=tmp_path / "group")
    pipe.clean(), pipe.split(), pipe.preprocess()
    pipe.fit(epochs=1, view=None, doctor=False)
    model = nt.load(pipe.save(tmp_path / "g.nbtrain"))
    assert model.evidence["split"]["method"] == "group"
    assert sum(model.evidence["split"]["groups"].values()) == 40
    assert "whole groups of 'site' per split (train " in repr(model)


def test_an_older_bundle_still_loads_and_says_its_evidence_was_not_recorded(pipe_and_runs, tmp_path):
    pipe, network, _ = pipe_and_runs
    path = pipe.save(tmp_path / "m.nbtrain", run=network)
    older = rewrite(path, tmp_path / "v2.nbtrain",
                    lambda m: {k: v for k, v in {**m, "bundle_version": 2}.items() if k != "evidence"})
    model = nt.load(older)
    assert model.evidence is None
    assert "Evidence: not recorded (this bundle was written before nbtrain recorded it)." in repr(model)
    rows = pipe._frame.loc[pipe.val.index]
    pd.testing.assert_frame_equal(model.predict(rows), pipe.predict(rows, run=network))


def test_a_crafted_evidence_record_is_refused_or_shown_without_error(pipe_and_runs, tmp_path):
    pipe, network, _ = pipe_and_runs
    path = pipe.save(tmp_path / "m.nbtrain", run=network)
    listed = rewrite(path, tmp_path / "list.nbtrain", lambda m: {**m, "evidence": ["not", "a", "record"]})
    with pytest.raises(DataError, match=r"its manifest is malformed: 'evidence' should be null or an object; found "
                                        r"\[\"not\", \"a\", \"record\"\]"):
        nt.load(listed)
    odd = rewrite(path, tmp_path / "odd.nbtrain", lambda m: {**m, "evidence": {"split": 3, "test": {"status": 7}}})
    text = repr(nt.load(odd))
    assert "Split: not recorded." in text and "Validation: not recorded." in text


def test_the_model_card_holds_metrics_evidence_and_the_doctors_findings(tmp_path):
    pipe, _ = trained(tmp_path / "runs", doctor=True, epochs=3)
    run = pipe.last_run
    card = pipe.model_card()
    assert card.startswith("---\nlibrary_name: nbtrain\npipeline_tag: tabular-classification\n")
    assert f"# {run.name}\n" in card
    assert "multiclass classification over 'a', 'b', 'c'" in card
    assert "## Intended use\n\n_To be written by the model's owner" in card
    assert f"| metric | validation (best epoch {run.best_epoch}) |\n" in card
    assert f"| log_loss | {run.best_metrics['val_log_loss']:.4g} |" in card
    assert "Test scores: not shown here." in card
    assert "- Test: not yet evaluated; the 90 test rows were sealed" in card
    findings = pipe.diagnose(run)
    for finding in findings:
        assert f"| {finding.severity} | {finding.code} |" in card
    if not len(findings):
        assert "None: the doctor found nothing to flag." in card
    report = pipe.test()
    tested = pipe.model_card(test=report)
    assert f"| metric | validation (best epoch {run.best_epoch}) | test |" in tested
    assert f"| accuracy | {run.best_metrics['val_accuracy']:.4g} | {report.metrics['accuracy']:.4g} |" in tested
    assert "this run's score is the first look at the test split" in tested
    written = tested.save(tmp_path / "card" / "README.md")
    assert written.read_text(encoding="utf-8") == tested
    assert tested._repr_markdown_() == tested


def test_a_model_card_refuses_another_runs_test_report(tmp_path):
    pipe, _ = trained(tmp_path / "runs", baseline=True)
    network = next(r for r in pipe._runs() if r.kind == "nn")
    baseline = next(r for r in pipe._runs() if r.kind == "baseline")
    report = pipe.test(run=baseline)
    with pytest.raises(ConfigError, match=rf"test= is the test report of run {baseline.name!r}, but this card is of "
                                          rf"run {network.name!r}"):
        pipe.model_card(network.name, test=report)
    assert f"# {baseline.name}\n" in pipe.model_card(test=report)  # the report's run by default
    assert "| metric | validation |" in pipe.model_card(test=report)  # a baseline has no best epoch


def test_mlflow_runs_carry_the_evidence(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    workdir = tmp_path / "runs"
    pipe, _ = trained(workdir, tracker="mlflow")
    run = pipe.last_run
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    [logged] = client.search_runs([client.get_experiment_by_name("nbtrain-label").experiment_id])
    tags = logged.data.tags
    assert tags["nbtrain.evidence.split_method"] == "stratified"
    assert tags["nbtrain.evidence.split_ratios"] == "0.7/0.15/0.15"
    assert tags["nbtrain.evidence.preprocessing_fitted_on"] == "train (420 rows)"
    assert tags["nbtrain.evidence.runs_compared"] == "1" and tags["nbtrain.evidence.test_status"] == "untested"
    saved = client.download_artifacts(logged.info.run_id, "evidence", str(tmp_path / "down"))
    evidence = json.loads((tmp_path / "down" / "evidence" / "evidence.json").read_text())
    assert evidence["validation"]["run"] == run.name and evidence["split"]["id"] == pipe.split_id
    assert "## Evidence behind the numbers" in (tmp_path / "down" / "evidence" / "README.md").read_text()
    bundle = client.download_artifacts(logged.info.run_id, f"bundle/{run.name}.nbtrain", str(tmp_path / "b"))
    assert nt.load(bundle).evidence["split"]["id"] == pipe.split_id and saved


def test_wandb_runs_carry_the_evidence(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from test_wandb import read_run
    for name in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    pipe, _ = trained(tmp_path / "runs", tracker="wandb")
    run = pipe.last_run
    [folder] = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    found = read_run(folder)
    assert json.loads(found["summary"]["evidence/split_method"]) == "stratified"
    assert json.loads(found["summary"]["evidence/test_status"]) == "untested"
    assert json.loads(found["summary"]["evidence/runs_compared"]) == "1"
    files = found["artifacts"][f"{run.name}-evidence"]
    assert set(files) == {"evidence.json", "README.md"}


def test_other_kinds_get_a_card_with_their_own_evidence(tmp_path):
    """A time series (statsmodels' Mauna Loa CO2, weekly) and implicit feedback: the card reads their split and
    what their preprocessing fitted, and shows nt.load of the run's bundle; a baseline that is not bundled
    (the naive forecast) says so instead."""
    import statsmodels.api as sm
    from test_ranking import interaction_frame
    co2 = sm.datasets.co2.load_pandas().data.reset_index().rename(columns={"index": "week"})
    series = nt.Pipeline(co2, target="co2", kind="timeseries", time_col="week", workdir=tmp_path / "ts")
    series.clean(), series.split(), series.preprocess(lookback=12, horizon=2)
    series.fit(epochs=1, view=None, doctor=False)
    card = series.model_card()
    assert "pipeline_tag: time-series-forecasting" in card
    assert "- Split: time (ratios 70%/15%/15%, seed 0); rows train " in card
    assert "by 'week': train 1958-03-29 to " in card
    assert "the scaler of each series and of the covariates" in card
    assert "nt.load('lstmforecaster-1.nbtrain')" in card and "bundle yet" not in card
    series.baseline()
    naive = series.model_card(run=next(r.name for r in series._runs() if r.kind == "baseline"))
    assert "nt.load(" not in naive and "not saved as an nbtrain bundle yet" in naive
    feedback = nt.Pipeline.from_interactions(interaction_frame(times=True), user="user", item="item", time="when",
                                             workdir=tmp_path / "ia")
    feedback.clean(), feedback.split(), feedback.preprocess()
    feedback.fit(epochs=1, view=None, doctor=False)
    card = feedback.model_card()
    assert "the user and item index maps" in card and "ranked 1 of 1 by validation ndcg@10" in card
    assert "nt.load('matrixfactorization-1.nbtrain')" in card
