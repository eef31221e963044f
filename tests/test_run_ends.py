"""fit() ends cleanly whatever happens: an error in a callback, memory that cannot be had, a full disk.
The best weights come back, TensorBoard's writer is closed, the run is in the ledger with stop_reason
"error" and the error's text, and the error reaches the caller."""

import os
import shutil
import subprocess
import threading

import pytest
import torch
from torch import nn

import nbtrain as nt
from nbtrain.errors import ConfigError, DataError
from nbtrain.training import Callback
from nbtrain.training.checkpoint import load_checkpoint

from conftest import make_frame

pytestmark = pytest.mark.usefixtures("one_thread")


def ready(workdir):
    pipe = nt.Pipeline(make_frame(600), target="label", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    return pipe


def tensorboard_threads() -> int:
    return sum(type(t).__name__ == "_AsyncWriterThread" for t in threading.enumerate())


class FailAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise RuntimeError("the callback broke")


def test_an_error_mid_epoch_restores_the_best_weights_and_records_the_run(workdir):
    pipe = ready(workdir)
    threads = tensorboard_threads()
    model = nt.models.MLP(pipe.n_inputs, pipe.n_outputs)
    steps_per_epoch = -(-len(pipe.train) // 64)
    with pytest.raises(RuntimeError, match="the callback broke"):
        pipe.fit(model, batch_size=64, epochs=20, callbacks=[FailAt(3 * steps_per_epoch + 2)], view=None)
    assert tensorboard_threads() == threads  # the run's writer thread was closed
    run = pipe.last_run
    assert run.stop_reason == "error" and run.error == "RuntimeError: the callback broke"
    assert len(run.history) == 3 and run.best_epoch >= 1
    best = load_checkpoint(run.checkpoint)["model"]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())  # not the mid-epoch weights
    record = pipe.ledger.runs(pipe.fingerprint, pipe.split_id)[-1]
    assert (record["name"], record["stop_reason"]) == (run.name, "error")
    assert record["config"]["error"] == "RuntimeError: the callback broke"
    assert "Error: RuntimeError: the callback broke" in repr(run)
    assert pipe.fit(epochs=1, view=None).stop_reason == "max_epochs"  # the pipeline is still usable


class Greedy(nn.Module):
    """The default MLP, but training step `at` asks for more memory than any machine has."""

    def __init__(self, pipe, at):
        super().__init__()
        self.net, self.at, self.calls = nt.models.MLP(pipe.n_inputs, pipe.n_outputs), at, 0

    def forward(self, x):
        self.calls += self.training
        if self.calls == self.at:
            torch.empty(1 << 50, dtype=torch.uint8)  # 1 PiB: the allocator refuses
        return self.net(x)


def test_out_of_memory_ends_the_run_like_any_error(workdir):
    pipe = ready(workdir)
    threads = tensorboard_threads()
    steps_per_epoch = -(-len(pipe.train) // 64)
    with pytest.raises(RuntimeError, match="alloc"):
        pipe.fit(Greedy(pipe, 2 * steps_per_epoch + 1), batch_size=64, epochs=20, view=None)
    run = pipe.last_run
    assert run.stop_reason == "error" and len(run.history) == 2 and "alloc" in run.error
    assert pipe.runs.loc[run.name, "stop_reason"] == "error"
    assert tensorboard_threads() == threads


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a real tmpfs of a given size at a path (root only): a disk that fills up."""
    mounted = []

    def mount(path, size: int):
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode:
            pytest.skip("mounting a small tmpfs needs root")
        mounted.append(path)
        return path
    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_a_data_error_and_the_run_still_ends_cleanly(workdir, tmpfs):
    pipe = ready(workdir)
    model = nt.models.MLP(pipe.n_inputs, pipe.n_outputs)
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    # room for the card, TensorBoard's events and best.pt (the weights), not for last.pt (weights + AdamW's two moments)
    tmpfs(workdir / "runs", size=weights + 48 * 1024)
    threads = tensorboard_threads()
    with pytest.raises(DataError, match=r"writing the checkpoint at '.*/runs/mlp-\d+/last\.pt': the disk is full"):
        pipe.fit(model, epochs=5, view=None)
    run = pipe.last_run
    assert run.stop_reason == "error" and "the disk is full" in run.error
    assert run.best_epoch == 1 and load_checkpoint(run.checkpoint)["state"]["best_epoch"] == 1
    best = load_checkpoint(run.checkpoint)["model"]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    assert pipe.runs.loc[run.name, "stop_reason"] == "error"  # the ledger lives outside the full disk
    assert not list(run.folder.glob(".*.tmp*")) and tensorboard_threads() == threads


def test_best_pt_holds_the_weights_and_last_pt_what_resume_needs(workdir):
    pipe = ready(workdir)
    run = pipe.fit(epochs=3, view=None)
    best, last = load_checkpoint(run.checkpoint), load_checkpoint(run.last_checkpoint)
    assert set(best) == {"format", "version", "model", "config", "state"}
    assert {"optimizer", "scheduler", "generator", "torch_rng"} <= set(last)
    # AdamW keeps two moments per weight: best.pt is about a third of last.pt
    assert run.checkpoint.stat().st_size < 0.5 * run.last_checkpoint.stat().st_size
    with pytest.raises(DataError, match=r"holds a run's best weights only; .* Pass resume='.*mlp-1'"):
        pipe.fit(resume=run.checkpoint)
    # and a model rebuilt from best.pt alone predicts like the run's
    rebuilt = nt.models.MLP(**best["config"]["model_config"])
    rebuilt.load_state_dict(best["model"])
    x = torch.as_tensor(pipe.val.X[:16])
    rebuilt.eval(), run.model.eval()
    assert torch.equal(rebuilt(x), run.model(x))


def test_a_last_pt_is_written_after_every_epoch(workdir):
    pipe = ready(workdir)
    epochs_seen = []

    class Peek(Callback):  # runs after fit's own callbacks: last.pt of this epoch is on disk
        def on_epoch_end(self, state):
            epochs_seen.append(load_checkpoint(run_folder() / "last.pt")["state"]["epoch"])

    def run_folder():
        return workdir / "runs" / "mlp-1"
    pipe.fit(epochs=3, patience=None, callbacks=[Peek()], view=None)
    assert epochs_seen == [1, 2, 3]


def test_no_folder_is_claimed_for_a_run_that_fails_its_checks(workdir):
    pipe = ready(workdir)
    with pytest.raises(ConfigError, match=r"output has shape"):
        pipe.fit(nn.Linear(pipe.n_inputs, 2))
    assert not (workdir / "runs").exists() or not list((workdir / "runs").iterdir())
