"""`fit`: resolve every option to a concrete choice, run the loop, restore the best weights.

Defaults, and why:

| option        | default  | why |
|---------------|----------|-----|
| model         | MLP(n_inputs, n_outputs, hidden=(256, 128), dropout=0.2) with embeddings | a strong, small tabular net |
| loss          | "auto"   | by task: see nbtrain.training.losses |
| optimizer     | "adamw"  | Adam with decoupled weight decay; no decay on biases and norms |
| lr            | 1e-3     | AdamW's robust default; lr_find() suggests a better one |
| weight_decay  | 1e-2     | AdamW's usual regularisation |
| batch_size    | 256      | small enough to generalise, large enough to be fast |
| epochs        | 100      | an upper bound: early stopping usually ends the run first |
| patience      | 10       | epochs without improvement before stopping (None: never stop early) |
| schedule      | "cosine" | anneals to near zero over the planned steps (see nbtrain.training.optim) |
| warmup        | 0        | steps (int) or share of steps (float < 1) of linear warmup |
| accumulate    | 1        | micro-batches per optimizer step (effective batch = batch_size x accumulate) |
| clip_grad     | None     | max gradient norm |
| precision     | "auto"   | bf16 autocast on a GPU that supports it, else fp32 |
| device        | "auto"   | CUDA, then MPS, then CPU |
| devices       | 1        | processes training together (DDP launched by torchrun; "all": every GPU): Pipeline.fit, nbtrain.distributed |
| seed          | the pipeline's seed | the same seed gives the same run on the CPU |
| monitor       | "auto"   | "val_loss"; or any "val_<metric>" (direction declared by torchmetrics) |
| resume        | None     | a Run, a run's folder or its last.pt, to continue from its last whole epoch |
| name          | None     | "<model class>-<n>", the first n free in the work folder (claimed atomically) |

Every run gets a folder of its own, `<workdir>/runs/<name>/`, claimed with an exclusive mkdir so that
runs in parallel processes never share one (nbtrain.training.folders): TensorBoard events, a card
(run.json), best.pt at every improvement and last.pt at the end of every epoch (nbtrain.training.checkpoint).
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from nbtrain.errors import ConfigError, DataError
from nbtrain.files import remove_stale_temps
from nbtrain.models.tabular import MLP
from nbtrain.training import folders
from nbtrain.training import loop as training_loop
from nbtrain.training.callbacks import BestCheckpoint, Callback, EarlyStopping, LastCheckpoint, RunState
from nbtrain.training.checkpoint import load_checkpoint, save_checkpoint
from nbtrain.training.finetune import BackbonePhases, has_phases
from nbtrain.training.interrupts import GracefulInterrupt, deferred_interrupts
from nbtrain.training.losses import check_output_activation, choose_loss, loss_name
from nbtrain.training.metrics import direction, metric_collection
from nbtrain.training.optim import make_optimizer, make_schedule
from nbtrain.training.run import Run
from nbtrain.training.tensorboard import TensorBoardLogger

PRECISIONS = ("auto", "fp32", "bf16")
# Reading the loss syncs a GPU with the host; once per 32 steps keeps that under 1% of a small step.
FINITE_CHECK_EVERY_ON_GPU = 32


@dataclass
class FitData:
    """What fit needs from a pipeline: the two splits it may see, and what they mean.

    `train` and `val` are split data (nbtrain.data.preprocess.Arrays for tables): `len()`, targets
    `y` (numpy), labels `index`, and `batches(device, scale)` giving the loop's Batches protocol.
    """

    train: object
    val: object
    task: str
    n_inputs: int
    n_outputs: int
    cardinalities: dict
    workdir: Path
    seed: int
    kind: str = "tabular"
    default_model: object = None   # builds the model used when fit() gets none (None: the tabular MLP)
    dataset_id: str | None = None  # written on the run's card (pipe.runs lists a killed run by them)
    split_id: str | None = None
    taken_names: frozenset = frozenset()  # run names the ledger holds: never reused, even without a folder


def resolve_device(device) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'mps'.") from exc


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {list(PRECISIONS)}.")
    if precision == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else None
    return torch.bfloat16 if precision == "bf16" else None


def check_forward(model: nn.Module, data, n_outputs: int, task: str) -> None:
    """One forward pass on a few units, before any training, so a wrong model fails in a second."""
    rows = torch.arange(min(8, len(data)), device=data.device)
    inputs, _ = data.take(rows)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*inputs)
    except (TypeError, RuntimeError, ValueError) as exc:
        names = getattr(data, "input_names", ("X", "codes", "inputs")[:len(inputs)])
        shapes = ", ".join(f"{name} of shape {tuple(t.shape)} ({str(t.dtype).removeprefix('torch.')})"
                           for name, t in zip(names, inputs))
        hint = f" (the data has {inputs[1].shape[1]} embedding columns)" if names[1:2] == ("codes",) else ""
        raise ConfigError(f"The model failed on a first batch, called as model({', '.join(names)}) with "
                          f"{shapes}{hint}: {exc}") from exc
    finally:
        model.train(was_training)
    batch = len(out) if task == "ranking" else len(rows)  # ranking scores every candidate of a unit
    allowed = [(batch, n_outputs)] + ([(batch,)] if n_outputs == 1 else [])
    if tuple(out.shape) not in allowed:
        raise ConfigError(f"The model's output has shape {tuple(out.shape)}; a {task} task with this data needs "
                          f"(batch, {n_outputs}) — here {(batch, n_outputs)}. Make the last layer output "
                          f"{n_outputs} value{'s' if n_outputs > 1 else ''} per row (pipe.n_outputs).")


def _check_numbers(epochs, batch_size, patience, accumulate, clip_grad, min_delta) -> None:
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("accumulate", accumulate, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be a whole number >= {low}; received {value!r}.")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(f"patience must be a whole number >= 1, or None to never stop early; received {patience!r}.")
    if clip_grad is not None and not (isinstance(clip_grad, (int, float)) and clip_grad > 0):
        raise ConfigError(f"clip_grad must be a positive max norm, or None; received {clip_grad!r}.")
    if not isinstance(min_delta, (int, float)) or min_delta < 0:
        raise ConfigError(f"min_delta must be >= 0; received {min_delta!r}.")


def target_scale(task: str, y_train: np.ndarray) -> tuple[float, float]:
    """(mean, std) of a regression target on the train split (networks learn it standardised);
    (0, 1) for classification. A constant target keeps std 1 rather than dividing by zero."""
    if task != "regression":
        return 0.0, 1.0
    return float(np.mean(y_train)), float(np.std(y_train)) or 1.0


def fit(data: FitData, model=None, *, loss="auto", optimizer="adamw", lr=1e-3, weight_decay=1e-2,
        batch_size=256, epochs=100, patience=10, min_delta=0.0, schedule="cosine", warmup=0, accumulate=1,
        clip_grad=None, precision="auto", device="auto", devices=1, seed=None, name=None, monitor="auto",
        resume=None, callbacks=(), state: RunState | None = None, interrupts: GracefulInterrupt | None = None,
        on_end=None, record: dict | None = None, engine=None) -> Run:
    """Train on data.train, select on data.val; see the module docstring for every default.

    However the run ends, it ends the same way: the best weights back in the model, every callback's
    on_fit_end called (files closed), then `on_end(run, error)` (the pipeline's doctor and ledger row),
    all with SIGINT held back. An exception is re-raised after that: the run is recorded with
    stop_reason "error" and the text in run.error. The first SIGINT is a graceful stop ("interrupted"),
    a second one a KeyboardInterrupt (nbtrain.training.interrupts; `interrupts` may span several runs).
    `record`: more entries for the run's config (a sweep's tag, why an "auto" value was chosen).

    `engine` runs the same resolved loop elsewhere (nbtrain.distributed: the notebook's side launching
    torchrun, or one rank of it): it names the device, wraps the model, chooses which callbacks run
    here and replaces the in-process loop. `devices` other than 1 needs one (Pipeline.fit makes it).
    """
    _check_numbers(epochs, batch_size, patience, accumulate, clip_grad, min_delta)
    if devices != 1 and engine is None:
        raise ConfigError(f"devices={devices!r}: training on several devices goes through Pipeline.fit(devices=...), "
                          "which launches torchrun; nbtrain.training.fit trains in this process only.")
    started = time.perf_counter()
    source = _checkpoint_path(resume) if resume is not None else None
    resumed = _resumable(source) if source is not None else None
    seed = data.seed if seed is None else seed
    torch.manual_seed(seed)
    device = engine.device(device) if engine is not None else resolve_device(device)
    model = _build_model(model, data, resumed)
    y_train = data.train.y
    scale = target_scale(data.task, y_train)
    train, val = data.train.batches(device, scale), data.val.batches(device, scale)
    model.to(device)
    check_forward(model, train, data.n_outputs, data.task)
    loss_fn, loss_reason = choose_loss(data.task, loss, y_train, data.n_outputs)
    check_output_activation(model, loss_fn, data.task)
    monitor = "val_loss" if monitor == "auto" else monitor
    mode = direction(monitor, data.task, data.n_outputs, data.kind)
    steps = math.ceil(len(train) / (batch_size * accumulate)) * epochs
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    scheduler, unit = make_schedule(opt, schedule, steps, warmup, mode, patience or 10)
    claimed = engine.claimed if engine is not None else None  # a rank trains in the folder its launcher claimed
    name, folder = claimed or _claim(data, model, name, source, resumed)  # last: a failed check leaves no folder
    config = {"name": name, "kind": "nn", **_describe(model, loss_fn, opt, optimizer, schedule), "data_kind": data.kind,
              "loss_reason": loss_reason, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size,
              "epochs": epochs, "patience": patience, "min_delta": min_delta, "warmup": warmup,
              "accumulate": accumulate, "clip_grad": clip_grad, "precision": precision, "device": str(device),
              "seed": seed, "monitor": monitor, "mode": mode, "target_scale": list(scale),
              "train_rows": len(train), "val_rows": len(val), **(record or {}),
              **(engine.describe() if engine is not None else {})}
    generator = torch.Generator(device=device).manual_seed(seed)
    state = state or RunState()
    loop = training_loop.Loop(model=model, loss_fn=loss_fn.to(device), optimizer=opt, scheduler=scheduler,
                              schedule_unit=unit, train=train, val=val, task=data.task,
                              metrics=metric_collection(data.task, data.n_outputs, data.kind).to(device), epochs=epochs,
                              batch_size=batch_size, accumulate=accumulate, clip_grad=clip_grad,
                              autocast_dtype=autocast_dtype(precision, device), generator=generator,
                              target_scale=scale, monitor=monitor,
                              finite_check_every=1 if device.type == "cpu" else FINITE_CHECK_EVERY_ON_GPU,
                              forward=engine.wrap(model) if engine is not None else None,
                              ranks=getattr(engine, "ranks", None))
    best_snapshot, last_snapshot = _snapshots(loop, state, config)
    best = BestCheckpoint(monitor, mode, folder / "best.pt", best_snapshot, min_delta)
    stopper = [EarlyStopping(monitor, mode, patience, min_delta)] if patience else []
    # a pretrained backbone is frozen for the model's first epochs, then fine-tuned (nbtrain.training.finetune)
    own = [BackbonePhases(model)] if has_phases(model) else []
    run_ends = [best, *stopper, LastCheckpoint(folder / "last.pt", last_snapshot), TensorBoardLogger(folder, config)]
    loop.callbacks = [*own, *run_ends, *callbacks] if engine is None else engine.callbacks(own, run_ends, list(callbacks))
    if resumed:
        _restore(resumed, model, opt, scheduler, generator, state, best, stopper)
    initial = {k: v.detach().cpu().clone() if torch.is_tensor(v) else copy.deepcopy(v)  # v: a module's extra state
               for k, v in model.state_dict().items()}
    first_epoch = state.epoch
    runner = training_loop.run if engine is None else lambda *args: engine.run(*args, folder=folder, config=config)
    return _run_to_the_end(loop, state, interrupts, on_end,
                           lambda: _finish(loop, state, config, folder, initial, started, first_epoch), runner)


def _describe(model: nn.Module, loss_fn: nn.Module, opt, optimizer, schedule) -> dict:
    """The run config's entries for the model, its loss and optimizer: names, and what rebuilds the model."""
    return {"model": type(model).__name__, "model_class": _class_path(model),
            "model_config": getattr(model, "config", None), "parameters": sum(p.numel() for p in model.parameters()),
            "loss": loss_name(loss_fn), "optimizer": optimizer if isinstance(optimizer, str) else type(opt).__name__,
            "schedule": schedule if isinstance(schedule, str) else type(schedule).__name__}


