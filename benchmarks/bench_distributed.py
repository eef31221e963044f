"""One process against two: the same run (data, seed, model, global batch, steps) with devices=1 and devices=2
on the CPU (gloo, one torch thread per process), in one run of this script.

Reported: train samples/s (the training steps alone, timed by rank 0 as fit times one process) and the
whole fit's wall time, torchrun's start-up included. Only the ratios mean anything; on a 2-core machine
shared with other work, two processes have at most two cores between them, so expect a ratio near or below
1: the point is that it runs and what it costs, not a speed-up.

    python benchmarks/bench_distributed.py
    python benchmarks/bench_distributed.py --rows 200000 --devices 4 --device cuda   # a GPU machine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training  # noqa: E402  (its synthetic table and model)


def one_fit(pipe, devices, args) -> tuple[float, float]:
    model = bench_training.new_model(pipe, (256, 128))
    started = time.perf_counter()
    run = pipe.fit(model, devices=devices, device=args.device, batch_size=args.batch_size, epochs=args.epochs,
                   patience=None, schedule="none", view=None)
    return run.samples_per_s, time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--batch-size", type=int, default=512, help="global: split across the processes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as workdir:
        pipe = bench_training.make_pipeline(args.rows, 32, workdir)
        print(f"{len(pipe.train)} train rows, batch {args.batch_size} (global), {args.epochs} epochs, {args.device}")
        results = {1: [], args.devices: []}
        for _ in range(args.repeats):  # alternating, so a busy moment of the machine hits both
            for devices in results:
                results[devices].append(one_fit(pipe, devices, args))
    for devices, measured in results.items():
        rate = statistics.median(m[0] for m in measured)
        wall = statistics.median(m[1] for m in measured)
        print(f"devices={devices}: {rate:10,.0f} train samples/s, whole fit {wall:6.1f} s")
    one, many = (statistics.median(m[0] for m in results[d]) for d in results)
    one_wall, many_wall = (statistics.median(m[1] for m in results[d]) for d in results)
    print(f"ratio devices={args.devices} / devices=1: samples/s {many / one:.2f}, whole fit time {many_wall / one_wall:.2f}")


if __name__ == "__main__":
    main()
