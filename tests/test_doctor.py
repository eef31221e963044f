"""The training doctor: a battery of deliberately broken set-ups, each with the diagnosis that must
rank first; the live findings, the ledger record, auto_fix; the learning-rate finder on problems
whose good range is known."""

import json
import math
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn

import nbtrain as nt
from nbtrain import ledger as ledger_module
from nbtrain import ledger_file
from nbtrain.doctor import CODES, Diagnosis, DoctorReport
from nbtrain.doctor.fixes import format_value, train_line
from nbtrain.doctor.rules import Evidence, oscillating, overfitting
from nbtrain.errors import ConfigError, StageError
from nbtrain.training import Callback
from nbtrain.data.preprocess import Arrays
from nbtrain.training.loop import Batches

from conftest import make_frame

QUIET = {"view": None}


def ready(df=None, workdir=None, target="label", preprocess=None, **options):
    pipe = nt.Pipeline(make_frame(600) if df is None else df, target=target, workdir=workdir, **options)
    pipe.clean(), pipe.split(), pipe.preprocess(**(preprocess or {}))
    return pipe


def first(run) -> Diagnosis:
    assert run.diagnoses, f"run {run.name} got no diagnosis"
    return run.diagnoses[0]


def codes(run) -> list:
    return [d.code for d in run.diagnoses]


