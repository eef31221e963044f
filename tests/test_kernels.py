"""The training view's Stop button and Kernel > Interrupt, through real kernels of ipykernel 6 and 7.

Each kernel is a real ipykernel process of one release (tests/kernels.py); the test talks to it
as a front end does, over ZMQ: it runs cells, clicks Stop by sending the Button's comm message, and
interrupts with SIGINT (what Kernel > Interrupt sends). ipykernel 6 reads the click through
jupyter-ui-poll; 7.4 and later while the %%train cell awaits; 7.0-7.3 cannot, and the button says so.
"""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from kernels import Kernel, errors, newest, problems, releases, text, updates, widget_models

pytestmark = pytest.mark.slow

REQUIRED = {6: "ipykernel 6 (Colab's line)", 7: "ipykernel 7 (what pip installs today)"}

TABULAR = """
from palmerpenguins import load_penguins
pipe = nt.Pipeline(load_penguins(), target="species", workdir=WORKDIR)
pipe.clean(); pipe.split(); pipe.preprocess()
"""
IMAGE = """
from pathlib import Path
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
root = Path("digits")
if not root.exists():
    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images[:600], digits.target[:600])):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 255 / 16).astype(np.uint8)).save(root / str(label) / f"{i:04d}.png")
pipe = nt.Pipeline.from_folder(root, workdir=WORKDIR)
pipe.clean(); pipe.split()
pipe.preprocess(model="resnet18", image_size=32, weights=None, flip=False, num_workers=1)
"""
# long runs, many steps an epoch: a stop must come from the click or the interrupt, not the epoch limit
TRAIN = {
    ("tabular", "%%train"): "%%train pipe --epochs 3000 --patience none --batch-size 4\n"
                            "model = nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(64,))\n",
    ("tabular", "pipe.fit"): "run = pipe.fit(nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(64,)), epochs=3000, "
                             "patience=None, batch_size=4)",
    ("image", "%%train"): "%%train pipe --epochs 300 --patience none --batch-size 16\n",
    ("image", "pipe.fit"): "run = pipe.fit(epochs=300, patience=None, batch_size=16)",
}
REPORT = """
from nbtrain.training.checkpoint import load_checkpoint
r = pipe.last_run
best = load_checkpoint(r.checkpoint)["model"] if r.checkpoint else {}
print("REPORT", json.dumps({"stop_reason": r.stop_reason, "epochs": len(r.history), "steps": len(r.lrs),
    "best_epoch": r.best_epoch, "train_rows": len(pipe.train), "children": psutil.Process().children(recursive=True) != [],
    "best_weights": bool(best) and all(torch.equal(v.cpu(), best[k].cpu()) for k, v in r.model.state_dict().items())}))
"""


def test_both_kernel_lines_are_installed():
    """CI installs the environment's ipykernel and one more (make kernels); both lines must be here."""
    missing = [why for major, why in REQUIRED.items() if newest(major) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"no {' and no '.join(missing)} here; `make kernels` installs the other line")
    assert not missing, f"missing {missing}; found {[r.version for r in releases()]}"


def start_kernel(release, folder) -> Kernel:
    started = Kernel(release, folder)
    setup = started.run(f"%load_ext nbtrain\nimport json, psutil, torch\nimport nbtrain as nt\n"
                        f"torch.set_num_threads(1)\nWORKDIR = {str(folder / 'runs')!r}")
    assert not errors(setup), text(setup)
    return started


@pytest.fixture(scope="module", params=releases(), ids=lambda r: f"ipykernel-{r.version}")
def started_kernel(request, tmp_path_factory):
    started = start_kernel(request.param, tmp_path_factory.mktemp(f"kernel-{request.param.version}"))
    yield started
    started.close()


@pytest.fixture
def kernel(started_kernel):
    """One kernel per release for the whole module; each test leaves it idle, even when it fails."""
    yield started_kernel
    started_kernel.settle()


def mechanism(kernel: Kernel, form: str) -> str | None:
    """How a click reaches the run on this kernel (nbtrain.jupyter.kernel): None where it cannot."""
    version = tuple(int(p) for p in kernel.release.version.split(".")[:2])
    if version < (7, 0):
        return "poll"
    return "await" if version >= (7, 4) and form == "%%train" else None


def start_and_wait_for_epochs(kernel: Kernel, kind: str, form: str, epochs: int, train: str | None = None):
    """Build a fresh pipeline, start a long run, return (cell id, its messages so far, last epoch seen)."""
    built = kernel.run(TABULAR if kind == "tabular" else IMAGE)
    assert not errors(built), text(built)
    seen = len(kernel.messages)
    cell = kernel.start(train or TRAIN[kind, form])

    def reached(message) -> bool:
        state = message["content"].get("data", {}).get("state", {}) if message["msg_type"] == "comm_msg" else {}
        return type(state.get("value")) is int and state["value"] >= epochs  # the view's epoch counter

    messages = kernel.wait(cell, timeout=300, until=reached)
    progress = [c for c, _ in widget_models(kernel.messages[seen:], "IntProgressModel")]
    last = max(s["value"] for s in updates(kernel.messages[seen:], progress[-1]) if "value" in s)
    return cell, messages, last, seen


