"""The `nbtrain` command: `nbtrain demo` runs the whole tabular pipeline on a real dataset;
`nbtrain run NOTEBOOK` executes a notebook headless and reports the first failing cell."""

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
    with_runs = pipe.runs[["kind", "model", "val_log_loss", "val_accuracy", "val_f1", "best_epoch", "test_pick"]]
    print("Runs, best first:\n" + with_runs.to_string(), end="\n\n")
    print(pipe.test(), end="\n\n")
    print(f"Done in {time.perf_counter() - started:.1f} s. Curves: tensorboard --logdir {workdir}/runs")
    return 0


def run_notebook(path: str, timeout: int, output: str | None) -> int:
    """Execute a notebook top to bottom in a fresh kernel; say which cell failed first, and why."""
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook_path = Path(path)
    if not notebook_path.is_file():
        print(f"No notebook at {path!r}.", file=sys.stderr)
        return 2
    notebook = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(notebook_path.parent.resolve())}})
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        # cells run in order and execution stops at the failure: it is the last cell that ran
        index = max(i for i, c in enumerate(notebook.cells) if c.get("execution_count"))
        first_line = (notebook.cells[index].source.splitlines() or [""])[0]
        print(f"{notebook_path}: cell {index + 1} of {len(notebook.cells)} failed ({first_line!r}): "
              f"{exc.ename}: {exc.evalue}", file=sys.stderr)
        return 1
    finally:
        if output:
            nbformat.write(notebook, output)
    print(f"{notebook_path}: all {len(notebook.cells)} cells ran in {time.perf_counter() - started:.0f} s.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbtrain", description="Train neural networks the way experts do.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="the whole tabular pipeline on the penguins dataset")
    run_demo.add_argument("--workdir", help="work folder for the ledger and runs (default: a new temp folder)")
    run_demo.add_argument("--epochs", type=int, default=60, help="epoch limit (default 60; early stopping ends sooner)")
    run = commands.add_parser("run", help="execute a notebook headless; report the first failing cell")
    run.add_argument("notebook")
    run.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    run.add_argument("--output", help="where to write the executed notebook (default: not written)")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_notebook(args.notebook, args.timeout, args.output)
    return demo(args.workdir, args.epochs)


if __name__ == "__main__":
    sys.exit(main())
