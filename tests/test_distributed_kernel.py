"""A run on two processes started from a real Jupyter kernel, with a model class defined in a cell.

The class lives in the kernel's __main__, which no worker can import: the run spec carries it by value
(cloudpickle). The %%train magic takes --devices from fit's keywords.
"""

from __future__ import annotations

import json

import pytest

from kernels import Kernel, errors, releases, text

pytestmark = pytest.mark.slow

SETUP = """
%load_ext nbtrain
import json, psutil, torch
import nbtrain as nt
from torch import nn
from palmerpenguins import load_penguins
torch.set_num_threads(1)
pipe = nt.Pipeline(load_penguins(), target="species", workdir="runs")
pipe.clean(); pipe.split(); pipe.preprocess()

class TwoLayers(nn.Module):
    def __init__(self, n_inputs, n_outputs):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_inputs, 16), nn.ReLU(), nn.Linear(16, n_outputs))

    def forward(self, x):
        return self.net(x)
"""
TRAIN = """%%train pipe --devices 2 --device cpu --epochs 3 --batch-size 32 --lr 1e-2
model = TwoLayers(pipe.n_inputs, pipe.n_outputs)
"""
REPORT = """
from nbtrain.training.checkpoint import load_checkpoint
r = pipe.last_run
best = load_checkpoint(r.checkpoint)["model"]
print("REPORT", json.dumps({"stop_reason": r.stop_reason, "epochs": len(r.history), "world": r.config["world_size"],
    "model": r.config["model"], "children": [p.cmdline() for p in psutil.Process().children(recursive=True)],
    "best_weights": all(torch.equal(v, best[k]) for k, v in r.model.state_dict().items())}))
"""


def test_a_model_class_from_a_cell_trains_on_two_processes_from_a_kernel(tmp_path):
    kernel = Kernel(releases()[-1], tmp_path)
    try:
        setup = kernel.run(SETUP, timeout=300)
        assert not errors(setup), text(setup)
        trained = kernel.run(TRAIN, timeout=600)
        assert not errors(trained), text(trained)
        out = kernel.run(REPORT)
        assert not errors(out), text(out)
        found = json.loads(text(out).split("REPORT", 1)[1])
    finally:
        kernel.close()
    assert found["stop_reason"] == "max_epochs" and found["epochs"] == 3 and found["world"] == 2
    assert found["model"] == "TwoLayers" and found["best_weights"]
    assert not [c for c in found["children"] if "torch.distributed.run" in " ".join(c)]  # no process left behind
