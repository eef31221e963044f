"""The notebook's side of a run on several devices: plan it, write its spec, start torchrun, follow rank 0.

`Launcher` is fit's engine in the kernel (nbtrain.training.fit resolves every option as for one process,
then hands the loop to it). It writes the run spec into the run's folder (train and validation only:
nbtrain.distributed.spec) and starts

    python -m torch.distributed.run --standalone --nproc-per-node N -m nbtrain.distributed.worker <run>/spec

as a subprocess, never a fork: a kernel that already holds a CUDA context cannot fork CUDA workers
("Cannot re-initialize CUDA in forked subprocess"), and a subprocess starts clean. It runs in a session of
its own, so its process group (torchrun and every worker) can be ended as one.

While the ranks train, the kernel reads each epoch rank 0 appends to epochs.jsonl and plays it into the
run's state and the notebook's callbacks (the views, the doctor, a tracker), as if it had trained it. A
Stop (the view's button, pipe.request_stop(), a first Kernel > Interrupt) writes the stop file, which every
rank reads and agrees on at the same step; a second Interrupt ends the process group at once. A rank that
raises ends the run (torchrun stops the others); its traceback is raised here as `RankError`. In every
case the process group is gone before fit() returns, and the best weights rank 0 saved are in the model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from nbtrain.data.preprocess import Arrays
from nbtrain.distributed import spec as run_spec
from nbtrain.distributed.feed import Follower, read_result
from nbtrain.distributed.ranks import STOP_FILE
from nbtrain.errors import ConfigError, NbtrainError
from nbtrain.files import atomic_write
from nbtrain.training import loop as training_loop

POLL_SECONDS = 0.2         # how often the kernel looks at the feed and the processes
END_SECONDS = 30           # how long torchrun gets to end its workers after SIGTERM before SIGKILL
LOG = "torchrun.log"
# kinds whose batch sources load whatever rows the loop hands them (tables index tensors; images and text
# go through their DataLoaders): each rank is handed its share. Time series and ranking sample whole windows
# or groups with state of their own, and train in one process.
SCALES_OUT = ("tabular", "image", "text")
BATCH_SIZE = "global: each optimizer step trains on batch_size rows in all, batch_size / world_size per process"
LR_SCALING = "none: the ranks take the same steps on the same batches as one process, so the lr is unchanged"


class RankError(NbtrainError):
    """A process of a run on several devices failed; every other process was ended."""


def plan(devices, device="auto") -> tuple[int, str]:
    """(number of processes, backend) for fit's `devices` and `device`: NCCL on GPUs, gloo on the CPU.
    devices="all": every GPU; without one, a process per CPU core this process may use."""
    cuda = device != "cpu" and str(device).startswith(("auto", "cuda")) and torch.cuda.is_available()
    if str(device).startswith("mps") or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        raise ConfigError(f"devices={devices!r} with device={device!r}: several processes train on CUDA GPUs (NCCL) "
                          "or on the CPU (gloo); this machine has no CUDA device. Pass device='cpu'.")
    available = torch.cuda.device_count() if cuda else len(os.sched_getaffinity(0))
    if devices == "all":
        return available, "nccl" if cuda else "gloo"
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"devices must be a whole number >= 1 or 'all'; received {devices!r}.")
    if cuda and devices > available:
        raise ConfigError(f"devices={devices} but this machine has {available} CUDA GPU(s); pass devices<={available} "
                          "or devices='all'.")
    return devices, "nccl" if cuda else "gloo"


def check_scalable(data, options: dict, world: int) -> None:
    """A run that can be split across processes (SCALES_OUT, whose batch sources take any rows a rank is
    given); other kinds and options say so."""
    if data.kind not in SCALES_OUT or data.task == "ranking" or (data.kind == "tabular" and not isinstance(data.train, Arrays)):
        what = "ranking" if data.task == "ranking" else data.kind
        raise ConfigError(f"devices={world}: a {what} run trains in one process; several processes (torchrun) train "
                          f"{', '.join(SCALES_OUT[:-1])} and {SCALES_OUT[-1]} runs. Pass devices=1.")
    if options.get("resume") is not None:
        raise ConfigError(f"devices={world} with resume=: a run on several processes starts afresh; resume it with "
                          "devices=1, or start a new run.")
    batch_size = options.get("batch_size", 256)
    if isinstance(batch_size, int) and batch_size < 2 * world:
        raise ConfigError(f"batch_size={batch_size} is global (split across the {world} processes, at least 2 rows "
                          f"each for batch norm); pass batch_size >= {2 * world}.")


def describe(world: int, backend: str) -> dict:
    """What the run's config says about its processes (also in the spec, and so in every rank's config)."""
    return {"devices": world, "world_size": world, "backend": backend, "launcher": "torchrun",
            "batch_size_scope": BATCH_SIZE, "lr_scaling": LR_SCALING}


class Launcher:
    """fit's engine in the notebook (nbtrain.training.fit: device, wrap, callbacks, run): see the module doc."""

    claimed = None   # fit claims the run's folder as for any run
    ranks = None     # the kernel trains nothing itself

    def __init__(self, data, options: dict, world: int, backend: str):
        self.data, self.options, self.world, self.backend = data, options, world, backend

    def device(self, _asked) -> torch.device:
        return torch.device("cpu")  # the notebook's copy of the model only receives the best weights

    def describe(self) -> dict:
        return describe(self.world, self.backend)

    def wrap(self, _model):
        return None

    def callbacks(self, _own: list, _run_ends: list, user: list) -> list:
        return user  # the ranks checkpoint and stop early; the notebook's views, doctor and trackers run here

    def run(self, loop, state, *, folder: Path, config: dict):
        try:  # before the callbacks start: the doctor's probes must not touch the weights the ranks start from
            spec = run_spec.write(folder / "spec", self.data, loop.model, self.options, self.describe())
        except BaseException as exc:  # noqa: BLE001 - recorded as the run's error, then raised on
            state.fail(exc)
            raise
        return training_loop.run(loop, state, epochs=lambda lp, st: self._follow(lp, st, folder, spec))

    def _follow(self, loop, state, folder: Path, spec: Path) -> None:
        process = start(spec, folder, self.world)
        follower, asked = Follower(folder), False
        try:
            while True:
                ended = process.poll() is not None
                for line in follower.new():
                    _mirror(loop, state, line)
                if state.stop and not asked:
                    atomic_write(folder / STOP_FILE, lambda out: out.write(state.stop_reason.encode()),
                                 doing="asking the run's processes to stop")
                    asked = True
                if ended:
                    break
                time.sleep(POLL_SECONDS)
        finally:
            end(process)
        if process.returncode != 0:
            raise failure(folder, process.returncode, self.world)
        _take_result(loop, state, read_result(folder))


