"""GPU check (`make gpu-check`): every kind's fit on CUDA with its GPU settings, beside a hand-written loop of
the same model in the same process, and a run on every GPU (devices="all"). Under 8 minutes on one GPU.

Per kind, nbtrain's fit (bf16 autocast where the GPU supports it, channels_last and pinned memory with
DataLoader workers for images, tensors on the device for tables) and, where the benchmarks have one, the
hand-written loop of the same model, data and steps (benchmarks/bench_training.py, bench_image.py,
bench_text.py): samples/s of each and their ratio. Time series and ranking have no hand-written
reference here: their fit is checked for a right result only.

It prints the table and writes it as JSON (--out, default gpu_check.json). It exits non-zero on a WRONG
result (an error, a non-finite loss, a model no better than predicting the mean or the majority, a run on
several devices that disagrees with one process, a device other than the one asked for), never on a slow
one: ratios are printed for a person to judge. Every CUDA-only call is guarded, so the CPU path runs
anywhere (`--device cpu --quick`, what the tests run).

    python benchmarks/gpu_check.py                       # on a GPU machine: every kind, then devices="all"
    python benchmarks/gpu_check.py --device cpu --quick --kinds tabular,timeseries
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks: their hand-written loops
import nbtrain as nt  # noqa: E402

KINDS = ("tabular", "image", "text", "timeseries", "ranking", "devices")


class Wrong(AssertionError):
    """A result that is wrong (not merely slow)."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Wrong(what)


def finite_run(run, device: str) -> dict:
    """What every run must satisfy, and its figures."""
    losses = run.history["val_loss"].to_numpy(dtype=float)
    check(len(losses) > 0 and np.isfinite(losses).all(), f"validation loss not finite: {losses.tolist()}")
    check(run.stop_reason in ("max_epochs", "patience"), f"run ended by {run.stop_reason}: {run.error}")
    check(run.config["device"].startswith(device), f"trained on {run.config['device']}, asked for {device}")
    return {"val_loss": float(losses.min()), "samples_per_s": run.samples_per_s, "best_epoch": run.best_epoch,
            "precision": run.config.get("precision"), "device": run.config["device"]}


def tabular(args, workdir: str) -> dict:
    import bench_training as bench
    rows, batch, epochs = (2_000, 256, 2) if args.quick else (200_000, 4096, 5)
    pipe = bench.make_pipeline(rows, 64, workdir)
    hidden = (256, 128)
    run = pipe.fit(bench.new_model(pipe, hidden), batch_size=batch, epochs=epochs, patience=None, schedule="none",
                   device=args.device, view=None)
    found = finite_run(run, args.device)
    check(found["val_loss"] < 0.9, f"tabular regression no better than the mean: val_loss {found['val_loss']:.3f}")
    found["hand_written"] = bench.with_tensors(pipe, hidden, batch, epochs, args.device)
    return found


def image(args, workdir: str) -> dict:
    import bench_image as bench
    quick = args.quick
    options = SimpleNamespace(device=args.device, model="resnet18", image_size=32 if quick else 96,
                              batch_size=16 if quick else 128, workers=0 if quick else bench.default_workers(),
                              no_doctor=False)
    folder = Path(workdir) / "images"
    bench.write_images(folder, 120 if quick else 4_000, classes=10)
    pipe = bench.make_pipeline(options, folder, workdir)
    epochs = 1 if quick else 3
    run = pipe.fit(bench.new_model(pipe, options.model), batch_size=options.batch_size, epochs=epochs, patience=None,
                   schedule="none", device=args.device, view=None)
    found = finite_run(run, args.device)
    found["hand_written"] = bench.with_loop(pipe, options, epochs)
    return found


def text(args, workdir: str) -> dict:
    import bench_text as bench
    steps, batch, seq_len = (4, 8, 32) if args.quick else (120, 128, 128)
    pipe = bench.make_pipeline(steps, batch, seq_len, workdir)
    bench.with_nbtrain(pipe, batch, args.device)
    found = finite_run(pipe.last_run, args.device)
    found["hand_written"] = bench.by_hand(pipe, batch, args.device)
    return found


