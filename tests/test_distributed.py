"""Training one run on several processes: pipe.fit(devices=N), torchrun as a subprocess, gloo on the CPU.

The multi-process tests start real torchrun process groups of 2 ranks (one torch thread each) on the
penguins table: each costs ~15-30 s on a busy 2-core machine, so there are few of them and each checks
several things. They are marked slow.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from palmerpenguins import load_penguins
from torch import nn

import nbtrain as nt
from nbtrain.distributed.launch import RankError
from nbtrain.distributed.ranks import Ranks
from nbtrain.errors import ConfigError, DataError, LeakageError
from nbtrain.training import fit as training
from nbtrain.training.callbacks import Callback
from nbtrain.training.checkpoint import load_checkpoint

# a model class of this module travels by value, as a notebook cell's would (its workers cannot import tests/)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def penguins(workdir) -> nt.Pipeline:
    pipe = nt.Pipeline(load_penguins(), target="species", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    return pipe


def plain_mlp(pipe) -> nn.Module:
    """No dropout, no batch norm: ranks then compute exactly the global batch's gradient (up to float sums)."""
    torch.manual_seed(0)
    return nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(32,), dropout=0.0, norm="none")


def run_processes() -> list:
    """Processes of nbtrain's runs still alive (torchrun or a rank), anywhere on this machine, started by us."""
    mine = psutil.Process()
    return [p for p in mine.children(recursive=True) if "torch.distributed.run" in " ".join(p.cmdline())
            or "nbtrain.distributed.worker" in " ".join(p.cmdline())]


def row_hashes(X: np.ndarray) -> set:
    return {hash(row.tobytes()) for row in np.ascontiguousarray(X, dtype=np.float32)}


# ---- without processes ----------------------------------------------------------------------------------------

def test_every_row_of_a_batch_goes_to_exactly_one_rank_and_small_tails_sit_out():
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    ranks = [Ranks(rank, 2, "unused") for rank in range(2)]
    trimmed = ranks[0].trim(order, 10)  # 103 = 10 x 10 + 3: a tail of 3 cannot give 2 ranks 2 rows each
    assert len(trimmed) == 100 and torch.equal(trimmed, order[:100])
    assert len(ranks[0].trim(torch.arange(104), 10)) == 104  # a tail of 4: 2 rows each, kept
    for batch in trimmed.split(10):
        shares = [r.mine(batch) for r in ranks]
        assert sorted(torch.cat(shares).tolist()) == sorted(batch.tolist()) and all(len(s) == 5 for s in shares)


def test_devices_are_refused_clearly_where_a_run_cannot_scale_out(tmp_path):
    pipe = penguins(tmp_path)
    with pytest.raises(ConfigError, match=r"batch_size=3 is global \(split across the 2 processes.*pass batch_size >= 4"):
        pipe.fit(devices=2, device="cpu", batch_size=3, view=None)
    with pytest.raises(ConfigError, match=r"devices=2 with resume=: a run on several processes starts afresh"):
        pipe.fit(devices=2, device="cpu", resume=tmp_path, view=None)
    with pytest.raises(ConfigError, match=r"devices must be a whole number >= 1 or 'all'; received 0"):
        pipe.fit(devices=0, device="cpu", view=None)
    with pytest.raises(ConfigError, match=r"goes through Pipeline.fit\(devices=...\), which launches torchrun"):
        training.fit(pipe._fit_data(), devices=2)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # refused before a folder


def test_a_kind_that_cannot_scale_out_says_so(tmp_path):
    frame = pd.DataFrame({"when": pd.date_range("2020-01-01", periods=120, freq="D"),
                          "sales": np.sin(np.arange(120) / 7.0) + np.arange(120) / 50.0})
    pipe = nt.Pipeline(frame, target="sales", time_col="when", kind="timeseries", workdir=tmp_path)
    pipe.clean(), pipe.split(), pipe.preprocess()
    with pytest.raises(ConfigError, match=r"devices=2: a timeseries run trains in one process; several processes "
                                          r"\(torchrun\) train tabular, image and text runs. Pass devices=1."):
        pipe.fit(devices=2, device="cpu", view=None)