class Log(TransformerMixin, BaseEstimator):
    """A user's scaler that takes logs: NaN for negative numbers, -inf for zeros."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.asarray(X, dtype=float))

    def get_feature_names_out(self, names=None):
        return np.asarray(names, dtype=object)


def plain_net(n_inputs, n_outputs, width=64, depth=2, last=None):
    layers, size = [], n_inputs
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    layers.append(nn.Linear(size, n_outputs))
    return nn.Sequential(*layers, *([last] if last is not None else []))


# --- the battery: one broken set-up each, and the diagnosis that must rank first ---------------------


def test_nan_in_the_inputs_names_columns_and_rows(workdir):
    pipe = ready(workdir=workdir, preprocess={"scaler": Log()})  # x1 is normal: half its logs are NaN
    run = pipe.fit(epochs=5, **QUIET)
    assert run.stop_reason == "non_finite_loss" and len(run.history) == 1
    top = first(run)
    assert top.code == "bad_input_values" and top.severity == "error"
    bad_rows = pipe.train.index[~np.isfinite(pipe.train.X).all(axis=1)]
    assert f"'x1' ({int((~np.isfinite(pipe.train.X[:, 0])).sum())} rows)" in top.evidence
    assert repr(bad_rows[0]) in top.evidence and "color_red" not in top.evidence
    assert "non_finite_loss" in codes(run) and "lr_too_high" not in codes(run)
    assert all(torch.isfinite(p).all() for p in run.model.parameters())  # the initial weights, kept


def test_lr_10_diverges_and_is_lr_too_high(workdir):
    pipe = ready(workdir=workdir)
    run = pipe.fit(lr=10, epochs=6, **QUIET)
    top = first(run)
    assert top.code == "lr_too_high" and top.severity == "error"
    assert "%%train --lr 1 --epochs 6" in top.fix


def test_a_nan_from_a_too_high_lr_stops_at_that_step(workdir):
    pipe = ready(workdir=workdir)
    steps_per_epoch = math.ceil(len(pipe.train) / 32)
    run = pipe.fit(plain_net(pipe.n_inputs, 3, depth=4), optimizer="sgd", lr=30.0, batch_size=32, epochs=20,
                   schedule="none", **QUIET)
    assert run.stop_reason == "non_finite_loss"
    assert len(run.lrs) < steps_per_epoch  # stopped mid-epoch, at the first non-finite step
    assert codes(run)[:2] == ["lr_too_high", "non_finite_loss"]
    assert f"step {len(run.lrs)} (epoch 1)" in run.diagnoses[1].evidence
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_lr_1e_7_is_lr_too_low_and_not_decreasing(workdir):
    pipe = ready(workdir=workdir)
    run = pipe.fit(lr=1e-7, epochs=6, **QUIET)
    assert codes(run)[:2] == ["lr_too_low", "not_decreasing"]
    assert "%%train --lr 1e-6 --epochs 6" in first(run).fix
    assert "lr_too_low" in run.diagnoses[1].fix  # the symptom names its ranked cause


def test_sigmoid_with_mse_is_refused_for_classification_and_diagnosed_for_regression(workdir):
    binary = ready(make_frame(400, classes=("no", "yes")), workdir)
    with pytest.raises(ConfigError, match=r"sigmoid output trained with MSELoss on a binary task"):
        binary.fit(nn.Sequential(nn.Linear(binary.n_inputs, 1), nn.Sigmoid()), loss=nn.MSELoss(), **QUIET)
    pipe = ready(_regression_frame(), workdir, target="price")
    run = pipe.fit(plain_net(pipe.n_inputs, 1, last=nn.Sigmoid()), epochs=4, **QUIET)
    top = first(run)
    assert top.code == "activation_loss_mismatch" and top.severity == "error"
    assert "bounded to [0, 1]" in top.evidence and "Sigmoid" in top.evidence


class SoftmaxInForward(nn.Module):
    """Softmax applied inside forward, where no module inspection can see it."""

    def __init__(self, n_inputs, n_outputs):
        super().__init__()
        self.net = plain_net(n_inputs, n_outputs)

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


def test_softmax_before_cross_entropy(workdir):
    pipe = ready(workdir=workdir)
    with pytest.raises(ConfigError, match=r"ends in Softmax, but the loss \(CrossEntropyLoss\)"):
        pipe.fit(nn.Sequential(nn.Linear(pipe.n_inputs, 3), nn.Softmax(dim=1)), **QUIET)
    run = pipe.fit(SoftmaxInForward(pipe.n_inputs, 3), epochs=4, **QUIET)
    top = first(run)
    assert top.code == "activation_loss_mismatch" and "sum to 1 per row" in top.evidence


def test_a_relu_output_for_regression(workdir):
    pipe = ready(_regression_frame(), workdir, target="price")
    run = pipe.fit(plain_net(pipe.n_inputs, 1, last=nn.ReLU()), epochs=4, **QUIET)
    assert first(run).code == "activation_loss_mismatch" and "never negative" in first(run).evidence


def test_a_huge_model_on_a_hundred_rows_overfits(workdir):
    pipe = ready(make_frame(100), workdir)
    run = pipe.fit(nt.models.MLP(pipe.n_inputs, 3, hidden=(1024, 1024), dropout=0.0), epochs=40, patience=None,
                   **QUIET)
    top = first(run)
    assert top.code == "overfitting"
    assert "parted at epoch" in top.evidence and "dropout 0." in top.fix and "--weight-decay 0.1" in top.fix
    assert "pipe.baseline()" in top.fix  # tabular: the trees


def test_a_model_too_small_for_the_task_underfits(workdir):
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1, 1, size=(800, 2))
    df = pd.DataFrame(xy, columns=["a", "b"]).assign(inside=np.where((xy ** 2).sum(axis=1) < 0.5, "in", "out"))
    pipe = ready(df, workdir, target="inside")
    baseline = pipe.baseline()
    run = pipe.fit(nn.Linear(2, 1), epochs=15, lr=1e-2, **QUIET)
    top = first(run)
    assert top.code == "underfitting"
    assert baseline.name in top.evidence and "capacity" in top.fix.lower()


def test_a_rare_class_the_default_decision_never_names(workdir):
    df = make_frame(1500, classes=("a", "b"))
    rare = np.random.default_rng(1).choice(len(df), size=45, replace=False)
    df.loc[rare, "label"] = "c"  # 3% of rows, unrelated to the features: a minority the model can ignore
    pipe = ready(df, workdir)
    run = pipe.fit(epochs=8, **QUIET)
    top = first(run)
    assert top.code == "class_imbalance" and "'c'" in top.evidence and "recall is 0.00" in top.evidence
    assert "--threshold balanced" in top.fix and top.severity == "warning"


def test_an_oscillating_run(workdir):
    pipe = ready(workdir=workdir)
    run = pipe.fit(optimizer="sgd", lr=1.0, schedule="none", batch_size=32, epochs=24, patience=None, **QUIET)
    top = first(run)
    assert top.code == "oscillating" and "reversed direction" in top.evidence
    assert "--schedule cosine" in top.fix


class SlowBatches(Batches):
    def take(self, rows):
        time.sleep(0.02)  # a source that reads every batch from a slow disk
        return super().take(rows)


def test_a_slow_data_source_is_data_bound(workdir, monkeypatch, one_thread):
    pipe = ready(workdir=workdir)
    original = Arrays.batches
    monkeypatch.setattr(Arrays, "batches", lambda *a: SlowBatches(**vars(original(*a))))
    run = pipe.fit(epochs=2, batch_size=32, **QUIET)
    top = first(run)
    assert top.code == "data_bound" and "samples/s on cpu" in top.evidence and "num_workers" in top.fix
    assert any(note.startswith("Where the training time went") for note in run.notes)


def test_dead_units_at_the_start_are_poor_init(workdir):
    pipe = ready(workdir=workdir)
    model = plain_net(pipe.n_inputs, 3, depth=3)
    for layer in list(model)[:-1:2]:
        nn.init.constant_(layer.bias, -10.0)  # every ReLU starts, and stays, off
    run = pipe.fit(model, epochs=5, **QUIET)
    top = first(run)
    assert top.code == "poor_init" and "dead units" in top.evidence and "kaiming_normal_" in top.fix
    assert "not_decreasing" in codes(run)


@pytest.mark.parametrize("df, target", [(None, "label"), ("penguins", "species")])
def test_a_well_behaved_run_raises_no_alarm(workdir, penguins, df, target):
    pipe = ready(penguins if df == "penguins" else None, workdir, target=target)
    run = pipe.fit(epochs=40, **QUIET)
    assert run.diagnoses == []
    assert pipe.diagnose().codes == [] and "no findings" in repr(pipe.diagnose())


# --- live, stored, reported, retried -----------------------------------------------------------------


class Watch(Callback):
    """Reads the live diagnoses after each epoch, as a training view does."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, state):
        self.seen.append([d.code for d in state.diagnoses])


