"""The training loop, on one page.

The loop talks to its data through one small protocol (nbtrain.data.batches; `Batches` is the tabular one):
`len(data)` units to permute each epoch; `data.load(chunks)` turns the epoch's chunks of unit
indices into (inputs, y_fit) batches, in order (a source may prefetch them with DataLoader
workers); `data.evaluation_batches(n)` walks a split in order for validation; `data.take(rows)`
gathers one batch for the doctor's probes. A model is called as `model(*inputs)`.

Tabular data sits on the device as a few tensors, moved there once; a batch is an index into them
(a random permutation per epoch), so there is no per-sample collate and no host round trip. The
loss is accumulated on the device and read once per epoch: `.item()` every step would make the
CPU wait for the GPU each time. A NaN or inf loss stops the run at once: the running total is read
every `finite_check_every` steps (1 on the CPU, where reading costs nothing; fit uses 32 on a GPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from nbtrain.data.batches import Batches  # the loop's data protocol
from nbtrain.training.callbacks import Callback, RunState
from nbtrain.training.interrupts import deferred_interrupts
from nbtrain.training.metrics import compute as compute_metrics
from nbtrain.training.metrics import predictions, targets


@dataclass
class Loop:
    """Everything the loop needs, resolved by nbtrain.training.fit."""

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    schedule_unit: str               # "step" or "epoch" (ReduceLROnPlateau)
    train: Batches
    val: Batches
    task: str
    metrics: object                  # a torchmetrics MetricCollection on the device
    epochs: int
    batch_size: int
    accumulate: int = 1
    clip_grad: float | None = None
    autocast_dtype: torch.dtype | None = None
    generator: torch.Generator | None = None
    target_scale: tuple = (0.0, 1.0)  # regression: (mean, std) of the train target
    monitor: str = "val_loss"
    callbacks: list = field(default_factory=list)
    finite_check_every: int = 1      # steps between reads of the running loss (a host sync on a GPU)
    train_seconds: float = 0.0
    data_seconds: float = 0.0        # of train_seconds, spent waiting for batches (Batches.load)
    # several processes (nbtrain.distributed): `forward` is the DistributedDataParallel wrapper that trains
    # (`model` stays the plain module, for validation and checkpoints); `ranks` shards every batch by rank
    # and makes the decisions every rank must agree on (a stop, a non-finite loss, validation's scores)
    forward: nn.Module | None = None
    ranks: object | None = None


def run(loop: Loop, state: RunState, epochs=None) -> RunState:
    """Train until the epoch limit or a stop request (a flag read after every step). An exception (a
    KeyboardInterrupt too) sets the stop reason and propagates, after every started callback's
    on_fit_end has run (TensorBoard's writer is closed whatever happened): fit decides what it means.
    `epochs(loop, state)` replaces the epochs trained here (nbtrain.distributed follows them from its ranks)."""
    started, ended = [], False
    try:
        for callback in loop.callbacks:
            callback.attach(loop)
            callback.on_fit_start(state)
            started.append(callback)
        (epochs or _epochs)(loop, state)
        ended = True
    except KeyboardInterrupt:
        state.request_stop("interrupted")
        raise
    except BaseException as exc:
        state.fail(exc)
        raise
    finally:
        state.request_stop("max_epochs")  # a no-op when something else stopped the run
        with deferred_interrupts():
            failure = _end(started, state)
        if failure is not None and ended:  # otherwise the exception already on its way is the news
            raise failure
    return state


def _epochs(loop: Loop, state: RunState) -> None:
    while state.epoch < loop.epochs and not state.stop:
        train_loss = train_one_epoch(loop, state)
        if train_loss is None:  # stopped mid-epoch: the partial epoch is not evaluated
            return
        if not math.isfinite(train_loss):
            state.epoch += 1
            state.non_finite_step = state.non_finite_step or state.step  # found by the epoch's own read
            state.history.append({"epoch": state.epoch, "train_loss": train_loss, "val_loss": math.nan,
                                  "lr": state.lrs[-1]})
            state.request_stop("non_finite_loss")
            return
        scores = _validate(loop, state)
        if scores is None:  # stopped during validation: the epoch is neither recorded nor checkpointed
            return
        state.epoch += 1
        record = {"epoch": state.epoch, "train_loss": train_loss, **scores,
                  "lr": loop.optimizer.param_groups[0]["lr"]}
        state.history.append(record)
        if loop.scheduler is not None and loop.schedule_unit == "epoch":
            loop.scheduler.step(record[loop.monitor])
        for callback in loop.callbacks:
            callback.on_epoch_end(state)
        if loop.ranks is not None:  # rank 0's callbacks decided (best epoch, early stop): every rank follows
            loop.ranks.settle(state)


def _validate(loop: Loop, state: RunState) -> dict | None:
    """Validation's scores; with several processes computed once, on rank 0, and sent to every rank."""
    if loop.ranks is None:
        return evaluate(loop, loop.val, state=state)
    return loop.ranks.once(lambda: evaluate(loop, loop.val, state=state))


def _end(callbacks: list, state: RunState) -> Exception | None:
    """Every callback's on_fit_end, even when one fails: files get closed; the first failure is returned."""
    failure = None
    for callback in callbacks:
        try:
            callback.on_fit_end(state)
        except Exception as exc:  # noqa: BLE001 - raised by run() once every callback has ended
            failure = failure or exc
    return failure


def train_one_epoch(loop: Loop, state: RunState) -> float | None:
    """One pass over the train split; the mean loss, NaN as soon as the loss is not finite (the step
    is in state.non_finite_step), or None when a stop was requested mid-epoch."""
    started = time.perf_counter()
    model, data, optimizer, ranks = loop.model, loop.train, loop.optimizer, loop.ranks
    model.train()
    forward = loop.forward or model
    order = torch.randperm(len(data), device=data.device, generator=loop.generator)
    if ranks is not None:  # every rank draws the same permutation and trains on its share of each batch
        order = ranks.trim(order, loop.batch_size)
    elif len(order) % loop.batch_size == 1 and len(order) > 1:
        order = order[:-1]  # a batch of one row breaks batch norm; a random row sits this epoch out
    total = torch.zeros((), device=data.device)
    step_hooks = [c for c in loop.callbacks if type(c).on_step_end is not Callback.on_step_end]
    windows = [window.split(loop.batch_size) for window in order.split(loop.batch_size * loop.accumulate)]
    mine = ranks.mine if ranks is not None else _all
    # DistributedDataParallel averages gradients over the ranks: a rank's loss counts `world` times its share
    world = ranks.world if ranks is not None else 1
    loaded = iter(data.load(mine(rows) for window in windows for rows in window))
    for window in windows:
        window_units = sum(len(rows) for rows in window)
        for rows in window:
            fetched = time.perf_counter()
            inputs, y = next(loaded)
            loop.data_seconds += time.perf_counter() - fetched
            units = len(mine(rows))
            with _autocast(loop, data):
                out = forward(*inputs)
                loss = loop.loss_fn(out, y)
            # weight by the units' share of the window: the gradient of one big batch, exactly
            share = units * world / window_units
            (loss if share == 1 else loss * share).backward()
            total.add_(loss.detach(), alpha=units)
        if loop.clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), loop.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if loop.scheduler is not None and loop.schedule_unit == "step":
            loop.scheduler.step()
        state.step += 1
        state.lrs.append(optimizer.param_groups[0]["lr"])
        # one NaN makes every later step NaN: stop now, before the weights drift further from the last good ones
        if state.step % loop.finite_check_every == 0 and not math.isfinite(_read(loop, state, total)):
            state.non_finite_step = state.step
            loop.train_seconds += time.perf_counter() - started
            return math.nan
        for callback in step_hooks:
            callback.on_step_end(state)
        if state.stop:
            return None
    loss = (float(total) if ranks is None else ranks.sum(total)) / len(order)  # the epoch's one host sync
    loop.train_seconds += time.perf_counter() - started
    return loss


