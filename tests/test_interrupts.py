"""Kernel > Interrupt (SIGINT) while nbtrain trains: real signals, sent to this process as a kernel or a
terminal sends them. The first ends the run after the current step, gracefully; a second stops at once
with KeyboardInterrupt; either way the ledger and the checkpoints stay consistent."""

import math
import os
import signal
import threading

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from PIL import Image
from torch import nn

import nbtrain as nt
from nbtrain.training import Callback
from nbtrain.training.checkpoint import load_checkpoint

from conftest import make_frame

pytestmark = pytest.mark.usefixtures("one_thread", "python_handles_sigint")


@pytest.fixture
def python_handles_sigint():
    """SIGINT handled as in a kernel or a terminal, even when the tests run as a background job (which
    starts with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ready(workdir, df=None, target="label"):
    pipe = nt.Pipeline(make_frame(600) if df is None else df, target=target, workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    return pipe


class SignalInForward(nn.Module):
    """The default MLP, plus a real SIGINT (`times` of them, back to back) sent to this process from
    inside the forward pass of training step `at`: an Interrupt that lands mid-step."""

    def __init__(self, pipe, at: int, times: int = 1):
        super().__init__()
        self.net = nt.models.MLP(pipe.n_inputs, pipe.n_outputs)
        self.at, self.times, self.calls = at, times, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                for _ in range(self.times):
                    signal.raise_signal(signal.SIGINT)
        return self.net(x)


def tensorboard_threads() -> int:
    return sum(type(t).__name__ == "_AsyncWriterThread" for t in threading.enumerate())


def same_weights(model, saved: dict) -> bool:
    return all(torch.equal(value.cpu(), saved[name]) for name, value in model.state_dict().items())


def test_the_first_interrupt_ends_the_run_after_the_current_step(workdir):
    pipe = ready(workdir)
    steps_per_epoch = math.ceil(len(pipe.train) / 64)
    at = 3 * steps_per_epoch + 2
    handler = signal.getsignal(signal.SIGINT)
    run = pipe.fit(SignalInForward(pipe, at), batch_size=64, epochs=20, view=None)
    assert run.stop_reason == "interrupted" and len(run.history) == 3
    assert len(run.lrs) == at  # the interrupted step was finished, not cut in half
    assert same_weights(run.model, load_checkpoint(run.checkpoint)["model"])
    assert run.best_epoch == run.history["val_loss"].idxmin() + 1
    logged = pipe.runs.loc[run.name]
    assert logged["stop_reason"] == "interrupted" and logged["best_epoch"] == run.best_epoch
    assert signal.getsignal(signal.SIGINT) is handler  # put back as it was
    assert pipe.stage == "trained"
    following = pipe.fit(epochs=2, view=None)  # the pipeline is usable
    assert following.stop_reason == "max_epochs" and following.name != run.name


def test_a_second_interrupt_stops_at_once_and_leaves_the_run_recorded(workdir):
    pipe = ready(workdir)
    steps_per_epoch = math.ceil(len(pipe.train) / 64)
    threads = tensorboard_threads()
    model = SignalInForward(pipe, 2 * steps_per_epoch + 3, times=2)  # two quick interrupts
    with pytest.raises(KeyboardInterrupt):
        pipe.fit(model, batch_size=64, epochs=20, view=None)
    run = pipe.last_run
    assert run.stop_reason == "interrupted" and len(run.history) == 2 and len(run.lrs) == 2 * steps_per_epoch + 2
    assert same_weights(model, load_checkpoint(run.checkpoint)["model"])  # the best weights, not mid-step ones
    last = load_checkpoint(run.last_checkpoint)
    assert last["state"]["epoch"] == 2 and last["optimizer"]["state"]
    assert pipe.runs.loc[run.name, "stop_reason"] == "interrupted"
    assert tensorboard_threads() == threads
    # and it resumes from its last whole epoch
    resumed = pipe.fit(SignalInForward(pipe, at=-1), resume=run, batch_size=64, epochs=4, view=None)
    assert resumed.name == run.name and resumed.history["epoch"].tolist() == [1, 2, 3, 4]


def interrupt_in_state_dict(model: nn.Module, at: int) -> nn.Module:
    """Two SIGINTs at the model's `at`-th state_dict(): fit copies the initial weights (1), writes best.pt
    (2) and last.pt (3) after epoch 1, and best.pt after epoch 2 (4) when it improves: a checkpoint
    being written is the worst moment for a KeyboardInterrupt."""
    calls = []

    def hook(module, state_dict, prefix, metadata):
        calls.append(1)
        if len(calls) == at:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
    model.register_state_dict_post_hook(hook)
    return model


def test_interrupts_during_a_checkpoint_write_wait_until_it_is_whole(workdir):
    pipe = ready(workdir)
    model = interrupt_in_state_dict(nt.models.MLP(pipe.n_inputs, pipe.n_outputs), at=4)
    # patience=None, min_delta=0 and a falling loss: epochs 1 and 2 both improve, so the second save is best.pt's
    with pytest.raises(KeyboardInterrupt):
        pipe.fit(model, epochs=20, patience=None, schedule="none", view=None)
    run = pipe.last_run
    best = load_checkpoint(run.checkpoint)
    assert run.best_epoch == best["state"]["best_epoch"] == pipe.runs.loc[run.name, "best_epoch"]
    assert same_weights(run.model, best["model"])
    assert not list(run.folder.glob(".*.tmp*"))


def test_the_lr_finder_returns_what_it_swept_when_interrupted(workdir):
    pipe = ready(workdir)
    report = pipe.lr_find(SignalInForward(pipe, 60), steps=200)
    assert report.stop_reason == "interrupted" and len(report.lrs) == 60
    assert math.isfinite(report.suggested_lr)
    assert "interrupted at lr" in repr(report) and "rests on the lrs swept so far" in report.warnings[0]


def test_a_run_on_another_thread_leaves_signals_alone_and_stops_on_request(workdir):
    pipe = ready(workdir)
    handler = signal.getsignal(signal.SIGINT)
    seen = {}

    class Stop(Callback):
        def on_epoch_end(self, state):
            seen["handler"] = signal.getsignal(signal.SIGINT)
            if state.epoch == 2:
                pipe.request_stop()

    worker = threading.Thread(target=lambda: seen.update(run=pipe.fit(epochs=20, callbacks=[Stop()], view=None)))
    worker.start()
    worker.join(timeout=600)
    assert seen["run"].stop_reason == "stopped" and len(seen["run"].history) == 2
    assert seen["handler"] is handler and signal.getsignal(signal.SIGINT) is handler


class InterruptAtTheEnd(Callback):
    """One SIGINT while the run is ending (after its last epoch, before auto_fix decides on a retry)."""

    sent = False

    def on_fit_end(self, state):
        if not self.sent:
            self.sent = True
            signal.raise_signal(signal.SIGINT)


def test_an_interrupt_as_a_run_ends_cancels_the_auto_fix_retry(workdir):
    pipe = ready(workdir)
    run = pipe.fit(lr=10.0, epochs=4, auto_fix=True, callbacks=[InterruptAtTheEnd()], view=None)
    assert run.name == "mlp-1" and run.diagnoses[0].code == "lr_too_high"  # a retry would have been due
    assert list(pipe.runs.index) == ["mlp-1"] and run.stop_reason == "max_epochs"


class InterruptTheRetry(Callback):
    def attach(self, loop):
        group = loop.optimizer.param_groups[0]
        self.retry = group.get("initial_lr", group["lr"]) < 5  # the retry runs at a tenth of lr=10

    def on_step_end(self, state):
        if self.retry and state.step == 3:
            signal.raise_signal(signal.SIGINT)


def test_an_interrupted_auto_fix_retry_ends_like_any_run(workdir):
    pipe = ready(workdir)
    retry = pipe.fit(lr=10.0, epochs=4, auto_fix=True, callbacks=[InterruptTheRetry()], view=None)
    assert retry.name == "mlp-2" and retry.stop_reason == "interrupted" and len(retry.lrs) == 3
    assert set(pipe.runs.index) == {"mlp-1", "mlp-2"}


# ---- images: DataLoader workers ---------------------------------------------------------------

def digits_folder(root, per_class=24):
    """Handwritten digits 0 and 1 from scikit-learn (8x8 scans), as PNG files in class folders."""
    from sklearn.datasets import load_digits
    digits = load_digits(n_class=2)
    for label in (0, 1):
        (root / str(label)).mkdir(parents=True)
        picked = np.flatnonzero(digits.target == label)[:per_class]
        for i, row in enumerate(picked):
            pixels = (digits.images[row] * 255 / 16).astype(np.uint8)
            Image.fromarray(np.repeat(pixels[..., None], 3, axis=2)).save(root / str(label) / f"{i:02d}.png")
    return root


class InterruptWorkersToo(Callback):
    """At step `at`, SIGINT to this process and to its DataLoader workers: what Kernel > Interrupt
    (jupyter_client signals the kernel's process group) and Ctrl-C in a terminal do. Only children in
    this process group: a service in a session of its own (W&B's, started by an earlier test) gets
    no Kernel > Interrupt either."""

    def __init__(self, at):
        self.at, self.workers = at, []

    def on_step_end(self, state):
        if state.step == self.at:
            group = os.getpgid(0)
            self.workers = [p for p in psutil.Process().children(recursive=True) if os.getpgid(p.pid) == group]
            for worker in self.workers:
                worker.send_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)


def test_an_interrupted_image_run_ends_gracefully_and_leaves_no_workers(tmp_path, workdir):
    pipe = nt.Pipeline.from_folder(digits_folder(tmp_path / "digits"), workdir=workdir)
    pipe.clean(), pipe.split()
    pipe.preprocess(model="mobilenet_v3_small", image_size=16, weights=None, num_workers=2, flip=False)
    before = psutil.Process().children(recursive=True)
    rows = len(pipe.train) - (len(pipe.train) % 8 == 1)  # a last batch of one row sits the epoch out
    interrupt = InterruptWorkersToo(at=math.ceil(rows / 8) + 2)  # in the second epoch
    run = pipe.fit(epochs=10, batch_size=8, callbacks=[interrupt], view=None)
    assert interrupt.workers, "the run had DataLoader workers to interrupt"
    assert run.stop_reason == "interrupted" and run.best_epoch >= 1
    assert psutil.Process().children(recursive=True) == before  # every worker ended with the run
    assert pipe.runs.loc[run.name, "stop_reason"] == "interrupted"
    assert pipe.fit(epochs=1, batch_size=8, view=None).stop_reason == "max_epochs"
    assert psutil.Process().children(recursive=True) == before


def test_an_interrupt_during_validation_ends_the_run_without_that_epoch(tmp_path, workdir):
    pipe = nt.Pipeline.from_folder(digits_folder(tmp_path / "digits"), workdir=workdir)
    pipe.clean(), pipe.split()
    pipe.preprocess(model="mobilenet_v3_small", image_size=16, weights=None, num_workers=1, flip=False)
    pipe.preprocessor_.eval_batch = 2  # a validation pass of several batches, as a large one has
    model = nt.models.vision("mobilenet_v3_small", pretrained=False, n_outputs=pipe.n_outputs)
    per_pass, batches, ended = math.ceil(len(pipe.val) / 2), [], []

    class Ended(Callback):  # after the loop, settling the decision predicts the validation rows again
        def on_fit_end(self, state):
            ended.append(True)

    def second_validation(module, inputs, output):
        # a validation batch of the loop (fit's first check uses 8 images)
        if not module.training and len(inputs[0]) <= 2 and not ended:
            batches.append(1)
            if len(batches) == per_pass + 1:  # the first batch of epoch 2's validation
                signal.raise_signal(signal.SIGINT)
    model.register_forward_hook(second_validation)
    before = psutil.Process().children(recursive=True)
    run = pipe.fit(model, epochs=5, batch_size=8, view=None, doctor=False, callbacks=[Ended()])
    assert run.stop_reason == "interrupted" and run.history["epoch"].tolist() == [1]
    assert len(batches) == per_pass + 1  # validation stopped after the batch it was in
    assert psutil.Process().children(recursive=True) == before
