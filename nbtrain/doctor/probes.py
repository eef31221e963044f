"""What the doctor measures, cheaply: the inputs, the model at its start, the size of its updates.

Everything here runs once (at the start of a run) or a few times, never per step, and leaves the run
as it was: the start probe works on a copy of the model with the random generators forked, so a run
with the doctor is the same run as one without it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

PROBE_ROWS = 1024     # rows of train for the start probe: enough for stable statistics, still instant
THREAD_PROBE_SECONDS = 0.3  # the one-thread probe times steps until this long (after one untimed step)
SHOWN_ROWS = 5        # row labels named in an evidence line
_RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.SELU, nn.CELU)
_SQUASHING = (nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Softsign)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Bilinear)


@dataclass
class InputScan:
    """Where one split's float features hold NaN or inf."""

    split: str
    columns: dict            # feature name -> rows with a NaN or inf in it
    rows: list               # the first few such rows, by their label in the user's DataFrame
    n_rows: int              # rows with at least one


@dataclass
class LayerStats:
    name: str
    kind: str                # the module's class name
    std: float               # of its output on the probe rows
    dead: float = 0.0        # ReLU-like: share of units that output 0 for every probe row
    saturated: float = 0.0   # tanh/sigmoid-like: share of outputs on the flat ends


@dataclass
class StartProbe:
    """The model on a sample of train rows before its first update."""

    initial_loss: float
    input_std: float
    layers: list = field(default_factory=list)   # LayerStats, in the order the forward pass ran them
    outputs: torch.Tensor | None = None          # the model's raw outputs on the probe rows (CPU)
    targets: torch.Tensor | None = None          # what the loss compared them with (CPU)
    last_module: nn.Module | None = None


def scan_inputs(batches, split: str, feature_names: list, index) -> InputScan | None:
    """NaN/inf in a split's float features, by column and row; None when there are none (one read)."""
    features = getattr(batches, "X", None)  # float features exist for tables; token ids or images are not scanned
    if features is None or not features.is_floating_point():
        return None
    bad = ~torch.isfinite(features)
    if not bool(bad.any()):
        return None
    per_column = bad.sum(dim=0).cpu().tolist()
    rows = bad.any(dim=1).nonzero().view(-1).cpu()
    names = list(feature_names) if feature_names is not None else [f"column {i}" for i in range(len(per_column))]
    labels = [index[i] for i in rows[:SHOWN_ROWS].tolist()] if index is not None else rows[:SHOWN_ROWS].tolist()
    return InputScan(split, {name: n for name, n in zip(names, per_column) if n}, labels, len(rows))


def probe_start(model: nn.Module, loss_fn: nn.Module, batches, seed: int = 0) -> StartProbe:
    """Forward a sample of train rows through a copy of the model (train mode, as training sees it),
    recording each layer's output statistics and the loss before any update."""
    generator = torch.Generator().manual_seed(seed)
    # a split may ask for fewer (images: 1024 decoded 224 px images in one forward pass would take minutes on a CPU)
    rows = torch.randperm(len(batches), generator=generator)[:getattr(batches, "probe_rows", PROBE_ROWS)]
    rows = rows.to(batches.device)
    inputs, y = batches.take(rows)
    twin = copy.deepcopy(model).train()  # batch norm statistics and dropout draws stay out of the real run
    stats: list[LayerStats] = []
    hooks = [module.register_forward_hook(_recorder(name, stats)) for name, module in twin.named_modules()
             if isinstance(module, (*_LAYERS, *_RELU_LIKE, *_SQUASHING))]
    devices = [batches.device] if batches.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            out = twin(*inputs)
            loss = float(loss_fn(out.float(), y))
    finally:
        for hook in hooks:
            hook.remove()
    X = inputs[0]  # the float features (tables, windows, images); token ids have no scale to judge
    input_std = float(X.float().std()) if X.is_floating_point() and X.numel() > 1 else 1.0
    return StartProbe(initial_loss=loss, input_std=input_std, layers=stats,
                      outputs=out.detach().float().cpu(), targets=y.detach().cpu(), last_module=last_module(model))