def _all(rows):
    return rows


def _read(loop: Loop, state: RunState, total: torch.Tensor) -> float:
    """The running loss; with several processes summed over the ranks, which also agree on a stop here."""
    return total.item() if loop.ranks is None else loop.ranks.agree(total, state)


@torch.inference_mode()
def evaluate(loop: Loop, data: Batches, batch_rows: int = 8192, state: RunState | None = None) -> dict | None:
    """Validation loss and metrics, in large contiguous batches, read from the device once; None when
    `state` is asked to stop meanwhile (a validation pass over images can take minutes)."""
    loop.model.eval()
    loop.metrics.reset()
    total, units = torch.zeros((), device=data.device), 0
    mean, std = loop.target_scale
    # implicit feedback: the batches give the loss, the metrics rank the whole catalogue
    # (nbtrain.kinds.ranking.retrieval)
    ranks_itself = hasattr(data, "ranked_metrics")
    for batch in data.evaluation_batches(batch_rows):
        if state is not None and state.stop:
            return None
        with _autocast(loop, data):
            out = loop.model(*batch.inputs)
        total += loop.loss_fn(out.float(), batch.y_fit).float() * batch.units
        units += batch.units
        values = out.float() * std + mean if loop.task == "regression" else out
        if not ranks_itself:
            loop.metrics.update(predictions(loop.task, values), targets(loop.task, batch.y), **batch.extra)
    scores = data.ranked_metrics(loop.model) if ranks_itself else compute_metrics(loop.metrics)
    return {"val_loss": (total / max(units, 1)).item(), **{f"val_{name}": value for name, value in scores.items()}}


def _autocast(loop: Loop, data: Batches):
    if loop.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=data.device.type, dtype=loop.autocast_dtype)