def _run_to_the_end(loop, state: RunState, interrupts: GracefulInterrupt | None, on_end, finish,
                    runner=training_loop.run) -> Run:
    """Run the loop, then end the run the same way whatever happened (fit's docstring says how)."""
    guard = interrupts or GracefulInterrupt()
    guard.watch(state)
    error = None
    with guard:
        try:
            runner(loop, state)
        except KeyboardInterrupt as exc:
            # a KeyboardInterrupt not sent by a second SIGINT (raised by code) ends the run gracefully
            error = exc if guard.hard else None
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once the run is recorded
            error = exc
        with deferred_interrupts():
            run = finish()
            if on_end is not None:
                on_end(run, error)
    if error is not None:
        raise error
    return run


def _claim(data: FitData, model: nn.Module, name, source: Path | None, resumed: dict | None) -> tuple[str, Path]:
    """The run's name and folder (nbtrain.training.folders). A resumed run continues in its own folder
    when that lies in this work folder; a copy from elsewhere, and every new run, claims a free name."""
    if resumed is not None:
        own = resumed["config"]["name"]
        folder = folders.runs_folder(data.workdir) / own
        if source.parent.resolve() == folder.resolve():
            folders.refuse_if_running(folder)
            remove_stale_temps(folder)  # a checkpoint write cut short by a kill
            folders.write_card(folder, name=own, dataset_id=data.dataset_id, split_id=data.split_id,
                               model=type(model).__name__)
            return own, folder
        name = name or own
    name, folder = folders.claim(data.workdir, type(model).__name__.lower(), name, data.taken_names)
    folders.write_card(folder, name=name, dataset_id=data.dataset_id, split_id=data.split_id,
                       model=type(model).__name__)
    return name, folder