def timeseries(args, workdir: str) -> dict:
    days = 400 if args.quick else 4_000
    t = np.arange(days)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"day": pd.date_range("2015-01-01", periods=days, freq="D"),
                          "load": 10 + np.sin(2 * np.pi * t / 7) * 3 + t / 100 + rng.normal(0, 0.3, days)})
    pipe = nt.Pipeline(frame, target="load", time_col="day", kind="timeseries", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    run = pipe.fit(epochs=3 if args.quick else 20, device=args.device, view=None)
    return finite_run(run, args.device)


def ranking(args, workdir: str) -> dict:
    users, items = (60, 40) if args.quick else (3_000, 1_000)
    rng = np.random.default_rng(0)
    taste = rng.integers(0, 4, users)
    rows = [(u, int(i)) for u in range(users)
            for i in rng.choice(np.arange(items)[np.arange(items) % 4 == taste[u]], size=8, replace=False)]
    frame = pd.DataFrame(rows, columns=["user", "item"])
    pipe = nt.Pipeline.from_interactions(frame, user="user", item="item", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    run = pipe.fit(epochs=3 if args.quick else 12, device=args.device, view=None)
    found = finite_run(run, args.device)
    found["val_ndcg@10"] = float(run.history["val_ndcg@10"].max())
    check(math.isfinite(found["val_ndcg@10"]), "ranking NDCG not finite")
    return found


def devices(args, workdir: str) -> dict:
    """devices="all" beside one process, same data, seed and model: the same steps, close validation losses.
    On a machine with one GPU "all" is one process; two gloo processes on the CPU then exercise torchrun."""
    from palmerpenguins import load_penguins
    pipe = nt.Pipeline(load_penguins(), target="species", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()

    def model():
        torch.manual_seed(0)
        return nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(32,), dropout=0.0, norm="none")
    keywords = dict(epochs=3, batch_size=32, lr=3e-3, patience=None, view=None, precision="fp32")
    asked = [("all", args.device)]
    gpus = torch.cuda.device_count() if args.device == "cuda" and torch.cuda.is_available() else 0
    if gpus < 2 and args.device != "cpu":  # on the CPU, "all" already starts a process per core
        asked.append((2, "cpu"))
    found = {}
    for count, device in asked:
        one = pipe.fit(model(), device=device, **keywords)
        started = time.perf_counter()
        many = pipe.fit(model(), device=device, devices=count, **keywords)
        world = many.config.get("world_size", 1)
        check(len(many.lrs) == len(one.lrs), f"devices={count!r}: {len(many.lrs)} steps, one process {len(one.lrs)}")
        gap = float(np.max(np.abs(many.history["val_loss"].to_numpy() / one.history["val_loss"].to_numpy() - 1)))
        check(gap < 1e-2, f"devices={count!r} on {device}: validation losses {gap:.1%} away from one process")
        found[f"{count}@{device}"] = {"world_size": world, "relative_gap": gap,
                                      "wall_seconds": time.perf_counter() - started,
                                      "samples_per_s": many.samples_per_s, "one_process_samples_per_s": one.samples_per_s}
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small data and models: the CPU path, in a test")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args(argv)
    unknown = set(args.kinds.split(",")) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose among {', '.join(KINDS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA device here: nothing to check (run with --device cpu for the CPU path).")
        return 2
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, bf16 {torch.cuda.is_bf16_supported()}")
    results, wrong = {}, []
    for kind in args.kinds.split(","):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            try:
                results[kind] = globals()[kind](args, workdir)
                results[kind]["seconds"] = time.perf_counter() - started
            except Exception as exc:  # noqa: BLE001 - one kind's failure is reported, and the others still run
                results[kind] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                wrong.append(kind)
        print(line(kind, results[kind]), flush=True)
    args.out.write_text(json.dumps({"device": args.device, "quick": args.quick, "results": results,
                                    "wrong": wrong}, indent=1, default=str))
    print(f"wrote {args.out}; {'WRONG: ' + ', '.join(wrong) if wrong else 'every result right'}")
    return 1 if wrong else 0


def line(kind: str, found: dict) -> str:
    if "error" in found:
        return f"{kind:11s} WRONG {found['error']}"
    if kind == "devices":
        return f"{kind:11s} " + "; ".join(f"{k}: world {v['world_size']}, gap {v['relative_gap']:.2e}, "
                                          f"{v['samples_per_s']:,.0f} vs {v['one_process_samples_per_s']:,.0f} "
                                          "samples/s one process" for k, v in found.items() if k != "seconds")
    ratio = f", ratio {found['samples_per_s'] / found['hand_written']:.2f}" if found.get("hand_written") else \
        ", no hand-written reference"
    hand = f" vs {found['hand_written']:,.0f} hand-written" if found.get("hand_written") else ""
    return (f"{kind:11s} val_loss {found['val_loss']:.4g}, {found['samples_per_s']:,.0f} samples/s{hand}{ratio} "
            f"[{found['seconds']:.0f}s]")


if __name__ == "__main__":
    sys.exit(main())
