"""Training throughput: nbtrain's fit against two hand-written loops, same MLP, data and steps.

(a) a loop over DataLoader(TensorDataset, shuffle=True), the way most tutorials train;
(b) a minimal loop over tensors already on the device, batched by indexing a random permutation.

All three train the same model class from the same initial weights, with AdamW, for the same
number of steps. Only ratios measured in this one run mean anything (the machines are shared);
the contenders alternate and the median of the repeats is reported.

Targets (issue 3): on a 2-core CPU at batch 256, nbtrain >= 0.95x (b) and >= 1.5x (a);
on a GPU at batch 4096, nbtrain >= 0.9x (b).

Two measures (issue 18): the training steps alone (run.samples_per_s against the loops' own time),
and the whole fit, everything a call of pipe.fit does (a validation pass per epoch, best.pt at each
improvement, last.pt every epoch, written and fsynced, TensorBoard, the run's card and ledger row,
the doctor's probes) against loop (b) plus the same validation pass per epoch.

    python benchmarks/bench_training.py                  # CPU: batch 256, the default MLP 64-256-128-1
    python benchmarks/bench_training.py --repeats 5
    python benchmarks/bench_training.py --clock cpu      # a busy shared machine: see below

`--clock cpu` times the training thread's CPU time (time.thread_time) instead of the wall clock, on
one torch thread: on a machine other processes keep busy, waiting for a core is then not counted
against whichever contender happened to be running (nbtrain's loop is timed by the same clock).

The training doctor's overhead (issue 6, target <= 2% of step time): nbtrain's fit with the doctor
on and off, alternating in the same run: the step-time ratio (train samples/s), the whole fit's wall
time (the doctor's start probe and per-epoch rules included), and the loop's per-step NaN check
(one read of the running loss) against the step time.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import tempfile
import time
import types

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nbtrain as nt


def make_pipeline(rows: int, features: int, workdir: str) -> nt.Pipeline:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    y = X @ rng.normal(size=features) + rng.normal(scale=0.5, size=rows)
    pipe = nt.Pipeline(pd.DataFrame(X, columns=[f"f{i}" for i in range(features)]).assign(y=y), target="y",
                       workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    return pipe


def new_model(pipe, hidden) -> nn.Module:
    torch.manual_seed(0)
    return nt.models.MLP(pipe.n_inputs, 1, hidden=hidden)


def with_nbtrain(pipe, hidden, batch, epochs, device) -> float:
    run = pipe.fit(new_model(pipe, hidden), batch_size=batch, epochs=epochs, patience=None, schedule="none",
                   device=device, view=None)
    return run.samples_per_s


def whole_nbtrain_fit(pipe, hidden, batch, epochs, device) -> float:
    """Samples/s of the whole pipe.fit call: validation, checkpoints, TensorBoard, doctor, ledger included."""
    model = new_model(pipe, hidden)
    start = time.perf_counter()
    pipe.fit(model, batch_size=batch, epochs=epochs, patience=None, schedule="none", device=device, view=None)
    return epochs * len(pipe.train) / (time.perf_counter() - start)


def whole_tensor_loop(pipe, hidden, batch, epochs, device) -> float:
    """Loop (b) with a validation pass (loss) after each epoch, as any loop that selects a model has;
    timed from the start, setting up included, as the whole fit is."""
    start = time.perf_counter()
    _tensor_loop(pipe, hidden, batch, epochs, device, validate=True)
    return epochs * len(pipe.train) / (time.perf_counter() - start)


def with_dataloader(pipe, hidden, batch, epochs, device) -> float:
    model = new_model(pipe, hidden).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    y = torch.as_tensor(pipe.train.y).view(-1, 1)
    loader = DataLoader(TensorDataset(torch.as_tensor(pipe.train.X), (y - y.mean()) / y.std()),
                        batch_size=batch, shuffle=True, drop_last=True)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for X, target in loader:
            X, target = X.to(device), target.to(device)
            loss = nn.functional.mse_loss(model(X), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    _sync(device)
    return epochs * len(loader) * batch / (time.perf_counter() - start)


def with_tensors(pipe, hidden, batch, epochs, device) -> float:
    start = _tensor_loop(pipe, hidden, batch, epochs, device, validate=False)
    return epochs * len(pipe.train) / (time.perf_counter() - start)


def _tensor_loop(pipe, hidden, batch, epochs, device, validate: bool) -> float:
    """Loop (b); returns the time its steps began (setting up the tensors is not a step)."""
    model = new_model(pipe, hidden).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    X = torch.as_tensor(pipe.train.X, device=device)
    y = torch.as_tensor(pipe.train.y, device=device).view(-1, 1)
    mean, std = y.mean(), y.std()
    y = (y - mean) / std
    X_val = torch.as_tensor(pipe.val.X, device=device)
    y_val = (torch.as_tensor(pipe.val.y, device=device).view(-1, 1) - mean) / std
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(X), device=device)
        for rows in order.split(batch):
            loss = nn.functional.mse_loss(model(X[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if validate:
            model.eval()
            with torch.no_grad():
                float(nn.functional.mse_loss(model(X_val), y_val))
    _sync(device)
    return start


def doctor_overhead(pipe, hidden, batch, epochs, device, repeats) -> list[str]:
    """Doctor on vs off, alternating; medians of samples/s and of the fit's wall time."""
    measured: dict = {True: [], False: []}
    for _ in range(max(repeats, 5)):
        for doctor in (True, False):
            started = time.perf_counter()
            run = pipe.fit(new_model(pipe, hidden), batch_size=batch, epochs=epochs, patience=None,
                           schedule="none", device=device, doctor=doctor, view=None)
            measured[doctor].append((run.samples_per_s, time.perf_counter() - started))
    with _timed_doctor() as spent:
        run = pipe.fit(new_model(pipe, hidden), batch_size=batch, epochs=epochs, patience=None, schedule="none",
                       device=device, view=None)
    train_s = len(pipe.train) * epochs / run.samples_per_s
    speed = {d: statistics.median(s for s, _ in values) for d, values in measured.items()}
    wall = {d: statistics.median(w for _, w in values) for d, values in measured.items()}
    step_ms = 1000 * batch / speed[False]
    total = torch.zeros((), device=device)
    reads = 2000
    started = time.perf_counter()
    for _ in range(reads):
        math.isfinite(total.item())  # what the loop does once per step (every 32 on a GPU)
    check_ms = 1000 * (time.perf_counter() - started) / reads / (1 if device == "cpu" else 32)
    return [f"doctor on / off, step time:     {speed[False] / speed[True]:.3f}x "
            f"({speed[True]:,.0f} vs {speed[False]:,.0f} samples/s; target <= 1.02x)",
            f"doctor on / off, whole fit:     {wall[True] / wall[False]:.3f}x "
            f"({wall[True]:.2f} vs {wall[False]:.2f} s)",
            f"inside the doctor's hooks:      {1000 * spent['step']:.1f} ms per-step hooks + "
            f"{1000 * spent['other']:.1f} ms at start/epochs/end, against {train_s:.2f} s of training steps "
            f"({spent['step'] / train_s:.3%} + {spent['other'] / train_s:.2%})",
            f"NaN check per step:             {check_ms * 1000:.1f} us of a {step_ms:.2f} ms step "
            f"({check_ms / step_ms:.2%})"]


