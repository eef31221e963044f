"""The final test, the run log, TensorBoard logging and the tree baseline."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

import nbtrain as nt
from nbtrain.cli import main as cli_main
from nbtrain.doctor.diagnosis import compare_test_with_validation
from nbtrain.errors import ConfigError, StageError, TestSetLockedError
from nbtrain.training.evaluation import headline_interval, score

from conftest import make_frame

ROOT = Path(__file__).resolve().parents[1]
FAST = {"epochs": 8, "patience": 4}


def trained(df=None, workdir=None, target="label", **fit_options):
    pipe = nt.Pipeline(make_frame(600) if df is None else df, target=target, workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    pipe.fit(**{**FAST, **fit_options})
    return pipe


def regression_frame(n=600):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["x", "y"], n)})
    df["value"] = 3 * df.a - df.b + (df.c == "x") + rng.normal(scale=0.3, size=n)
    return df


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300)
    proba[np.arange(300), y] += 0.6
    proba /= proba.sum(axis=1, keepdims=True)
    ours, labels = score("multiclass", 3, proba, y), proba.argmax(axis=1)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(y, labels))
    for name, fn in (("precision", sk.precision_score), ("recall", sk.recall_score), ("f1", sk.f1_score)):
        assert ours[name] == pytest.approx(fn(y, labels, average="macro"), abs=1e-6), name
    assert ours["auc"] == pytest.approx(sk.roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-6)
    p = rng.random(300)
    yb = (p + rng.normal(scale=0.3, size=300) > 0.5).astype(int)
    binary = score("binary", 2, p, yb)
    assert binary["f1"] == pytest.approx(sk.f1_score(yb, p >= 0.5), abs=1e-6)
    assert binary["auc"] == pytest.approx(sk.roc_auc_score(yb, p), abs=1e-6)
    values, truth = rng.normal(size=300), rng.normal(size=300)
    reg = score("regression", 1, values, truth)
    assert reg["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(truth, values)), rel=1e-5)
    assert reg["mae"] == pytest.approx(sk.mean_absolute_error(truth, values), rel=1e-5)
    assert reg["r2"] == pytest.approx(sk.r2_score(truth, values), rel=1e-5)


def test_test_report_and_predictions_by_original_index(workdir):
    df = make_frame(600).set_axis([f"row{i}" for i in range(600)])
    pipe = trained(df, workdir)
    report = pipe.test()
    test_index = pipe._frame.index[pipe._split.positions["test"]]
    assert list(report.predictions.index) == list(test_index)
    assert list(report.predictions.columns) == ["prediction", "probability_a", "probability_b", "probability_c"]
    truth = df.loc[test_index, "label"]
    assert report.metrics["accuracy"] == pytest.approx((report.predictions["prediction"] == truth).mean())
    assert report.confusion.to_numpy().sum() == len(test_index)
    assert set(report.metrics) == {"accuracy", "precision", "recall", "f1", "auc", "log_loss"}
    assert report.val_metrics["accuracy"] == pipe._runs()[-1].best_metrics["val_accuracy"]
    low, high = report.interval
    assert low <= report.metrics["accuracy"] <= high
    assert pipe.stage == "tested" and not report.reused
    assert "95% interval" in repr(report) and ", Wilson)" in repr(report) and "Confusion matrix" in report._repr_html_()


def test_regression_test_report(workdir):
    pipe = trained(regression_frame(), workdir, target="value", epochs=30)
    report = pipe.test()
    assert set(report.metrics) == {"rmse", "mae", "r2"} and report.confusion is None
    truth = pipe._frame["value"].iloc[pipe._split.positions["test"]]
    rmse = np.sqrt(np.mean((report.predictions["prediction"] - truth) ** 2))
    assert report.metrics["rmse"] == pytest.approx(rmse, rel=1e-4) and report.metrics["r2"] > 0.8


def test_a_second_test_is_refused_and_an_override_is_flagged(workdir):
    pipe = trained(workdir=workdir)
    first = pipe.test()
    with pytest.raises(TestSetLockedError, match=r'already evaluated at .* \(run "mlp-1"\).*reuse_reason'):
        pipe.test()
    again = pipe.test(reuse_reason="checking a bug fix in predict")
    assert again.reused and again.reuse_reason == "checking a bug fix in predict"
    assert "the estimate is optimistic" in repr(again) and not first.reused
    later = pipe.test(reuse_reason="once more")
    assert later.reused
    evaluations = nt.pipeline.Ledger(workdir).test_evaluations()
    assert [e.reuse_reason for e in evaluations] == [None, "checking a bug fix in predict", "once more"]


def test_lock_survives_a_kernel_restart_and_a_resplit(workdir, tmp_path):
    data = tmp_path / "data.pkl"
    make_frame(600).to_pickle(data)
    script = (f"import pandas as pd, nbtrain as nt\n"
              f"pipe = nt.Pipeline(pd.read_pickle({str(data)!r}), target='label', workdir={str(workdir)!r})\n"
              "pipe.clean(); pipe.split(); pipe.preprocess(); pipe.fit(epochs=3); pipe.test()\n")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
    restarted = trained(pd.read_pickle(data), workdir)  # "after the restart": same data, same folder
    with pytest.raises(TestSetLockedError):
        restarted.test()
    assert len(restarted.runs) == 2  # the other process's run is in the table too
    resplit = nt.Pipeline(pd.read_pickle(data), target="label", workdir=workdir)
    resplit.clean(), resplit.split(seed=7), resplit.preprocess(), resplit.fit(epochs=3)
    with pytest.raises(TestSetLockedError):
        resplit.test()


def test_a_failed_evaluation_releases_the_lock(workdir, monkeypatch):
    pipe = trained(workdir=workdir)

    def broken(*args):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(pipe, "_predict", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        pipe.test()
    monkeypatch.undo()
    assert not pipe.test().reused


def test_test_needs_a_run_and_picks_the_best(workdir):
    pipe = nt.Pipeline(make_frame(600), target="label", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    with pytest.raises(StageError, match=r"test\(\) comes after fit\(\) or baseline\(\)"):
        pipe.test()
    weak = pipe.fit(epochs=1, lr=1e-5)
    strong = pipe.fit(epochs=15)
    assert strong.best_metrics["val_accuracy"] > weak.best_metrics["val_accuracy"]
    with pytest.raises(ConfigError, match=r"No run named 'mlp-9'"):
        pipe.test(run="mlp-9")
    assert pipe.test().run == strong.name


def test_runs_table_compares_runs_and_survives_a_restart(workdir):
    pipe = trained(workdir=workdir)
    pipe.baseline()
    pipe.fit(epochs=3, lr=3e-3, cell_text="%%train --epochs 3 --lr 3e-3")
    table = pipe.runs
    assert list(table["kind"]).count("baseline") == 1 and len(table) == 3
    assert table["val_log_loss"].is_monotonic_increasing  # sorted by the selection metric, best first
    assert {"val_accuracy", "val_f1", "lr", "parameters", "stop_reason", "samples_per_s"} <= set(table.columns)
    assert table["test_pick"].tolist() == [True, False, False]
    fresh = nt.Pipeline(make_frame(600), target="label", workdir=workdir)  # a new kernel, same data
    fresh.clean(), fresh.split()
    assert not fresh.runs["test_pick"].any()  # no run of that kernel holds a model to test
    pd.testing.assert_frame_equal(fresh.runs.drop(columns="test_pick"), table.drop(columns="test_pick"))
    ledger = nt.pipeline.Ledger(workdir)
    assert [r["cell_text"] for r in ledger.runs(pipe.fingerprint)][-1] == "%%train --epochs 3 --lr 3e-3"
    assert len(ledger.epochs("mlp-2")) == 3


def test_tensorboard_event_files_have_the_expected_tags(workdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    pipe = trained(workdir=workdir)
    run = pipe._runs()[-1]
    events = EventAccumulator(str(workdir / "runs" / run.name)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "val/accuracy", "val/f1", "val/auc", "lr"} <= tags
    assert [e.step for e in events.Scalars("loss/val")] == list(range(1, len(run.history) + 1))
    assert len(events.Scalars("lr")) == len(run.lrs)
    assert events.Scalars("loss/val")[-1].value == pytest.approx(run.history["val_loss"].iloc[-1])
    plugins = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugins)
    assert b"batch_size" in plugins["_hparams_/session_start_info"]


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_the_tree_baseline_is_a_run(workdir, task):
    df, target = (make_frame(600), "label") if task == "multiclass" else (regression_frame(), "value")
    df.loc[df.index[:40], df.columns[0]] = np.nan  # trees route gaps natively
    pipe = nt.Pipeline(df, target=target, workdir=workdir)
    pipe.clean(missing={df.columns[0]: "sentinel"}), pipe.split()
    base = pipe.baseline()
    assert base.kind == "baseline" and base.config["model"].startswith("HistGradientBoosting")
    metrics = base.best_metrics
    if task == "multiclass":
        assert metrics["val_accuracy"] > 0.6 and {"val_f1", "val_auc", "val_loss"} <= set(metrics)
    else:
        assert metrics["val_r2"] > 0.8 and "val_rmse" in metrics
    assert "Baseline" in repr(base)
    pipe.preprocess()
    run = pipe.fit(epochs=2, lr=1e-4)
    assert any("tree baseline" in note for note in run.notes)


@pytest.mark.parametrize("library, model", [("lightgbm", "LGBMClassifier"), ("xgboost", "XGBClassifier")])
def test_other_tree_libraries(workdir, library, model):
    pytest.importorskip(library)
    df = make_frame(600)
    df.loc[df.index[:40], "x1"] = np.nan
    pipe = nt.Pipeline(df, target="label", workdir=workdir)
    pipe.clean(missing={"x1": "sentinel"}), pipe.split()
    run = pipe.baseline(library=library)
    assert run.config["model"] == model and run.best_metrics["val_accuracy"] > 0.55
    assert run.name == f"baseline-{library}-{pipe.split_id[:6]}"


def test_baseline_needs_a_split_and_a_known_library(frame, workdir):
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    with pytest.raises(nt.LeakageError, match=r"baseline\(\) fits a model; before split\(\)"):
        pipe.baseline()
    pipe.clean(), pipe.split()
    with pytest.raises(ConfigError, match=r"library='catboost' is not one of"):
        pipe.baseline(library="catboost")


def test_baseline_comparison_suggests_trees_when_they_win(workdir, penguins):
    pipe = nt.Pipeline(penguins, target="species", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    pipe.baseline()
    weak = pipe.fit(epochs=1, lr=1e-6)
    note = next(n for n in weak.notes if "baseline" in n)
    assert note.startswith("The tree baseline") and "consider them" in note


def test_headline_interval_and_the_overfit_validation_diagnosis():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    p = np.where(rng.random(2000) < 0.8, y, 1 - y).astype(float)  # 80% right
    low, high, method = headline_interval("binary", p, y, seed=0)
    assert method == "Wilson"
    assert low < 0.8 < high and high - low < 0.05
    assert compare_test_with_validation("accuracy", True, 0.8, 0.81, (low, high)) is None
    found = compare_test_with_validation("accuracy", True, 0.8, 0.9, (low, high))
    assert found.code == "test_worse_than_validation" and "overfit by repeated model selection" in found.fix
    assert compare_test_with_validation("rmse", False, 2.0, 1.0, (1.8, 2.2)).severity == "warning"


def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    assert cli_main(["demo", "--workdir", str(tmp_path), "--epochs", "15"]) == 0
    out = capsys.readouterr().out
    for title in ("Cleaning report", "Split report", "Preprocessing report", "Baseline", "Run 'mlp-1'",
                  "Runs, best first", "Test report"):
        assert title in out
