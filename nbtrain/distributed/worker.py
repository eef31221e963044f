"""One process of a run on several devices, as torchrun starts it:

    python -m torch.distributed.run --standalone --nproc-per-node N -m nbtrain.distributed.worker SPEC [--out FOLDER]

Every rank reads the run spec (nbtrain.distributed.spec), joins the process group (NCCL on GPUs, gloo on
the CPU), and calls the same `nbtrain.training.fit` as one process would, with a `RankEngine`: the model
wrapped in DistributedDataParallel, this rank's share of every batch, the decisions of rank 0 (validation,
best checkpoint, early stopping) sent to all. Rank 0 alone writes the run's folder: best.pt, last.pt,
TensorBoard, and the feed the notebook follows (nbtrain.distributed.feed). A rank that raises writes its
traceback to failure-rank<N>.json in the folder (and to torchrun's error file, by `record`); torchrun then
ends every other rank.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import Metric

from nbtrain.distributed import spec as run_spec
from nbtrain.distributed.feed import Feed
from nbtrain.distributed.ranks import STOP_FILE, Ranks, from_environment
from nbtrain.training import loop as training_loop
from nbtrain.training.finetune import has_phases
from nbtrain.training.fit import FitData, fit

FAILURE = "failure-rank{rank}.json"


class RankEngine:
    """fit's engine on one rank (see nbtrain.training.fit: device, wrap, callbacks, run)."""

    def __init__(self, ranks: Ranks, folder: Path, distributed: dict):
        self.ranks, self.folder, self.distributed = ranks, Path(folder), distributed
        self.claimed = (self.folder.name, self.folder)

    def device(self, _asked) -> torch.device:
        if self.distributed["backend"] == "nccl":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")

    def describe(self) -> dict:
        """The spec's words on the processes, with the world torchrun actually started (an exported run may
        be started on any number of machines)."""
        return {**self.distributed, "devices": self.ranks.world, "world_size": self.ranks.world}

    def wrap(self, model: torch.nn.Module) -> DistributedDataParallel:
        """DDP over the model (it copies rank 0's weights to every rank). A model that unfreezes its backbone
        part-way (nbtrain.training.finetune) leaves parameters without gradients for a while: DDP must look."""
        device = next(model.parameters()).device
        batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        self.ranks.least_rows = 2 if batch_norm else 1
        wrapped = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                          find_unused_parameters=has_phases(model))
        torch.manual_seed(torch.initial_seed() + self.ranks.rank)  # each rank its own dropout masks
        return wrapped

    def callbacks(self, own: list, run_ends: list, _user: list) -> list:
        """Rank 0 checkpoints, stops early, logs and feeds the notebook; the others follow its decisions."""
        return [*own, *run_ends, Feed(self.folder)] if self.ranks.main else list(own)

    def run(self, loop, state, *, folder: Path, config: dict):
        # validation runs on rank 0 alone: torchmetrics would otherwise wait for the other ranks' states
        for metric in loop.metrics.modules():
            if isinstance(metric, Metric):
                metric.sync_on_compute, metric._to_sync = False, False
                metric.distributed_available_fn = _one_process
        training_loop.run(loop, state)
        if not self.ranks.main:  # rank 0's best.pt may be on another machine: the other ranks keep no weights
            state.best_epoch = 0


def _one_process() -> bool:
    return False


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="nbtrain.distributed.worker", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="the run spec's folder (spec.json, model.pkl, train/, val/)")
    parser.add_argument("--out", type=Path, default=None, help="the run's folder (default: the spec's parent)")
    args = parser.parse_args(argv)
    _run_rank(args.spec, args.out or args.spec.resolve().parent)


@record
def _run_rank(spec_folder: Path, folder: Path) -> None:
    # the notebook stops every rank through the stop file, at the same step; a SIGINT to one rank would not
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ranks = from_environment(folder / STOP_FILE)
    try:
        spec = run_spec.read(spec_folder)
        folder.mkdir(parents=True, exist_ok=True)
        backend = spec.distributed["backend"]
        if backend == "auto":  # an exported run: NCCL where this machine has GPUs (and the run did not ask for the CPU)
            backend = "nccl" if torch.cuda.is_available() and spec.options.get("device", "auto") != "cpu" else "gloo"
            spec.distributed["backend"] = backend
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
        try:
            data = FitData(train=spec.train, val=spec.val, workdir=folder.parent.parent, **spec.data)
            fit(data, spec.model, engine=RankEngine(ranks, folder, spec.distributed), **spec.options)
        finally:
            dist.destroy_process_group()
    except BaseException as exc:
        _write_failure(folder, ranks.rank, exc)
        raise


def _write_failure(folder: Path, rank: int, exc: BaseException) -> None:
    """The traceback, for the notebook's cell; best effort: the exception itself still reaches torchrun."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        (folder / FAILURE.format(rank=rank)).write_text(json.dumps({"rank": rank, "error": f"{type(exc).__name__}: {exc}",
                                                                     "traceback": text}))
    except OSError:
        pass  # the folder is gone or full: torchrun's own report still names the error


if __name__ == "__main__":
    main()
