"""Sweeps on penguins and what they cost the validation split: the README's figures.

Not a speed benchmark (it is not in `make bench`): on the template's data and split, after the tree
baseline, 12 random trials of lr, dropout and hidden, then 12 with Optuna (TPE and the median pruner),
each report's best validation log loss and validation budget (nbtrain.doctor.budget), in a throwaway work
folder. About 20 s on 2 busy CPU cores.

    python benchmarks/quality_sweep_budget.py
"""

from __future__ import annotations

import tempfile
import time

import torch
from palmerpenguins import load_penguins

import nbtrain as nt


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as workdir:
        pipe = nt.Pipeline(load_penguins(), target="species", workdir=workdir)
        pipe.clean(), pipe.split(), pipe.preprocess(), pipe.baseline()
        searches = {"random": {"lr": nt.loguniform(1e-4, 1e-1), "dropout": (0.0, 0.5), "hidden": [(64,), (256, 128)]},
                    "optuna": {"lr": nt.loguniform(1e-4, 1e-1), "dropout": (0.0, 0.5)}}
        for method, space in searches.items():
            started = time.perf_counter()
            report = pipe.sweep(space, trials=12, method=method, epochs=40, view=None)
            budget = report.budget
            print(f"{method}: {len(report.trials)} trials ({report.pruned} pruned) in {time.perf_counter() - started:.0f} s; "
                  f"best validation log loss {budget.best:.4f}; {budget.compared} runs on the split; one standard "
                  f"error {budget.standard_error:.4f}; optimistic by up to {budget.optimism:.4f}")


if __name__ == "__main__":
    main()