def report(kernel: Kernel) -> dict:
    out = kernel.run(REPORT)
    assert not errors(out), text(out)
    return json.loads(text(out).split("REPORT", 1)[1])


def stop_button(kernel: Kernel, since: int) -> tuple[str, dict]:
    """The Stop button of the latest view: its comm id and its state after every update sent so far."""
    [(comm_id, state)] = [(c, s) for c, s in widget_models(kernel.messages[since:], "ButtonModel")
                          if s["description"] == "Stop"]
    for update in updates(kernel.messages[since:], comm_id):
        state = {**state, **update}
    return comm_id, state


# Steps of ~10 ms: an epoch (~60 steps) lasts well beyond the view's poll interval (0.2 s) and a message's
# trip, so "within its epoch" measures the mechanism; a bare MLP's epochs of ~50 ms passed in several
SLOW_TRAIN = ("%%train pipe --epochs 3000 --patience none --batch-size 4\n"
              "import time\n"
              "class SlowMLP(nt.models.MLP):\n"
              "    def forward(self, *inputs):\n"
              "        time.sleep(0.01)\n"
              "        return super().forward(*inputs)\n"
              "model = SlowMLP(pipe.n_inputs, pipe.n_outputs, hidden=(64,))\n")


def test_stop_button_ends_the_run_within_its_current_epoch_with_the_best_weights(kernel):
    cell, messages, seen_epoch, since = start_and_wait_for_epochs(kernel, "tabular", "%%train", 3, SLOW_TRAIN)
    comm_id, state = stop_button(kernel, since)
    if mechanism(kernel, "%%train") is None:  # ipykernel 7.0-7.3: the button says so and points to Interrupt
        assert state["disabled"] and state["description"] == "Stop: use Kernel > Interrupt"
        assert "Kernel > Interrupt does the same" in state["tooltip"] and kernel.release.version in state["tooltip"]
        kernel.interrupt()
        messages += kernel.wait(cell, timeout=300)
        assert not problems(messages) and report(kernel)["stop_reason"] == "interrupted"
        return
    assert not state["disabled"]
    kernel.click(comm_id)
    messages += kernel.wait(cell, timeout=300)
    assert not problems(messages), problems(messages)
    found = report(kernel)
    rows = found["train_rows"] - (found["train_rows"] % 4 == 1)  # the loop drops a lone last row
    per_epoch = math.ceil(rows / 4)
    assert found["stop_reason"] == "stopped"
    # the click was read between steps: the run ended in the epoch it was in (or the next one,
    # when a step's worth of delay crossed an epoch's end), never ran on to the epoch limit
    assert found["epochs"] <= seen_epoch + 2 and found["steps"] - found["epochs"] * per_epoch <= per_epoch
    assert found["best_epoch"] >= 1 and found["best_weights"]  # the model holds the best epoch's weights
    assert "stopped because a stop was requested" in text(messages)


def test_a_blocking_fit_says_how_to_stop_it_where_no_click_can_reach_it(kernel):
    """A plain pipe.fit(...) blocks the kernel's own thread: ipykernel 6 still reads clicks through
    jupyter-ui-poll; 7.x cannot, so the button is disabled, says why and what works (%%train, fit_async,
    Kernel > Interrupt), and Interrupt does end the run."""
    cell, messages, _, since = start_and_wait_for_epochs(kernel, "tabular", "pipe.fit", 2)
    _, state = stop_button(kernel, since)
    if mechanism(kernel, "pipe.fit") == "poll":
        assert not state["disabled"]
    else:
        assert state["disabled"] and state["description"] == "Stop: use Kernel > Interrupt"
        newer = tuple(int(p) for p in kernel.release.version.split(".")[:2]) >= (7, 4)
        assert ("%%train" in state["tooltip"] and "fit_async" in state["tooltip"]) if newer else \
            "pip install -U ipykernel" in state["tooltip"]
        assert "Kernel > Interrupt does the same" in state["tooltip"]
    kernel.interrupt()
    messages += kernel.wait(cell, timeout=300)
    assert not problems(messages), problems(messages)
    assert report(kernel)["stop_reason"] == "interrupted"


@pytest.fixture
def own_kernel(started_kernel, tmp_path):
    """A kernel of the same release for this test alone: an image run's DataLoader workers are
    processes of their own, and what one run leaves behind must not be blamed on the next."""
    started = start_kernel(started_kernel.release, tmp_path)
    yield started
    started.close()


