"""fit(tracker="mlflow"): a run logged to a real MLflow store on disk, read back through MLflow's client."""

import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.errors import ConfigError
from nbtrain.tracking import MLflow
from nbtrain.training import Callback

from conftest import make_frame
from trained import trained

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402  (after the skip: MLflow is an optional extra)

# MLflow's SQL store triggers this inside SQLAlchemy 2.1; it is about MLflow's code, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


@pytest.fixture(autouse=True)
def no_tracking_uri_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_a_run_is_logged_to_the_local_store_in_the_work_folder(workdir, tmp_path):
    pipe, frame = trained(workdir, epochs=3, tracker="mlflow")
    run = pipe.last_run
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("nbtrain-label")
    assert experiment.artifact_location == (workdir.resolve() / "mlartifacts").as_uri()
    [logged] = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == run.name and logged.info.status == "FINISHED"
    assert run.notes[-1] == (f"Logged to MLflow: run {logged.info.run_id} in experiment 'nbtrain-label' at "
                             f"sqlite:///{workdir.resolve() / 'mlflow.db'}.")
    assert logged.data.params["lr"] == "0.001" and logged.data.params["epochs"] == "3"
    assert logged.data.params["model"] == "MLP" and logged.data.tags["nbtrain.dataset"] == pipe.fingerprint
    history = client.get_metric_history(logged.info.run_id, "val_loss")
    assert [m.step for m in history] == list(run.history["epoch"])
    assert [m.value for m in history] == pytest.approx(list(run.history["val_loss"]))
    assert logged.data.metrics["best_accuracy"] == pytest.approx(run.best_metrics["val_accuracy"])
    artifacts = {a.path for folder in ("checkpoint", "bundle") for a in client.list_artifacts(logged.info.run_id, folder)}
    assert artifacts == {"checkpoint/best.pt", f"bundle/{run.name}.nbtrain"}
    bundle = client.download_artifacts(logged.info.run_id, f"bundle/{run.name}.nbtrain", str(tmp_path))
    rows = frame.loc[pipe.val.index]
    pd.testing.assert_frame_equal(nt.load(bundle).predict(rows), pipe.predict(rows, run=run))


def test_a_tracking_uri_and_experiment_you_give_are_used(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a new experiment's artifacts in ./mlruns: keep them here
    uri = f"sqlite:///{tmp_path / 'team.db'}"
    pipe, _ = trained(workdir, tracker=MLflow(experiment="penguins"), tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    [logged] = client.search_runs([client.get_experiment_by_name("penguins").experiment_id])
    assert logged.info.run_name == pipe.last_run.name
    assert not (workdir / "mlflow.db").exists()


def test_an_unknown_tracker_is_refused_before_training(workdir):
    pipe = nt.Pipeline(make_frame(), target="label", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    with pytest.raises(ConfigError, match=r"tracker='neptune' is not a tracker; use 'mlflow' or 'wandb' \(or a list "
                                          r"of both\), or nbtrain.tracking.MLflow\(uri=..., experiment=...\)"):
        pipe.fit(epochs=1, view=None, tracker="neptune")
    assert not pipe._runs()


class Boom(Callback):
    def on_epoch_end(self, state):
        raise RuntimeError("boom")


def test_a_run_that_raises_is_marked_failed(workdir):
    with pytest.raises(RuntimeError, match="boom"):
        trained(workdir, tracker="mlflow", callbacks=[Boom()])
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    [logged] = client.search_runs([client.get_experiment_by_name("nbtrain-label").experiment_id])
    assert logged.info.status == "FAILED"
