"""fit(tracker="wandb"): a run logged by the real wandb client, offline, and read back from its file on disk."""

import struct
import zipfile

import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.errors import ConfigError
from nbtrain.tracking import WandB
from nbtrain.training import Callback

from trained import trained

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402  (after the skip: W&B is an optional extra)

_BLOCK, _HEADER = 32768, 7   # W&B's run file is a LevelDB-style log: 32 KiB blocks, 7-byte record headers
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path):
    """Every Record of a W&B run file (`run-<id>.wandb`), decoded with W&B's own protobuf classes."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    out, chunks, at = [], [], _HEADER   # the file opens with its own 7-byte header (":W&B", magic, version)
    while at + _HEADER <= len(data):
        left = _BLOCK - at % _BLOCK
        if left < _HEADER:          # a block's tail too short for a header is padding
            at += left
            continue
        _, length, kind = struct.unpack("<IHB", data[at:at + _HEADER])
        if kind == 0 and length == 0:
            at += left
            continue
        chunks.append(data[at + _HEADER:at + _HEADER + length])
        at += _HEADER + length
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            out.append(record)
            chunks = []
    return out


def read_run(folder):
    """What the offline run holds: history rows by step, config, summary, artifacts, exit code."""
    [path] = folder.glob("run-*.wandb")
    found = {"history": {}, "config": {}, "summary": {}, "artifacts": {}, "exit": None, "name": None}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
            if "_step" in items:
                found["history"].setdefault(int(items["_step"]), {}).update(items)
        elif kind == "config":
            found["config"].update({i.key: i.value_json for i in record.config.update})
        elif kind == "summary":
            found["summary"].update({i.key or "/".join(i.nested_key): i.value_json for i in record.summary.update})
        elif kind == "artifact":
            found["artifacts"][record.artifact.name] = {m.path: m.local_path for m in record.artifact.manifest.contents}
        elif kind == "run":
            found["name"] = record.run.display_name or found["name"]
        elif kind == "exit":
            found["exit"] = record.exit.exit_code
    return found


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    """No credentials and no WANDB_MODE, as on a fresh machine: nbtrain must go offline, never prompt."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR"):  # keep W&B's files in the test's folder
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


def test_a_run_is_logged_offline_without_a_login_and_reads_back(workdir, tmp_path, no_login, one_thread):
    pipe, frame = trained(workdir, epochs=3, tracker="wandb")
    run = pipe.last_run
    [folder] = (workdir.resolve() / "wandb").glob("offline-run-*")
    assert run.notes[-1] == (f"Logged to W&B offline (no W&B credentials and no WANDB_MODE, so nbtrain did not "
                             f"wait for a login): {folder}. Upload it with `wandb sync {folder}`.")
    logged = read_run(folder)
    assert logged["name"] == run.name and logged["exit"] == 0
    assert sorted(logged["history"]) == list(run.history["epoch"])
    for _, row in run.history.iterrows():
        assert float(logged["history"][int(row.epoch)]["val_loss"]) == pytest.approx(row.val_loss)
    assert logged["config"]["lr"] == "0.001" and logged["config"]["epochs"] == "3"
    assert float(logged["summary"]["best_accuracy"]) == pytest.approx(run.best_metrics["val_accuracy"])
    assert logged["summary"]["stop_reason"] == f'"{run.stop_reason}"'
    assert set(logged["artifacts"]) == {f"{run.name}-checkpoint", f"{run.name}-bundle", f"{run.name}-evidence"}
    assert list(logged["artifacts"][f"{run.name}-checkpoint"]) == ["best.pt"]
    # the bundle artifact's staged file is a real bundle: nt.load reads it and predicts as the pipeline does
    staged = logged["artifacts"][f"{run.name}-bundle"][f"{run.name}.nbtrain"]
    assert zipfile.is_zipfile(staged) and str(tmp_path) in staged
    rows = frame.loc[pipe.val.index]
    pd.testing.assert_frame_equal(nt.load(staged).predict(rows), pipe.predict(rows, run=run))


def test_mlflow_and_wandb_together(workdir, no_login, monkeypatch, one_thread):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pipe, _ = trained(workdir, tracker=["mlflow", "wandb"])
    notes = pipe.last_run.notes
    assert any(n.startswith("Logged to MLflow: run ") for n in notes)
    assert any(n.startswith("Logged to W&B offline") for n in notes)
    assert (workdir / "mlflow.db").is_file() and list((workdir / "wandb").glob("offline-run-*"))


def test_a_mode_you_set_is_used_and_said(workdir, no_login, monkeypatch, one_thread):
    monkeypatch.setenv("WANDB_MODE", "offline")
    pipe, _ = trained(workdir, tracker=WandB(project="penguins"))
    assert pipe.last_run.notes[-1].startswith("Logged to W&B offline: ")


class Boom(Callback):
    def on_epoch_end(self, state):
        raise RuntimeError("boom")


def test_a_run_that_raises_ends_as_failed(workdir, no_login, one_thread):
    with pytest.raises(RuntimeError, match="boom"):
        trained(workdir, tracker="wandb", callbacks=[Boom()])
    [folder] = (workdir.resolve() / "wandb").glob("offline-run-*")
    assert read_run(folder)["exit"] == 1


def test_tracking_uri_without_mlflow_is_refused_before_training(workdir, no_login):
    with pytest.raises(ConfigError, match=r"tracking_uri='sqlite:///x.db' is where MLflow logs, but "
                                          r"tracker='wandb' has no MLflow"):
        trained(workdir, tracker="wandb", tracking_uri="sqlite:///x.db")


def test_a_wandb_service_that_is_gone_is_one_warning_and_the_run_goes_on(workdir, no_login, monkeypatch, one_thread):
    """W&B's service process can die under a kernel (its folder removed, killed); its client then raises
    MailboxClosedError, which is no wandb.Error: it must not end the run."""
    import wandb
    from wandb.sdk.mailbox.mailbox import MailboxClosedError

    def gone(*args, **kwargs):
        raise MailboxClosedError()
    monkeypatch.setattr(wandb, "init", gone)
    with pytest.warns(nt.errors.NbtrainWarning, match=r"Logging to W&B .* failed .*nothing more is sent"):
        pipe, _ = trained(workdir, epochs=2, tracker="wandb")
    assert pipe.last_run.stop_reason == "max_epochs" and pipe.last_run.name in pipe.runs.index
