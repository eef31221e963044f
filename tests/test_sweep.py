"""pipe.sweep: trials as ordinary runs, grid coverage, Stop, pruning, and the validation budget."""

import math

import numpy as np
import pytest

import nbtrain as nt
from nbtrain import sweep_space
from nbtrain.doctor.budget import Budget, expected_max
from nbtrain.doctor.rules import validation_overuse
from nbtrain.errors import ConfigError
from nbtrain.training.callbacks import Callback

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


@pytest.fixture
def pipe(penguins, workdir):
    made = nt.Pipeline(penguins, target="species", workdir=workdir)
    made.clean(), made.split(), made.preprocess()
    return made


def test_a_random_sweep_finds_the_learning_rates_that_learn_and_logs_every_trial_as_a_run(pipe, workdir):
    # in 4 epochs an lr of 1e-5 barely moves the weights: the best region is the top of the range
    report = pipe.sweep({"lr": nt.loguniform(1e-5, 1e-1), "hidden": [(32,), (64, 32)]}, trials=6, epochs=4,
                        view=None, seed=3)
    table = report.trials
    assert len(table) == 6 and table["val_log_loss"].is_monotonic_increasing
    assert report.best_params["lr"] > 1e-3 and report.best_params["lr"] == table["lr"].iloc[0]
    assert table["lr"].min() < 1e-3  # the sweep did look at the hopeless region too
    # every trial is an ordinary run: in the ledger, tagged with the sweep, with its TensorBoard folder
    stored = {r["name"]: r for r in pipe.ledger.runs(pipe.fingerprint, pipe.split_id)}
    assert set(stored) == set(table["run"])
    tags = [stored[name]["config"]["sweep"] for name in table["run"]]
    assert {t["id"] for t in tags} == {report.sweep_id} and sorted(t["trial"] for t in tags) == list(range(1, 7))
    assert all((workdir / "runs" / name).is_dir() for name in table["run"])
    best = stored[report.best_run]
    assert best["config"]["lr"] == report.best_params["lr"] and best["cell_text"] == report.best_line
    assert best["config"]["model_config"]["hidden"] == list(report.best_params["hidden"])
    # the runs table and test() agree with the sweep on the best run
    assert pipe.runs.index[0] == report.best_run and pipe.runs["test_pick"].iloc[0]
    best_trial = report.trials.index[0]
    assert pipe.runs["sweep"].iloc[0] == f"{report.sweep_id} #{best_trial}"
    assert report.best_line.startswith("%%train --epochs 4 --seed 3 --lr ") and "hidden=" in report.best_line
    assert report.budget.compared == 6 and report.diagnoses == []  # 6 runs: 1.27 standard errors, under the rule
    assert report._repr_png_()[:4] == b"\x89PNG" and "The best trial's cell" in repr(report)


def test_the_same_seed_draws_the_same_trials():
    space = sweep_space.parse({"lr": nt.loguniform(1e-4, 1e-2), "dropout": (0.1, 0.5), "units": (16, 64)})
    first, again = sweep_space.random_trials(space, 5, seed=7), sweep_space.random_trials(space, 5, seed=7)
    assert first == again and first != sweep_space.random_trials(space, 5, seed=8)
    assert all(1e-4 <= t["lr"] <= 1e-2 and 0.1 <= t["dropout"] <= 0.5 and isinstance(t["units"], int) for t in first)
    # log-uniform: about as many draws in each decade
    many = sweep_space.random_trials(sweep_space.parse({"lr": nt.loguniform(1e-4, 1e-2)}), 2000, seed=0)
    low = np.mean([t["lr"] < 1e-3 for t in many])
    assert 0.45 < low < 0.55


def test_a_grid_sweep_covers_the_grid(pipe):
    report = pipe.sweep({"lr": [1e-3, 1e-2], "weight_decay": [0.0, 0.1], "epochs": 2}, method="grid", view=None)
    seen = {(row.lr, row.weight_decay) for row in report.trials.itertuples()}
    assert seen == {(1e-3, 0.0), (1e-3, 0.1), (1e-2, 0.0), (1e-2, 0.1)} and report.planned == 4
    assert set(report.trials["epochs"]) == {2}
    with pytest.raises(ConfigError, match=r"A grid needs values to list, and dropout is a range .*Give a list"):
        pipe.sweep({"dropout": (0.1, 0.5)}, method="grid", view=None)


class StopIn(Callback):
    """Clicks Stop (pipe.request_stop, what the view's button calls) at an epoch of the n-th run it sees."""

    def __init__(self, pipe, run_number: int, epoch: int):
        self.pipe, self.run_number, self.epoch, self.started = pipe, run_number, epoch, 0

    def on_fit_start(self, state):
        self.started += 1

    def on_epoch_end(self, state):
        if self.started == self.run_number and state.epoch == self.epoch:
            self.pipe.request_stop()