def _snapshots(loop, state: RunState, config: dict) -> tuple:
    """What best.pt holds (the weights and what loading them needs) and what last.pt holds (all resume needs)."""
    model, opt, scheduler, generator = loop.model, loop.optimizer, loop.scheduler, loop.generator

    def best(epoch: int, value: float) -> dict:
        return {"model": model.state_dict(), "config": config,
                "state": {"epoch": epoch, "best_epoch": epoch, "best": value}}

    def last() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "state": _state_dict(state), "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(), "config": config}  # dropout draws from torch's RNG
    return best, last


def _finish(loop, state: RunState, config: dict, folder: Path, initial: dict, started: float,
            first_epoch: int) -> Run:
    """Put the best weights (best.pt's; the initial ones when no epoch improved) back into the model."""
    best_path = folder / "best.pt"
    if state.best_epoch:
        loop.model.load_state_dict(load_checkpoint(best_path)["model"])
    else:
        loop.model.load_state_dict(initial)
    seen = config["train_rows"] * (state.epoch - first_epoch)
    return Run(name=config["name"], config=config, history=pd.DataFrame(state.history), notes=model_notes(loop.model),
               monitor=config["monitor"], best_epoch=state.best_epoch, best_value=state.best,
               stop_reason=state.stop_reason, error=state.error, folder=folder,
               checkpoint=best_path if state.best_epoch else None,
               last_checkpoint=folder / "last.pt" if (folder / "last.pt").exists() else None,
               model=loop.model, lrs=list(state.lrs), wall_seconds=time.perf_counter() - started,
               samples_per_s=seen / loop.train_seconds if loop.train_seconds else 0.0)


