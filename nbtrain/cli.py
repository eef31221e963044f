"""The `nbtrain` command. `nbtrain demo` runs the whole tabular pipeline on a real dataset."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time


def demo(workdir: str | None, epochs: int) -> int:
    """Penguins (palmerpenguins, 344 rows): clean, split, preprocess, baseline, fit, runs, test."""
    try:
        from palmerpenguins import load_penguins
    except ImportError:
        print("The demo needs the penguins dataset: pip install 'nbtrain[demo]' (palmerpenguins).", file=sys.stderr)
        return 1
    import nbtrain as nt
    workdir = workdir or tempfile.mkdtemp(prefix="nbtrain-demo-")
    started = time.perf_counter()
    pipe = nt.Pipeline(load_penguins(), target="species", workdir=workdir)
    print(f"{pipe}\ntask: {pipe.task} ({pipe.task_reason})\nwork folder: {workdir}\n")
    for step in (pipe.clean, pipe.split, pipe.preprocess, pipe.baseline):
        print(step(), end="\n\n")
    print(pipe.fit(epochs=epochs, patience=10), end="\n\n")
    with_runs = pipe.runs[["kind", "model", "val_loss", "val_accuracy", "val_f1", "best_epoch", "seconds"]]
    print("Runs, best first:\n" + with_runs.to_string(), end="\n\n")
    print(pipe.test(), end="\n\n")
    print(f"Done in {time.perf_counter() - started:.1f} s. Curves: tensorboard --logdir {workdir}/runs")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbtrain", description="Train neural networks the way experts do.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="the whole tabular pipeline on the penguins dataset")
    run_demo.add_argument("--workdir", help="work folder for the ledger and runs (default: a new temp folder)")
    run_demo.add_argument("--epochs", type=int, default=60, help="epoch limit (default 60; early stopping ends sooner)")
    args = parser.parse_args(argv)
    return demo(args.workdir, args.epochs)


if __name__ == "__main__":
    sys.exit(main())