def test_stop_mid_sweep_keeps_the_finished_trials_and_starts_no_more(pipe, capsys):
    report = pipe.sweep({"lr": [1e-3, 2e-3, 3e-3, 4e-3]}, method="grid", epochs=5, patience=None, view="text",
                        callbacks=[StopIn(pipe, 2, 2)])
    assert report.stop_reason == "stopped" and report.planned == 4
    reasons = report.trials.sort_index()["stop_reason"].tolist()
    assert reasons == ["max_epochs", "stopped"]  # trial 2 ended at its step with its best weights; 3 and 4 never began
    assert len(pipe.ledger.runs(pipe.fingerprint, pipe.split_id)) == 2
    assert report.trials.loc[2, "epochs"] == 2
    assert "ended by Stop after 2 of 4 trials (the rest not started)" in capsys.readouterr().out
    # the pipeline stays usable: the next fit is an ordinary run again
    assert pipe.fit(epochs=1, view=None).stop_reason == "max_epochs"


def test_optuna_prunes_a_diverging_trial_early(pipe):
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(direction="minimize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    for lr in (3e-3, 5e-3, 8.0):  # the third diverges: its validation loss is far above the others' from epoch 2
        study.enqueue_trial({"lr": lr})
    report = pipe.sweep({"lr": nt.loguniform(1e-4, 10.0)}, trials=3, method="optuna", study=study, epochs=12,
                        patience=None, optimizer="sgd", view=None)
    diverging = report.trials.set_index("run").loc[report.trials.loc[3, "run"]]
    assert diverging["stop_reason"] == "pruned" and diverging["epochs"] < 12
    assert report.trials.loc[[1, 2], "stop_reason"].tolist() == ["max_epochs", "max_epochs"]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"] and report.pruned == 1
    pruned_run = next(r for r in pipe._runs() if r.name == report.trials.loc[3, "run"])
    assert "its sweep's pruner judged it hopeless" in repr(pruned_run)
    with pytest.raises(ConfigError, match=r"direction is 'maximize'.*direction='minimize'"):
        pipe.sweep({"lr": [1e-3]}, method="optuna", study=optuna.create_study(direction="maximize"), view=None)


def test_model_values_need_a_model_that_takes_them(pipe):
    with pytest.raises(ConfigError, match=r"widht in the space is neither a fit keyword nor a parameter of MLP"):
        pipe.sweep({"widht": [8, 16]}, view=None)
    with pytest.raises(ConfigError, match=r"nothing to search: every value is fixed"):
        pipe.sweep({"lr": 1e-3}, view=None)
    made = []
    report = pipe.sweep({"units": [8, 16]}, method="grid", epochs=1, view=None,
                        model=lambda units: made.append(units) or nt.models.MLP(pipe.n_inputs, pipe.n_outputs,
                                                                                 hidden=(units,)))
    assert made == [8, 16] and report.best_line.endswith(f"# the model: your function with units={report.best_params['units']}")


def test_expected_maximum_of_normals_against_a_simulation():
    rng = np.random.default_rng(0)
    for n in (2, 10, 50):
        simulated = rng.standard_normal((20000, n)).max(axis=1).mean()
        assert expected_max(n) == pytest.approx(simulated, abs=0.02)
    assert expected_max(1) == 0 and expected_max(2) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-6)


def test_the_budget_estimates_the_optimism_of_the_best_of_equally_good_runs():
    # synthetic scores: 20 runs with the same true log loss 0.30, each measured with noise of SE 0.01
    rng = np.random.default_rng(1)
    best = rng.normal(0.30, 0.01, size=(5000, 20)).min(axis=1)
    budget = Budget(compared=20, metric="val_log_loss", best=0.28, standard_error=0.01, source="synthetic")
    assert budget.optimism == pytest.approx(0.30 - best.mean(), rel=0.03)
    assert budget.corrected == pytest.approx(0.28 + budget.optimism)
    assert "may be optimistic by up to 0.0187: expect higher values, up to 0.2987" in budget.describe()


def test_validation_overuse_fires_by_the_budget_rule():
    assert validation_overuse(9, 50, "binary", 0.9) == []  # 1.49 standard errors
    info = validation_overuse(10, 50, "binary", 0.9)[0].diagnosis
    assert info.severity == "info" and "optimistic by about 1.54 standard errors" in info.evidence
    assert validation_overuse(27, 50, "binary", 0.9)[0].diagnosis.severity == "info"
    budget = Budget(compared=28, metric="val_rmse", best=3.0, standard_error=0.2, source="a bootstrap")
    warning = validation_overuse(28, 50, "regression", None, budget)[0].diagnosis
    assert warning.severity == "warning" and "optimistic by up to 0.403" in warning.evidence
    assert "nested resampling" in warning.fix and "fresh validation split from the train rows" in warning.fix