def _recorder(name: str, stats: list):
    def record(module: nn.Module, inputs, output) -> None:
        if not isinstance(output, torch.Tensor) or output.numel() < 2:
            return
        values = output.detach().float()
        entry = LayerStats(name, type(module).__name__, float(values.std()))
        units = values.reshape(len(values), -1) if values.ndim > 1 else values.view(-1, 1)
        if isinstance(module, _RELU_LIKE):
            entry.dead = float((units.abs().amax(dim=0) <= 1e-8).float().mean())
        elif isinstance(module, _SQUASHING):
            low, high = (0.0, 1.0) if isinstance(module, nn.Sigmoid) else (-1.0, 1.0)
            margin = 0.01 * (high - low)
            entry.saturated = float(((values <= low + margin) | (values >= high - margin)).float().mean())
        stats.append(entry)
    return record


def last_module(model: nn.Module) -> nn.Module | None:
    """The last leaf module registered (for Sequential-style models, the last applied)."""
    leaves = [m for m in model.modules() if not list(m.children())]
    return leaves[-1] if leaves else None


def trivial_loss(loss_fn: nn.Module, batches, task: str, like: torch.Tensor) -> float:
    """The loss of the best constant prediction (class priors, or the mean): what a model that learned
    nothing from the features scores. `like` is a model output, for the shape the loss expects."""
    if task == "ranking":
        return _equal_scores_loss(loss_fn, batches, like)
    y = batches.y_fit
    if task == "regression":
        constant = torch.zeros((), device=y.device)
    elif task == "binary":
        p = float(y.float().mean().clamp(1e-4, 1 - 1e-4))
        constant = torch.tensor(math.log(p / (1 - p)), device=y.device)
    else:
        counts = torch.bincount(y, minlength=like.shape[-1]).float().clamp(min=1e-4)
        constant = torch.log(counts / counts.sum())
    outputs = constant.expand(len(y), *like.shape[1:]).to(like.dtype)
    with torch.no_grad():
        return float(loss_fn(outputs, y))


def _equal_scores_loss(loss_fn: nn.Module, batches, like: torch.Tensor) -> float:
    """Ranking: the loss when every row scores the same (no order at all), on a sample of train units. Drawing
    them (implicit feedback samples negatives) must not move the run's random generators."""
    devices = [batches.device] if batches.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        _, y = batches.take(torch.arange(min(len(batches), PROBE_ROWS), device=batches.device))
        return float(loss_fn(torch.zeros(len(y), device=y.device, dtype=like.dtype), y))


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The parameters whose update-to-weight ratio means something: weight matrices and kernels."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]


@torch.no_grad()
def update_ratio(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    """Median over weight matrices of |W_after - W_before| / |W_before| (Frobenius norms). Matrices
    that did not move at all are left out: no gradient reached them (dead units, frozen layers),
    which says nothing about the lr."""
    ratios = [float((a - b).norm() / b.norm()) for a, b in zip(after, before) if float(b.norm()) > 0]
    ratios = sorted(r for r in ratios if math.isfinite(r) and r > 0)
    return ratios[len(ratios) // 2] if ratios else math.nan


def gpu_utilization(device: torch.device) -> float | None:
    """The GPU's busy share over the last sample period (NVML through torch), when it can be read."""
    if device.type != "cuda":
        return None
    try:
        return float(torch.cuda.utilization(device)) / 100
    except (ModuleNotFoundError, RuntimeError):  # pynvml missing, or NVML unavailable here
        return None


def one_thread_rate(model: nn.Module, loss_fn: nn.Module, batches, optimizer, batch_rows: int) -> float:
    """Train samples/s of a copy of the model computing on one CPU thread: forward, backward and an
    optimizer step of the run's kind on one batch, timed after one untimed step. A run far below it
    on more threads is losing its time to threads waiting for cores (rules.cpu_threads)."""
    threads = torch.get_num_threads()
    rows = torch.arange(min(batch_rows, len(batches)), device=batches.device)
    inputs, y = batches.take(rows)
    twin = copy.deepcopy(model).train()
    try:
        twin_optimizer = type(optimizer)(twin.parameters(), **optimizer.defaults)
    except (TypeError, ValueError):  # an optimizer that cannot be rebuilt so: time forward and backward only
        twin_optimizer = None
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            steps, started = 0, 0.0
            while steps < 4 and (steps < 2 or time.perf_counter() - started < THREAD_PROBE_SECONDS):
                if steps == 1:
                    started = time.perf_counter()
                loss_fn(twin(*inputs).float(), y).backward()
                if twin_optimizer is not None:
                    twin_optimizer.step()
                twin.zero_grad(set_to_none=True)
                steps += 1
            return len(rows) * (steps - 1) / max(time.perf_counter() - started, 1e-9)
    finally:
        torch.set_num_threads(threads)