def test_diagnoses_appear_live_while_the_run_trains(workdir):
    pipe = ready(workdir=workdir)
    watch = Watch()
    pipe.fit(lr=1e-7, epochs=4, callbacks=[watch], **QUIET)
    assert watch.seen[0] and watch.seen[0][0] == "lr_too_low"  # after the first epoch already


def test_the_doctor_does_not_change_the_run(workdir):
    with_doctor = ready(workdir=workdir / "a").fit(epochs=4, seed=1, **QUIET)
    without = ready(workdir=workdir / "b").fit(epochs=4, seed=1, doctor=False, **QUIET)
    assert with_doctor.history["val_loss"].tolist() == without.history["val_loss"].tolist()
    assert without.diagnoses == []


def test_diagnoses_are_stored_and_survive_a_restart(workdir):
    pipe = ready(workdir=workdir)
    run = pipe.fit(lr=1e-7, epochs=4, **QUIET)
    fresh = nt.Pipeline(make_frame(600), target="label", workdir=workdir)  # a new kernel
    fresh.clean(), fresh.split()
    report = fresh.diagnose(run.name)
    assert isinstance(report, DoctorReport) and report.codes == codes(run) and report[0] == run.diagnoses[0]
    assert "lr_too_low" in report._repr_html_() and "Fix:" in repr(report)
    assert "Diagnoses (most important first)" in repr(run)
    with pytest.raises(StageError, match=r"no run named 'mlp-9'"):
        fresh.diagnose("mlp-9")


def test_auto_fix_retries_once_with_a_tenth_of_the_lr(workdir):
    pipe = ready(workdir=workdir)
    cell = "%%train pipe --lr 10 --epochs 4\nmodel = None"
    run = pipe.fit(lr=10.0, epochs=4, auto_fix=True, cell_text=cell, **QUIET)
    assert run.name == "mlp-2" and run.config["lr"] == pytest.approx(1.0)
    assert "a retry of 'mlp-1' (lr_too_high)" in run.notes[-1]
    stored = {r["name"]: r for r in pipe.ledger.runs(pipe.fingerprint)}
    assert set(stored) == {"mlp-1", "mlp-2"}
    assert stored["mlp-1"]["diagnoses"][0]["code"] == "lr_too_high"
    assert stored["mlp-2"]["cell_text"] == "%%train pipe --lr 1 --epochs 4\nmodel = None"


def test_validation_overuse_counts_the_runs_on_the_split(workdir):
    pipe = ready(workdir=workdir)
    run = pipe.fit(epochs=3, **QUIET)
    record = pipe.ledger.runs(pipe.fingerprint)[0]
    for i in range(30):
        pipe.ledger.record_run({**record, "name": f"other-{i}"}, [])
    report = pipe.diagnose()
    assert report.codes == ["validation_overuse"] and report[0].severity == "warning"
    assert "31 runs have been compared" in report[0].evidence
    assert run.diagnoses == []  # judged when asked: the run itself came first


def test_a_version_2_ledger_gains_the_diagnoses_column(tmp_path):
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:  # a ledger as nbtrain wrote it at schema version 2
        for statement in [s for step in ledger_file._MIGRATIONS[:2] for s in step]:
            conn.execute(statement)
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [("app", "nbtrain"), ("schema_version", "2")])
        conn.execute("INSERT INTO runs VALUES ('mlp-1', 'd', 's', 'nn', 'MLP', 1, '{}', 'val_loss', 'min', 1, 0.5,"
                     " '{}', 'patience', 1.0, 1.0, NULL, '2026-01-01T00:00:00+00:00')")
    assert ledger_module.Ledger(tmp_path).runs("d")[0]["diagnoses"] == []
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        assert json.loads(conn.execute("SELECT diagnoses FROM runs").fetchone()[0]) == []