@contextlib.contextmanager
def _timed_doctor():
    """Time spent inside the doctor's hooks during one fit: exact, unlike a difference of noisy runs."""
    from nbtrain.doctor.monitor import Doctor
    spent = {"step": 0.0, "other": 0.0}
    originals = {name: getattr(Doctor, name) for name in ("on_fit_start", "on_step_end", "on_epoch_end",
                                                          "on_fit_end", "finish")}

    def timed(name, method):
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent["step" if name == "on_step_end" else "other"] += time.perf_counter() - started
        return call
    for name, method in originals.items():
        setattr(Doctor, name, timed(name, method))
    try:
        yield spent
    finally:
        for name, method in originals.items():
            setattr(Doctor, name, method)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def use_cpu_clock() -> None:
    """Time by the training thread's CPU time, here and in nbtrain's loop (see the module docstring)."""
    import nbtrain.training.loop as nbtrain_loop
    torch.set_num_threads(1)
    clock = types.SimpleNamespace(perf_counter=time.thread_time)
    nbtrain_loop.time = clock
    globals()["time"] = clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--no-doctor-overhead", action="store_true", help="skip the doctor's on/off comparison")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    if args.clock == "cpu":
        use_cpu_clock()
    rows, batch, hidden, epochs = (400_000, 4096, (1024, 1024), 6) if gpu else (50_000, 256, (256, 128), 3)
    contenders = {"nbtrain fit": with_nbtrain, "(a) DataLoader loop": with_dataloader,
                  "(b) device-tensor loop": with_tensors, "nbtrain whole fit": whole_nbtrain_fit,
                  "(b) + validation": whole_tensor_loop}
    results: dict = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as workdir:
        pipe = make_pipeline(rows, 64, workdir)
        print(f"{len(pipe.train):,} train rows x 64 features, MLP 64-{'-'.join(map(str, hidden))}-1, "
              f"batch {batch}, {epochs} epochs, {args.device}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {args.clock} clock")
        for name, train in contenders.items():  # warm-up: allocator, kernels, caches
            train(pipe, hidden, batch, 1, args.device)
        for _ in range(args.repeats):
            for name, train in contenders.items():
                results[name].append(train(pipe, hidden, batch, epochs, args.device))
        overhead = [] if args.no_doctor_overhead else doctor_overhead(pipe, hidden, batch, epochs, args.device,
                                                                      args.repeats)
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name:>24}: {value:12,.0f} samples/s")
    ours = medians["nbtrain fit"]
    print(f"nbtrain / (b) device-tensor loop: {ours / medians['(b) device-tensor loop']:.2f}x "
          f"(target >= {0.9 if gpu else 0.95}x)")
    if not gpu:
        print(f"nbtrain / (a) DataLoader loop:    {ours / medians['(a) DataLoader loop']:.2f}x (target >= 1.5x)")
    print(f"whole fit / (b) + validation:     {medians['nbtrain whole fit'] / medians['(b) + validation']:.2f}x "
          "(what a run's validation, checkpoints, TensorBoard, doctor and ledger row cost)")
    print("\n".join(overhead))


if __name__ == "__main__":
    main()