def model_notes(model: nn.Module) -> list[str]:
    """What a pretrained model says about itself, for the run's report: which weights it started from
    (`weights_source`, e.g. random ones when none could be loaded offline) and its loading notes."""
    source = getattr(model, "weights_source", None)
    notes = [f"Weights: {source}."] if source else []
    return notes + [n for n in getattr(model, "notes", None) or [] if n != source]


def _checkpoint_path(resume) -> Path:
    if isinstance(resume, Run):
        if resume.last_checkpoint is None:
            raise ConfigError(f"Run {resume.name!r} has no last checkpoint to resume from: it stopped "
                              f"({resume.stop_reason!r}) before its first epoch ended. Start a new run instead.")
        return resume.last_checkpoint
    path = Path(resume)
    return path / "last.pt" if path.is_dir() else path


def _resumable(path: Path) -> dict:
    """A checkpoint that resume can continue: last.pt (best.pt holds the best weights alone)."""
    saved = load_checkpoint(path)
    if "optimizer" not in saved:
        raise DataError(f"{str(path)!r} holds a run's best weights only; resuming needs the optimizer and random "
                        f"states, which are in the run's last.pt. Pass resume={str(path.parent)!r} (the run's "
                        "folder) to continue from its last whole epoch.")
    return saved


def _build_model(model, data: FitData, resumed: dict | None) -> nn.Module:
    if model is None:
        saved = resumed["config"].get("model_config") if resumed else None
        if resumed and saved is None:
            raise ConfigError("This checkpoint was trained with your own model class; pass the same model "
                              "(freshly built) as model= to resume it.")
        if saved:
            return rebuild_model(resumed["config"].get("model_class"), saved)
        return data.default_model() if data.default_model is not None else \
            MLP(data.n_inputs, data.n_outputs, cardinalities=data.cardinalities)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module (or None for the default model); "
                          f"received a {type(model).__name__}.")
    return model


