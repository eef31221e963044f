"""fit(batch_size="auto", lr="auto"): values chosen for this model and data, each recorded with its reason.

- `batch_size="auto"`: on a GPU, the largest batch that fits its memory, found by a short probe: a
  forward and backward pass of a copy of the model on batches doubling from the kind's default, up to
  the train size, until one runs out of memory (the probe's own memory is released). On the CPU (and
  Apple's MPS, which shares the machine's memory) memory does not limit the batch, and a larger one only
  takes fewer, larger steps per epoch: the documented default (256, or the kind's own) stands.
- `lr="auto"`: the learning-rate finder's suggestion (nbtrain.doctor.lr_finder: the lr at the smoothed
  loss's minimum, divided by 10), swept on a copy of the model over train rows only, with the run's
  batch size, optimizer and weight decay. When the finder finds no minimum, the default 1e-3 stands.

The run's config keeps the reasons under "auto" ({"batch_size": "...", "lr": "..."}).
"""

from __future__ import annotations

import copy
import math

import torch

from nbtrain.errors import ConfigError
from nbtrain.doctor.lr_finder import LR_FIND_OPTIONS
from nbtrain.training import fit as training

PROBE_LIMIT = 65536  # rows: beyond this a batch is no longer a mini-batch of any table nbtrain trains


def resolve(pipe, model, hyperparameters: dict) -> dict:
    """`hyperparameters` with "auto" batch_size and lr replaced, and their reasons in `record["auto"]`."""
    chosen = dict(hyperparameters)
    reasons = {}
    if chosen.get("batch_size") == "auto":
        chosen["batch_size"], reasons["batch_size"] = auto_batch_size(pipe, model, chosen)
    if chosen.get("lr") == "auto":
        chosen["lr"], reasons["lr"] = auto_lr(pipe, model, chosen)
    if reasons:
        chosen["record"] = {**chosen.get("record", {}), "auto": reasons}
    return chosen


def auto_batch_size(pipe, model, given: dict) -> tuple[int, str]:
    default = pipe._fit_defaults().get("batch_size", training.DEFAULTS["batch_size"])
    device = training.resolve_device(given.get("device", "auto"))
    if device.type != "cuda":
        return default, (f"on the {device.type.upper()} memory does not limit the batch, and a larger one only takes "
                         f"fewer steps per epoch: the documented default, {default}")
    data = pipe._fit_data()
    limit = min(len(data.train), PROBE_LIMIT)
    largest = largest_fitting(lambda rows: _fits(data, model, device, rows), min(default, limit), limit)
    if largest is None:
        raise ConfigError(f"batch_size='auto': even {min(default, limit)} rows ran out of memory on {device} in a "
                          "forward and backward pass. Pass a smaller batch_size, or a smaller model.")
    bound = "the train split's size" if largest >= limit else f"{largest * 2} ran out of memory"
    return largest, (f"the largest batch that fit {device}'s memory in a forward and backward probe "
                     f"(doubling from {min(default, limit)}; {bound})")


def largest_fitting(fits, start: int, limit: int) -> int | None:
    """The largest of start, 2 x start, 4 x start, ... (and `limit` itself) for which fits(size) holds; None
    when even `start` does not fit."""
    if not fits(start):
        return None
    size = start
    while size < limit:
        following = min(size * 2, limit)
        if not fits(following):
            break
        size = following
    return size


def _fits(data, model, device: torch.device, rows: int) -> bool:
    """One forward and backward pass of a copy of the model on `rows` train units; False when out of memory."""
    twin = training._build_model(copy.deepcopy(model) if model is not None else None, data, None).to(device)
    batches = data.train.batches(device, training.target_scale(data.task, data.train.y))
    try:
        inputs, _ = batches.take(torch.arange(rows, device=device))
        twin(*inputs).float().square().mean().backward()
        torch.cuda.synchronize(device)
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        del twin, batches
        torch.cuda.empty_cache()


def auto_lr(pipe, model, given: dict) -> tuple[float, str]:
    options = {k: v for k, v in given.items() if k in LR_FIND_OPTIONS and k != "steps"}
    report = pipe.lr_find(model, **options)
    if not math.isfinite(report.suggested_lr):
        fallback = training.DEFAULTS["lr"]
        return fallback, (f"the lr finder found no minimum ({report.stop_reason or 'no loss fell'}); the default "
                          f"{fallback:g}")
    return report.suggested_lr, (f"the lr finder's suggestion: {report.rule} ({report.min_lr:.3g} / 10), over "
                                 f"{len(report.lrs)} steps on train rows")