@pytest.mark.parametrize("kind", ["tabular", "image"])
@pytest.mark.parametrize("form", ["%%train", "pipe.fit"])
def test_interrupt_ends_the_run_gracefully_and_the_pipeline_stays_usable(own_kernel, kind, form):
    kernel = own_kernel
    cell, messages, _, _ = start_and_wait_for_epochs(kernel, kind, form, 2)
    kernel.interrupt()
    messages += kernel.wait(cell, timeout=300)
    assert not problems(messages), problems(messages)  # no traceback in the cell
    found = report(kernel)
    assert found["stop_reason"] == "interrupted" and found["best_epoch"] >= 1 and found["best_weights"]
    assert not found["children"], "DataLoader worker processes outlived the run"
    again = kernel.run("%%train pipe --epochs 1\n" if form == "%%train" else "run = pipe.fit(epochs=1)")
    assert not problems(again), problems(again)
    assert report(kernel)["stop_reason"] == "max_epochs"  # the next fit works


def test_a_rejected_option_is_one_line_and_shows_no_view(kernel):
    assert not problems(kernel.run(TABULAR))
    for cell, said in (("%%train pipe --epochs three\nmodel = nt.models.MLP(pipe.n_inputs, pipe.n_outputs)\n",
                        "UsageError: ConfigError: epochs must be a whole number >= 1; received 'three'."),
                       ("%%train pipe --lr abc\n", "UsageError: ConfigError: lr must be a positive number; received 'abc'.")):
        out = kernel.run(cell)
        assert [p.strip() for p in problems(out)] == [said]  # one line, no traceback
        assert not [m for m in out if m["msg_type"] in ("display_data", "comm_open")]  # no empty view above it


def test_an_error_in_the_cell_body_points_at_the_users_line(kernel):
    assert not problems(kernel.run(TABULAR))
    out = kernel.run("%%train pipe --epochs 1\nwidth = 32\nmodel = nt.models.MLP(pipe.n_inputs, undefined_name)\n")
    [shown] = problems(out)
    assert "NameError" in shown and "----> 3 model = nt.models.MLP(pipe.n_inputs, undefined_name)" in shown
    assert "nbtrain" not in shown.replace("nt.models", "") and "Could not get source" not in shown


def test_the_view_carries_html_and_text_for_front_ends_without_widgets(kernel):
    assert not problems(kernel.run(TABULAR))
    out = kernel.run("%%train pipe --epochs 6 --patience none --batch-size 8\n")
    assert not problems(out), problems(out)
    [shown] = [m["content"] for m in out if m["msg_type"] == "display_data"
               and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]]
    assert "epoch 0 of 6" in shown["data"]["text/html"] and shown["data"]["text/plain"].startswith("nbtrain: epoch 0 of 6")
    display_id = shown["transient"]["display_id"]
    later = [m["content"]["data"] for m in out if m["msg_type"] == "update_display_data"
             and m["content"]["transient"]["display_id"] == display_id]
    assert any("epoch 6 of 6" in data.get("text/html", "") and "<img" in data["text/html"] for data in later)
    assert "Run &#x27;" in later[-1]["text/html"] or "Run '" in later[-1]["text/html"]  # then the static summary
    assert "application/vnd.jupyter.widget-view+json" not in later[-1]


def test_a_second_interrupt_ends_an_awaiting_cell_at_once_and_the_run_still_ends_cleanly(kernel):
    """The worker-thread path (ipykernel 7.4+): the first interrupt asks the run to stop, a second one
    raises KeyboardInterrupt in the cell at once; the run on the worker still ends after its step
    and is logged, and the pipeline trains again. (The blocking paths: the engine's own tests.)"""
    if mechanism(kernel, "%%train") != "await":
        pytest.skip(f"ipykernel {kernel.release.version} runs %%train on the kernel's own thread")
    slow = ("%%train pipe --epochs 3000 --patience none\n"  # steps long enough for two separate interrupts
            "model = nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(4096, 4096))\n")
    cell, messages, _, _ = start_and_wait_for_epochs(kernel, "tabular", "%%train", 1, slow)
    kernel.interrupt()
    time.sleep(0.2)  # two signals at once are one to Python
    kernel.interrupt()
    messages += kernel.wait(cell, timeout=300)
    [shown] = problems(messages)
    assert "KeyboardInterrupt" in shown
    settled = kernel.run("import threading, time\n"  # the worker thread ends after logging the run
                         "while any(t.name == 'nbtrain-fit' for t in threading.enumerate()): time.sleep(0.1)\n"
                         "logged = pipe.ledger.runs(pipe.fingerprint, pipe.split_id)[-1]\n"
                         "print('LOGGED', logged['name'] == pipe.last_run.name, logged['stop_reason'])")
    assert not problems(settled) and "LOGGED True interrupted" in text(settled)  # the run was logged
    assert report(kernel)["stop_reason"] == "interrupted"
    again = kernel.run("%%train pipe --epochs 1\n")
    assert not problems(again), problems(again)
    assert report(kernel)["stop_reason"] == "max_epochs"