def _class_path(model: nn.Module) -> str:
    return f"{type(model).__module__}:{type(model).__qualname__}"


def rebuild_model(class_path: str | None, config: dict) -> nn.Module:
    """A model of nbtrain's own, rebuilt from its class and `config` (weights are loaded after)."""
    if not class_path:
        return MLP(**config)
    import importlib
    module, qualname = class_path.split(":")
    if not module.startswith("nbtrain."):
        raise ConfigError(f"Only nbtrain's own models are rebuilt from a checkpoint; this one is {class_path}. "
                          "Pass the same model (freshly built) as model=.")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    return cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)


def _state_dict(state: RunState) -> dict:
    return {"epoch": state.epoch, "step": state.step, "history": state.history, "lrs": state.lrs,
            "best": state.best, "best_epoch": state.best_epoch}


def _restore(resumed: dict, model, opt, scheduler, generator, state: RunState, best: BestCheckpoint,
             stopper: list) -> None:
    model.load_state_dict(resumed["model"])
    opt.load_state_dict(resumed["optimizer"])
    if scheduler is not None and resumed.get("scheduler") is not None:
        scheduler.load_state_dict(resumed["scheduler"])
    generator.set_state(resumed["generator"])
    torch.set_rng_state(resumed["torch_rng"])
    saved = resumed["state"]
    state.epoch, state.step, state.best, state.best_epoch = (saved["epoch"], saved["step"], saved["best"],
                                                             saved["best_epoch"])
    state.history, state.lrs = list(saved["history"]), list(saved["lrs"])
    best.best = saved["best"]
    for stopper_callback in stopper:
        stopper_callback.best = saved["best"]
        stopper_callback.wait = saved["epoch"] - saved["best_epoch"]


# fit's keyword defaults, for front ends (the %%train parser, the panel) that show or reuse them
DEFAULTS = {name: p.default for name, p in inspect.signature(fit).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
            and name not in ("callbacks", "state", "interrupts", "on_end", "record", "engine")}

__all__ = ["fit", "FitData", "Callback", "DEFAULTS", "resolve_device"]