def test_a_time_series_sweep_builds_each_forecaster_from_the_trials_values(workdir):
    from test_timeseries import ready, sine
    pipe = ready(sine(160), workdir, lookback=12, horizon=2)
    with pytest.raises(ConfigError, match=r"hidden is not a fit keyword, so it has to build the model, and the "
                                          r"timeseries kind's default model cannot take them\. Pass model="):
        pipe.sweep({"hidden": [8, 16]}, view=None)
    built = []

    def forecaster(hidden):
        built.append(hidden)
        return nt.models.LSTMForecaster(pipe.n_inputs, pipe.n_outputs, hidden=hidden, layers=1)

    report = pipe.sweep({"hidden": [4, 16], "lr": [1e-2]}, model=forecaster, epochs=4, view=None, doctor=False)
    assert report.method == "grid" and built == [4, 16] and report.metric == "val_rmse"
    assert report.trials["val_rmse"].is_monotonic_increasing
    stored = {r["name"]: r for r in pipe.ledger.runs(pipe.fingerprint, pipe.split_id)}
    assert {stored[n]["config"]["model_config"]["hidden"] for n in report.trials["run"]} == {4, 16}
    assert {stored[n]["config"]["sweep_hidden"] for n in report.trials["run"]} == {4, 16}  # TensorBoard's HParams
    assert report.budget.source.startswith("a bootstrap of its") and report.budget.source.endswith("validation units")
    assert 0 < report.budget.standard_error < report.trials["val_rmse"].iloc[0]
    assert report.best_line.endswith(f"model = forecaster(hidden={report.best_params['hidden']})")


def test_auto_batch_size_and_lr_are_chosen_and_recorded_with_their_reasons(pipe):
    run = pipe.fit(batch_size="auto", lr="auto", epochs=2, view=None)
    finder = pipe.lr_find()
    assert run.config["lr"] == pytest.approx(finder.suggested_lr) and run.config["batch_size"] == 256
    auto = pipe.ledger.runs(pipe.fingerprint, pipe.split_id)[0]["config"]["auto"]
    assert auto["batch_size"].startswith("on the CPU memory does not limit the batch") and auto["batch_size"].endswith(
        "the documented default, 256")
    assert auto["lr"].startswith("the lr finder's suggestion: the lr at the smoothed loss's minimum, divided by 10")
    with pytest.raises(ConfigError, match=r"batch_size must be a whole number >= 1; received 'big'"):
        pipe.fit(batch_size="big", view=None)


def test_the_largest_batch_that_fits_doubles_until_memory_runs_out():
    from nbtrain.autotune import largest_fitting
    memory = 5000  # rows that fit
    assert largest_fitting(lambda rows: rows <= memory, 256, 100_000) == 4096
    assert largest_fitting(lambda rows: rows <= memory, 256, 4500) == 4500  # the whole train split fits
    assert largest_fitting(lambda rows: rows <= 2500, 256, 3000) == 2048
    assert largest_fitting(lambda rows: rows <= 100, 256, 100_000) is None


class InterruptIn(Callback):
    """Kernel > Interrupt (SIGINT) at an epoch of the n-th run it sees."""

    def __init__(self, run_number: int, epoch: int):
        self.run_number, self.epoch, self.started = run_number, epoch, 0

    def on_fit_start(self, state):
        self.started += 1

    def on_epoch_end(self, state):
        if self.started == self.run_number and state.epoch == self.epoch:
            import signal
            signal.raise_signal(signal.SIGINT)


def test_an_interrupt_mid_sweep_ends_it_like_stop(pipe):
    report = pipe.sweep({"lr": [1e-3, 2e-3, 3e-3]}, epochs=4, patience=None, view=None,
                        callbacks=[InterruptIn(1, 2)])
    assert report.stop_reason == "interrupted" and report.trials["stop_reason"].tolist() == ["interrupted"]
    assert "ended by an Interrupt after 1 of 3 trials" in report.ending()


def test_the_same_seed_gives_the_same_sweep(pipe):
    space = {"lr": nt.loguniform(1e-3, 1e-1), "dropout": (0.0, 0.5)}
    first = pipe.sweep(space, trials=3, epochs=3, view=None, seed=5).trials
    again = pipe.sweep(space, trials=3, epochs=3, view=None, seed=5).trials
    columns = ["lr", "dropout", "val_log_loss", "best_epoch"]
    assert first[columns].equals(again[columns])


def test_an_error_in_a_trial_ends_the_sweep_and_optuna_records_the_trial_as_failed(pipe):
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(direction="minimize")

    def broken(units):
        if units == 16:
            raise ValueError("no such layer")
        return nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(units,))

    study.enqueue_trial({"units": 8})
    study.enqueue_trial({"units": 16})
    with pytest.raises(ValueError, match="no such layer"):
        pipe.sweep({"units": [8, 16, 32]}, method="optuna", study=study, trials=3, model=broken, epochs=1, view=None)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    assert pipe._sweep is None and len(pipe.ledger.runs(pipe.fingerprint, pipe.split_id)) == 1
