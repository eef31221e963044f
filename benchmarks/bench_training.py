"""Training throughput: nbtrain's fit against two hand-written loops, same MLP, data and steps.

(a) a loop over DataLoader(TensorDataset, shuffle=True), the way most tutorials train;
(b) a minimal loop over tensors already on the device, batched by indexing a random permutation.

All three train the same model class from the same initial weights, with AdamW, for the same
number of steps. Only ratios measured in this one run mean anything (the machines are shared);
the contenders alternate and the median of the repeats is reported.

Targets (issue 3): on a 2-core CPU at batch 256, nbtrain >= 0.95x (b) and >= 1.5x (a);
on a GPU at batch 4096, nbtrain >= 0.9x (b).

    python benchmarks/bench_training.py                  # CPU: batch 256, the default MLP 64-256-128-1
    python benchmarks/bench_training.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

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
                   device=device)
    return run.samples_per_s


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
    model = new_model(pipe, hidden).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    X = torch.as_tensor(pipe.train.X, device=device)
    y = torch.as_tensor(pipe.train.y, device=device).view(-1, 1)
    y = (y - y.mean()) / y.std()
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(X), device=device)
        for rows in order.split(batch):
            loss = nn.functional.mse_loss(model(X[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    _sync(device)
    return epochs * len(X) / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    rows, batch, hidden, epochs = (400_000, 4096, (1024, 1024), 6) if gpu else (50_000, 256, (256, 128), 3)
    contenders = {"nbtrain fit": with_nbtrain, "(a) DataLoader loop": with_dataloader,
                  "(b) device-tensor loop": with_tensors}
    results: dict = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as workdir:
        pipe = make_pipeline(rows, 64, workdir)
        print(f"{len(pipe.train):,} train rows x 64 features, MLP 64-{'-'.join(map(str, hidden))}-1, "
              f"batch {batch}, {epochs} epochs, {args.device}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        for name, train in contenders.items():  # warm-up: allocator, kernels, caches
            train(pipe, hidden, batch, 1, args.device)
        for _ in range(args.repeats):
            for name, train in contenders.items():
                results[name].append(train(pipe, hidden, batch, epochs, args.device))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name:>24}: {value:12,.0f} samples/s")
    ours = medians["nbtrain fit"]
    print(f"nbtrain / (b) device-tensor loop: {ours / medians['(b) device-tensor loop']:.2f}x "
          f"(target >= {0.9 if gpu else 0.95}x)")
    if not gpu:
        print(f"nbtrain / (a) DataLoader loop:    {ours / medians['(a) DataLoader loop']:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
