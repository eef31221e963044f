"""Run folders in a shared work folder: real processes training at once, a process killed mid-run and
resumed, names that are never reused."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nbtrain as nt
from nbtrain.errors import ConfigError, NbtrainWarning
from nbtrain.training.checkpoint import load_checkpoint

from conftest import make_frame

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# A child: the same table and work folder as its siblings; waits for "go", fits, prints what it got.
_FIT = r"""
import json, sys, time, hashlib
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
import nbtrain as nt
from conftest import make_frame
workdir, seed, ready, go = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
pipe = nt.Pipeline(make_frame(600), target="label", workdir=workdir)
pipe.clean(), pipe.split(), pipe.preprocess()
ready.touch()
while not go.exists():
    time.sleep(0.005)
run = pipe.fit(epochs=3, seed=seed, view=None, doctor=False)
weights = torch.cat([v.detach().float().view(-1) for v in run.model.state_dict().values()])
print(json.dumps({"name": run.name, "folder": str(Path(workdir) / "runs" / run.name), "weights": weights.tolist()}))
"""


def _start_together(commands, readies, go, timeout=600):
    children = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for c in commands]
    deadline = time.monotonic() + timeout
    while not all(r.exists() for r in readies):
        assert time.monotonic() < deadline, "children never became ready"
        assert all(c.poll() is None for c in children), [c.communicate() for c in children]
        time.sleep(0.01)
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=timeout)
        assert child.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


@pytest.mark.slow
def test_six_processes_fitting_in_one_work_folder_get_six_runs(tmp_path):
    workdir, go = tmp_path / "runs", tmp_path / "go"
    readies = [tmp_path / f"ready-{i}" for i in range(6)]
    commands = [[sys.executable, "-c", _FIT, str(TESTS), str(workdir), str(seed), str(ready), str(go)]
                for seed, ready in enumerate(readies)]
    results = _start_together(commands, readies, go)
    names = sorted(r["name"] for r in results)
    assert names == [f"mlp-{n}" for n in range(1, 7)]
    pipe = nt.Pipeline(make_frame(600), target="label", workdir=workdir)
    pipe.clean(), pipe.split()
    table = pipe.runs
    assert sorted(table.index) == names and set(table["stop_reason"]) == {"max_epochs"}
    for result in results:  # each process got its own weights back, and they are those in its own folder
        best = load_checkpoint(Path(result["folder"]) / "best.pt")
        assert best["config"]["name"] == result["name"]
        saved = torch.cat([v.float().view(-1) for v in best["model"].values()])
        assert torch.equal(saved, torch.tensor(result["weights"]))
    assert len({tuple(r["weights"][:50]) for r in results}) == 6  # six seeds, six different models


# A child that trains until a marker says it is in its 4th epoch, then waits to be killed.
_KILLED = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
import nbtrain as nt
from nbtrain.training import Callback
from conftest import make_frame
workdir, marker = sys.argv[2], Path(sys.argv[3])

class Wait(Callback):
    def on_step_end(self, state):
        if state.epoch == 3 and state.step == self.steps_per_epoch * 3 + 2:  # mid-way through epoch 4
            marker.write_text(str(state.step))
            time.sleep(3600)
    def attach(self, loop):
        self.steps_per_epoch = -(-len(loop.train) // 64)

pipe = nt.Pipeline(make_frame(600), target="label", workdir=workdir)
pipe.clean(), pipe.split(), pipe.preprocess()
pipe.fit(epochs=8, batch_size=64, patience=None, schedule="none", view=None, callbacks=[Wait()])
"""