# --- rules and fixes on their own --------------------------------------------------------------------


def test_fix_lines_mirror_fit_keywords():
    assert format_value(1e-4) == "1e-4" and format_value(3e-3) == "3e-3" and format_value(0.1) == "0.1"
    assert format_value(None) == "none" and format_value(True) == "true"
    assert train_line({"weight_decay": 0.1}, {"lr": 1e-3}) == "%%train --lr 1e-3 --weight-decay 0.1"
    assert train_line({"lr": 1e-4}, None, "%%train p --lr 1e-3 --epochs 5\nmodel = m") == \
        "%%train p --lr 1e-4 --epochs 5"
    assert set(CODES) >= {"non_finite_loss", "data_bound", "validation_overuse", "test_worse_than_validation"}


def test_the_oscillation_statistic_and_the_overfitting_gap():
    ev = Evidence(task="multiclass", settings={"lr": 0.1, "schedule": "cosine", "weight_decay": 0.01})
    calm = [{"val_loss": 0.5 + 0.001 * (-1) ** e, "train_loss": 0.5} for e in range(20)]
    swinging = [{"val_loss": 0.5 + 0.1 * (-1) ** e, "train_loss": 0.5} for e in range(20)]
    assert oscillating(ev, calm) == []
    found = oscillating(ev, swinging)
    assert found[0].changes == {"lr": pytest.approx(0.1 / 3)} and "at 8 of 8 epochs" in found[0].diagnosis.evidence
    parting = [{"val_loss": v, "train_loss": t} for v, t in [(1.0, 1.2), (0.8, 0.9), (0.9, 0.6), (1.0, 0.4),
                                                             (1.2, 0.3), (1.3, 0.2)]]
    found = overfitting(ev, parting, None)
    assert "parted at epoch 2" in found[0].diagnosis.evidence and "dropout 0.3" in found[0].diagnosis.fix
    assert overfitting(ev, parting[:3], None) == []


# --- the learning-rate finder ----------------------------------------------------------------------


def _regression_frame(n=800, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["price"] = 50_000 + 20_000 * df["a"] - 5_000 * df["b"] + rng.normal(scale=1_000, size=n)
    return df


def _linear_problem(scale: float, workdir):
    """y = X w + noise with independent features of sd `scale`, left unscaled: the MSE's Hessian is
    2 scale^2 I, so SGD with Nesterov momentum 0.9 diverges above lr = 0.68 / scale^2."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 4)) * scale
    df = pd.DataFrame(X, columns=list("abcd")).assign(y=X @ np.array([1.0, -2.0, 0.5, 1.5]) / scale
                                                       + rng.normal(scale=0.1, size=2000))
    return ready(df, workdir, target="y", preprocess={"scaler": "none"})


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_lr_finder_on_a_linear_problem_whose_stable_range_is_known(workdir, scale):
    pipe = _linear_problem(scale, workdir)
    limit = 0.68 / scale ** 2  # the lr where SGD starts to diverge (see _linear_problem)
    report = pipe.lr_find(nn.Linear(4, 1), optimizer="sgd", weight_decay=0.0, batch_size=64)
    assert report.stop_reason in ("diverged", "non_finite_loss")
    assert limit / 3 < report.min_lr < limit * 3  # the curve turns where the theory says
    assert limit / 100 < report.suggested_lr < limit
    assert report.suggested_lr == pytest.approx(report.min_lr / 10)


def test_lr_finder_leaves_model_pipeline_and_randomness_untouched(workdir):
    pipe = ready(workdir=workdir)
    model = nt.models.MLP(pipe.n_inputs, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    report = pipe.lr_find(model, steps=120)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert pipe.stage == "preprocessed" and pipe._runs() == [] and pipe.ledger.runs(pipe.fingerprint) == []
    assert 1e-3 <= report.suggested_lr <= 0.3 and report.line == f"%%train --lr {format_value(report.suggested_lr)}"
    assert report._repr_png_().startswith(b"\x89PNG") and "data:image/png;base64," in report._repr_html_()
    assert "Suggested lr" in repr(report) and "minimum, divided by 10" in repr(report)
    with pytest.raises(ConfigError, match=r"0 < start_lr < end_lr"):
        pipe.lr_find(start_lr=1.0, end_lr=0.1)