def start(spec: Path, folder: Path, world: int) -> subprocess.Popen:
    """torchrun in a session of its own (its process group ends as one), its output in <run>/torchrun.log."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "--max-restarts=0", "-m", "nbtrain.distributed.worker", str(spec), "--out", str(folder)]
    env = {**os.environ, "PYTHONPATH": run_spec.pythonpath()}
    with open(folder / LOG, "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=_end_with_parent())


def _end_with_parent():
    """What the child runs before torchrun starts: ask Linux to SIGTERM it when the kernel dies (a kernel
    restart or kill runs no finally: without this the ranks would wait in a collective for ever). prctl is
    looked up here, in the parent: the child, forked from a process with threads, only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    prctl, set_parent_death_signal = ctypes.CDLL(None, use_errno=True).prctl, 1
    return lambda: prctl(set_parent_death_signal, signal.SIGTERM)


def end(process: subprocess.Popen) -> None:
    """No process of the run is left: torchrun gets SIGTERM (it ends its workers), then the group SIGKILL."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=END_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)  # whatever torchrun left behind (a stuck worker, a loader's child)
    process.wait()


def _signal_group(process: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(process.pid, number)
    except (ProcessLookupError, PermissionError):
        pass  # the group has ended already


def _mirror(loop, state, line: dict) -> None:
    """An epoch of rank 0 becomes an epoch of the notebook's run: its state, then its callbacks."""
    state.history.append(line["record"])
    state.epoch, state.step, state.best, state.best_epoch = line["epoch"], line["step"], line["best"], line["best_epoch"]
    state.lrs.extend(line["lrs"])
    for callback in loop.callbacks:
        callback.on_epoch_end(state)


def _take_result(loop, state, result: dict | None) -> None:
    if result is None:
        return
    state.stop, state.stop_reason = True, result["stop_reason"]
    state.step, state.lrs, state.non_finite_step = result["step"], result["lrs"], result["non_finite_step"]
    state.history = result["history"]  # with the epoch a non-finite loss ended, which no epoch line reports
    loop.train_seconds, loop.data_seconds = result["train_seconds"], result["data_seconds"]


def failure(folder: Path, returncode: int, world: int) -> RankError:
    """The first rank's traceback (failure-rank<N>.json), or the end of torchrun's log when none was written."""
    reports = sorted(Path(folder).glob("failure-rank*.json"), key=lambda p: p.stat().st_mtime)
    if reports:
        first = json.loads(reports[0].read_text())
        return RankError(f"Rank {first['rank']} of {world} failed ({first['error']}), and torchrun ended every "
                         f"process of the run. Its traceback:\n{first['traceback']}")
    try:
        tail = (Path(folder) / LOG).read_text(errors="replace")[-3000:]
    except OSError:
        tail = "(no log)"
    return RankError(f"torchrun ended with exit status {returncode} before any rank reported an error (a process "
                     f"killed, out of memory?). The end of {str(Path(folder) / LOG)!r}:\n{tail}")


def engine_for(data, hyperparameters: dict) -> Launcher | None:
    """The Launcher of a fit with devices= (hyperparameters' "devices" becomes the number of processes), or
    None when that number is 1 (the run trains in this process, as without devices=)."""
    from nbtrain.training.fit import DEFAULTS
    world, backend = plan(hyperparameters.get("devices", 1), hyperparameters.get("device", "auto"))
    hyperparameters["devices"] = world
    if world == 1:
        return None
    check_scalable(data, hyperparameters, world)
    options = {k: v for k, v in hyperparameters.items() if k in DEFAULTS}  # what fit takes, as the user gave it
    return Launcher(data, options, world, backend)