@pytest.mark.slow
def test_a_killed_run_is_listed_and_resumes_from_its_last_epoch(tmp_path):
    workdir, marker = tmp_path / "runs", tmp_path / "in-epoch-4"
    child = subprocess.Popen([sys.executable, "-c", _KILLED, str(TESTS), str(workdir), str(marker)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached epoch 4"
            time.sleep(0.05)
        pipe = nt.Pipeline(make_frame(600), target="label", workdir=workdir)
        pipe.clean(), pipe.split(), pipe.preprocess()
        alive = pipe.runs.loc["mlp-1"]
        assert alive["stop_reason"] == "running" and alive["best_epoch"] >= 1
        with pytest.raises(ConfigError, match=r"Run 'mlp-1' is still training in process \d+"):
            pipe.fit(resume=workdir / "runs" / "mlp-1")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    folder = workdir / "runs" / "mlp-1"
    (folder / ".best.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # what a kill mid-write leaves
    killed = pipe.runs.loc["mlp-1"]
    assert killed["stop_reason"] == "incomplete" and 1 <= killed["best_epoch"] <= 3
    assert load_checkpoint(folder / "last.pt")["state"]["epoch"] == 3

    resumed = pipe.fit(resume=folder, epochs=8, batch_size=64, patience=None, schedule="none", view=None)
    assert resumed.name == "mlp-1" and resumed.history["epoch"].tolist() == list(range(1, 9))
    assert not list(folder.glob(".*.tmp*"))
    assert pipe.runs.loc["mlp-1", "stop_reason"] == "max_epochs" and list(pipe.runs.index) == ["mlp-1"]
    straight = pipe.fit(epochs=8, batch_size=64, patience=None, schedule="none", view=None)
    assert resumed.history["val_loss"].tolist() == pytest.approx(straight.history["val_loss"].tolist(), rel=1e-5)


def ready(workdir):
    pipe = nt.Pipeline(make_frame(400), target="label", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    return pipe


def test_a_name_that_is_taken_gets_a_suffix_and_a_warning(workdir):
    pipe = ready(workdir)
    first = pipe.fit(name="wide", epochs=1, view=None, doctor=False)
    with pytest.warns(NbtrainWarning, match=r"A run named 'wide' already exists .*; this run is named 'wide-2'"):
        second = pipe.fit(name="wide", epochs=1, view=None, doctor=False)
    assert (first.name, second.name) == ("wide", "wide-2") and first.folder != second.folder
    assert set(pipe.runs.index) == {"wide", "wide-2"}
    with pytest.raises(ConfigError, match=r"name must be a plain folder name .* received '\.\./x'"):
        pipe.fit(name="../x", epochs=1, view=None)


def test_a_deleted_run_folder_does_not_free_its_name(workdir):
    pipe = ready(workdir)
    first = pipe.fit(epochs=1, view=None, doctor=False)
    shutil.rmtree(workdir / "runs" / first.name)  # "old runs under <workdir>/runs are safe to delete"
    second = pipe.fit(epochs=1, view=None, doctor=False)
    assert (first.name, second.name) == ("mlp-1", "mlp-2")
    assert set(pipe.runs.index) == {"mlp-1", "mlp-2"}  # the first run's ledger row was not overwritten


def test_the_card_says_what_the_run_trains_on(workdir):
    pipe = ready(workdir)
    run = pipe.fit(epochs=1, view=None, doctor=False)
    card = json.loads((run.folder / "run.json").read_text())
    assert (card["name"], card["dataset_id"], card["split_id"], card["pid"]) == \
        (run.name, pipe.fingerprint, pipe.split_id, os.getpid())


def test_a_run_killed_before_its_first_epoch_is_listed_too(workdir):
    pipe = ready(workdir)
    # a process that claims a run's name and dies before training (a kernel restarted at once)
    claim = ("import sys; from nbtrain.training import folders; name, folder = folders.claim(sys.argv[1], 'mlp'); "
             "folders.write_card(folder, name=name, dataset_id=sys.argv[2], split_id=sys.argv[3], model='MLP')")
    subprocess.run([sys.executable, "-c", claim, str(workdir), pipe.fingerprint, pipe.split_id], cwd=ROOT,
                   check=True, timeout=300)
    table = pipe.runs
    assert list(table.index) == ["mlp-1"] and table.loc["mlp-1", "stop_reason"] == "incomplete"
    run = pipe.fit(epochs=1, view=None, doctor=False)
    assert run.name == "mlp-2" and set(pipe.runs["stop_reason"]) == {"incomplete", "max_epochs"}
