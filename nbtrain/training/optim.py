"""Optimizers and learning-rate schedules.

AdamW (the default) decays weights but not biases, normalization weights or embeddings' padding:
decaying a bias or a norm scale only fights the normalization and helps nothing.

Schedules, stepped once per optimizer step unless said otherwise:

- "cosine": linear warmup over `warmup` steps (0 by default), then cosine annealing to lr/1000
  at the last planned step.
- "linear": linear warmup, then linear decay to 0 (the transformer recipe).
- "plateau": ReduceLROnPlateau on the monitored validation metric, stepped once per epoch
  (factor 0.1, patience max(1, patience // 3)).
- "none": a constant lr.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nbtrain.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "plateau", "none")
FINAL_LR_FRACTION = 1e-3  # cosine ends near zero, not at zero: the last steps still move


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only: not on biases, norm layers' scales or 1-D parameters.

    A model may scale the lr of some parameters with a method `lr_scale(name) -> float` (a pretrained
    backbone fine-tuned at a tenth of the head's lr): each group then carries its `lr_scale`. Groups
    at the full lr come first, so param_groups[0]["lr"] is the lr the user set.
    """
    scale_of = getattr(model, "lr_scale", None)
    groups: dict[tuple, list] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            is_norm = isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm))
            decays = not (name == "bias" or is_norm or param.ndim < 2)
            scale = float(scale_of(f"{module_name}.{name}" if module_name else name)) if scale_of else 1.0
            groups.setdefault((scale != 1.0, -scale, not decays), []).append(param)
    return [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": -negative}
            for (_, negative, no_decay), params in sorted(groups.items())]


def make_optimizer(model: nn.Module, name, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if isinstance(name, torch.optim.Optimizer):
        return name
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r} is not one of {list(OPTIMIZERS)} (or a torch.optim.Optimizer).")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ConfigError(f"lr must be a positive number; received {lr!r}.")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ConfigError(f"weight_decay must be >= 0; received {weight_decay!r}.")
    groups = [{**group, "lr": lr * group["lr_scale"]} for group in parameter_groups(model, weight_decay)]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    # Adam's weight decay is L2 in the gradient; the groups keep it off biases too
    adam = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    try:  # the fused kernel updates every parameter at once: a step of a small MLP on a CPU is 4x faster
        return adam(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # parameters on a device, or of a type, that has no fused kernel
        return adam(groups, lr=lr)


def warmup_steps(warmup, total_steps: int) -> int:
    """`warmup` as steps: an int is steps, a float below 1 a share of the planned steps."""
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < 0:
        raise ConfigError(f"warmup must be a number of steps (int) or a share of them (0 <= float < 1); "
                          f"received {warmup!r}.")
    steps = int(round(warmup * total_steps)) if isinstance(warmup, float) and warmup < 1 else int(warmup)
    if steps >= total_steps:
        raise ConfigError(f"warmup={warmup!r} is {steps} steps, as long as the whole run ({total_steps} steps); "
                          "use a shorter warmup or more epochs.")
    return steps


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup,
                  mode: str, patience: int):
    """Return (scheduler or None, "step" | "epoch"). A scheduler object is used as given: stepped per
    optimizer step, or per epoch on the monitored value when it is a ReduceLROnPlateau."""
    if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return schedule, "epoch"
    if isinstance(schedule, torch.optim.lr_scheduler.LRScheduler):
        return schedule, "step"
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule={schedule!r} is not one of {list(SCHEDULES)}.")
    if schedule == "none":
        return None, "step"
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.1,
                                                          patience=max(1, patience // 3)), "epoch"
    ramp = warmup_steps(warmup, total_steps)
    decay = max(1, total_steps - ramp)

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / (ramp + 1)
        progress = min(1.0, (step - ramp) / decay)
        if schedule == "linear":
            return 1.0 - progress
        return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "step"