# ---- two processes (gloo) -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_train_the_same_run_as_one_and_the_notebook_gets_it(tmp_path, one_thread, capsys):
    pipe = penguins(tmp_path)
    keywords = dict(epochs=3, batch_size=32, lr=3e-3, patience=None, device="cpu", view="text")
    one = pipe.fit(plain_mlp(pipe), **keywords)
    two = pipe.fit(plain_mlp(pipe), devices=2, **keywords)
    shown = capsys.readouterr().out
    assert not run_processes()  # torchrun and both ranks are gone
    # the same rows each epoch: as many optimizer steps (a global batch of 32, 16 rows per rank)
    assert len(two.lrs) == len(one.lrs) == 3 * math.ceil(len(pipe.train) / 32) and len(two.history) == 3
    # the same gradients up to the order of float sums across ranks: 1e-3 relative is far above float32
    # rounding after 24 AdamW steps (~1e-6) and far below what a wrong share or lr scale gives (~10%)
    np.testing.assert_allclose(two.history["val_loss"], one.history["val_loss"], rtol=1e-3)
    np.testing.assert_allclose(two.history["train_loss"], one.history["train_loss"], rtol=1e-3)
    assert two.config["world_size"] == 2 and two.config["backend"] == "gloo"
    assert two.config["batch_size_scope"].startswith("global") and two.config["lr_scaling"].startswith("none")
    best = load_checkpoint(two.checkpoint)["model"]  # rank 0's best weights are in the notebook's model
    assert all(torch.equal(v, best[k]) for k, v in two.model.state_dict().items())
    assert two.best_epoch == 3 and two.diagnoses is not None
    # the text view followed rank 0's epochs; the ledger lists the run with its world size
    assert shown.count("epoch 3/3") == 2 and f"{two.name}: stopped because it reached the epoch limit" in shown
    listed = pipe.ledger.runs(pipe.fingerprint, pipe.split_id)
    assert [r["config"].get("world_size") for r in listed if r["name"] == two.name] == [2]
    # the run spec holds the train and validation rows, and no test row
    spec = two.folder / "spec"
    assert sorted(p.name for p in spec.iterdir()) == ["model.pkl", "options.pkl", "spec.json", "train", "val"]
    written = row_hashes(np.load(spec / "train" / "X.npy")) | row_hashes(np.load(spec / "val" / "X.npy"))
    assert written == row_hashes(pipe.train.X) | row_hashes(pipe.val.X)
    test_X, _ = pipe.preprocessor_.transform(pipe._rows("test"))
    only_test = row_hashes(test_X) - row_hashes(pipe.train.X) - row_hashes(pipe.val.X)
    assert only_test and not (only_test & written)


class InterruptAfter(Callback):
    """Kernel > Interrupt, from the notebook's side: SIGINT to this process once rank 0 reported an epoch."""

    def on_epoch_end(self, state) -> None:
        if state.epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_an_interrupt_stops_every_rank_at_the_same_step_with_the_best_weights(tmp_path, one_thread):
    pipe = penguins(tmp_path)
    run = pipe.fit(plain_mlp(pipe), devices=2, device="cpu", epochs=3000, patience=None, batch_size=8,
                   callbacks=[InterruptAfter()], view=None)
    assert not run_processes()
    assert run.stop_reason == "interrupted" and 2 <= len(run.history) < 3000
    result = json.loads((run.folder / "result.json").read_text())
    assert result["stop_reason"] == "interrupted" and result["step"] == len(run.lrs)
    best = load_checkpoint(run.checkpoint)["model"]
    assert all(torch.equal(v, best[k]) for k, v in run.model.state_dict().items())
    assert pipe.runs.loc[run.name, "stop_reason"] == "interrupted"


class BreaksOnRankOne(nn.Module):
    """A model that fails on rank 1 in its 5th training step: a user's bug on one process."""

    def __init__(self, n_inputs: int, n_outputs: int):
        super().__init__()
        self.layer, self.calls = nn.Linear(n_inputs, n_outputs), 0

    def forward(self, x):
        import torch.distributed as dist
        self.calls += self.training
        if self.training and dist.is_initialized() and dist.get_rank() == 1 and self.calls == 5:
            raise RuntimeError("rank 1 broke in its 5th step")
        return self.layer(x)


@pytest.mark.slow
def test_a_rank_that_raises_ends_every_rank_and_its_traceback_reaches_the_cell(tmp_path, one_thread):
    pipe = penguins(tmp_path)
    with pytest.raises(RankError, match=r"(?s)Rank 1 of 2 failed \(RuntimeError: rank 1 broke in its 5th step\), "
                                        r"and torchrun ended every process.*Traceback.*in forward"):
        pipe.fit(BreaksOnRankOne(pipe.n_inputs, pipe.n_outputs), devices=2, device="cpu", epochs=50,
                 batch_size=32, view=None)
    assert not run_processes()
    [logged] = [r for r in pipe.ledger.runs(pipe.fingerprint, pipe.split_id)]
    assert logged["stop_reason"] == "error" and "rank 1 broke" in logged["config"]["error"]
    again = pipe.fit(plain_mlp(pipe), epochs=1, device="cpu", view=None)  # the pipeline is still usable
    assert again.stop_reason == "max_epochs"


