"""The training doctor notices a CPU run whose threads wait for busy cores (diagnosis cpu_threads).

On a machine whose cores are busy with other programs, torch's default of one thread per core made
training up to 68x slower than one thread. Busy-core processes make that slowdown only now and then,
so the finding is tested on a model that waits whenever torch runs several threads (what threads
waiting for cores look like to the doctor), and its absence on one thread beside really busy cores.
"""

import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import nbtrain as nt
from nbtrain.doctor.probes import one_thread_rate

from conftest import make_frame

pytestmark = pytest.mark.slow


@pytest.fixture
def busy_cores():
    """Every core kept busy by another process, as on a shared machine."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    yield
    for burner in burners:
        burner.kill()
        burner.wait()


def ready_pipeline(workdir):
    pipe = nt.Pipeline(make_frame(2000), target="label", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    return pipe


def wide_mlp(pipe):
    return nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(512, 512))


class WaitsForCores(nn.Module):
    """The wide MLP, but each call waits 50 ms whenever torch runs more than one thread: the doctor's
    one-thread probe computes at full speed and the run as if its threads waited for cores that other
    programs hold. Busy-core processes alone make that slowdown only now and then (59x in one of six
    runs on an idle 2-core machine, none in the others), so they cannot pin the rule down."""

    def __init__(self, pipe):
        super().__init__()
        self.mlp = wide_mlp(pipe)

    def forward(self, *inputs):
        if torch.get_num_threads() > 1:
            time.sleep(0.05)
        return self.mlp(*inputs)


def test_a_run_whose_threads_wait_for_cores_is_told_to_use_one(workdir):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # torch's default on a 2-core machine: a thread per core
    try:
        pipe = ready_pipeline(workdir)
        run = pipe.fit(WaitsForCores(pipe), epochs=2, batch_size=256, view=None)
    finally:
        torch.set_num_threads(threads)
    [found] = [d for d in run.diagnoses if d.code == "cpu_threads"]
    assert found.severity == "warning" and "torch.set_num_threads(1)" in found.fix
    assert "on 2 CPU threads" in found.evidence and "on one thread" in found.evidence


def test_one_thread_is_never_told_to_use_one(workdir, busy_cores, one_thread):
    pipe = ready_pipeline(workdir)
    run = pipe.fit(wide_mlp(pipe), epochs=2, batch_size=256, view=None)
    assert "cpu_threads" not in [d.code for d in run.diagnoses]


def test_the_probe_leaves_the_thread_count_and_the_model_as_they_were(workdir):
    pipe = ready_pipeline(workdir)
    model = wide_mlp(pipe)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    optimizer = torch.optim.AdamW(model.parameters())
    rate = one_thread_rate(model, torch.nn.CrossEntropyLoss(), pipe.train.batches(torch.device("cpu"), (0.0, 1.0)),
                           optimizer, 256)
    assert rate > 0 and torch.get_num_threads() == threads
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