@pytest.mark.slow
def test_export_train_with_torchrun_then_import_and_test(tmp_path, one_thread):
    pipe = penguins(tmp_path / "work")
    folder = pipe.export_run(tmp_path / "exported", plain_mlp(pipe), epochs=3, lr=1e-2, batch_size=32, device="cpu")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "spec", "train.py"]
    readme = (folder / "README.md").read_text()
    assert "--standalone --nproc-per-node=2 train.py" in readme and "--rdzv-backend=c10d --rdzv-endpoint=HOST:29400" in readme
    written = row_hashes(np.load(folder / "spec" / "train" / "X.npy")) | row_hashes(np.load(folder / "spec" / "val" / "X.npy"))
    test_X, _ = pipe.preprocessor_.transform(pipe._rows("test"))
    assert not (row_hashes(test_X) - row_hashes(pipe.train.X) - row_hashes(pipe.val.X)) & written
    with pytest.raises(DataError, match=r"holds no finished run \(result.json and best.pt\): train it first"):
        pipe.import_run(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(folder / "train.py")], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    other = nt.Pipeline(load_penguins(), target="species", workdir=tmp_path / "work")
    other.clean(), other.split(seed=7), other.preprocess()
    with pytest.raises(LeakageError, match=r"was trained on split .* its training rows may be test rows here"):
        other.import_run(folder)
    run = pipe.import_run(folder)
    assert run.config["world_size"] == 2 and len(run.history) == 3 and run.name in pipe.runs.index
    best = load_checkpoint(run.checkpoint)["model"]
    assert all(torch.equal(v, best[k]) for k, v in run.model.state_dict().items())
    report = pipe.test(run)
    assert report.metrics["accuracy"] > 0.8 and not report.reused  # three species, well separated


@pytest.mark.slow
def test_an_image_run_shards_its_dataloader_batches_across_two_processes(tmp_path, one_thread):
    from PIL import Image
    from sklearn.datasets import load_digits

    from nbtrain.distributed import spec as run_spec
    digits = load_digits()
    root = tmp_path / "digits"
    for i, (pixels, label) in enumerate(zip(digits.images[:150], digits.target[:150])):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 255 / 16).astype(np.uint8)).save(root / str(label) / f"{i:04d}.png")
    pipe = nt.Pipeline.from_folder(root, workdir=tmp_path / "runs")
    pipe.clean(), pipe.split()
    pipe.preprocess(model="resnet18", image_size=32, weights=None, flip=False, num_workers=0)
    keywords = dict(epochs=2, batch_size=16, device="cpu", patience=None, view=None, seed=0)
    one = pipe.fit(**keywords)
    two = pipe.fit(devices=2, **keywords)
    assert not run_processes()
    assert len(two.lrs) == len(one.lrs) and two.config["world_size"] == 2 and two.stop_reason == "max_epochs"
    # batch norm normalises each rank's half batch: close to one process, not equal (README says so)
    assert np.isfinite(two.history["val_loss"]).all() and two.history["val_loss"].iloc[-1] < two.history["val_loss"].iloc[0]
    best = load_checkpoint(two.checkpoint)["model"]
    assert all(torch.equal(v, best[k]) for k, v in two.model.state_dict().items())
    written = run_spec.read(two.folder / "spec")  # the image split's own inputs: train and validation files only
    shipped = {str(p) for split in (written.train, written.val) for p in split.images}
    test_files = {str(p) for p in pipe._rows("test")[pipe.preprocessor_.image_col]}
    assert shipped == {str(p) for p in [*pipe.train.images, *pipe.val.images]} and test_files and not shipped & test_files


@pytest.mark.slow
def test_the_gpu_check_runs_its_cpu_path_and_writes_its_figures(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--quick", "--kinds", "tabular,devices",
                           "--out", str(out)], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(out.read_text())
    assert found["wrong"] == [] and found["device"] == "cpu"
    tabular = found["results"]["tabular"]
    assert tabular["samples_per_s"] > 0 and tabular["hand_written"] > 0 and tabular["device"] == "cpu"
    [(asked, spread)] = [(k, v) for k, v in found["results"]["devices"].items() if k != "seconds"]
    assert asked == "all@cpu" and spread["world_size"] >= 1 and spread["relative_gap"] < 1e-2
    assert "ratio" in done.stdout and "every result right" in done.stdout
    if not torch.cuda.is_available():  # asked for CUDA where there is none: it says so, and checks nothing
        none = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                              cwd=tmp_path)
        assert none.returncode == 2 and "No CUDA device here" in none.stdout
