"""Ranking: a model that orders the documents of a query, or the items of a user, best first.

Two kinds of data, two Pipelines:

- Graded relevance, `RankingPipeline`: `nt.Pipeline(df, target="relevance", task="ranking",
  group_col="query")`, one row per (query, document) with features and a relevance grade >= 0.
  Split by query (the base's group split: no query in two splits); the base's tabular preprocessing
  of the features, fitted on train; the tabular MLP scores each row (one output); the units of
  training and evaluation are whole queries; loss LambdaRank. baseline(): gradient-boosted trees
  regressing the relevance (pointwise), their predictions ranked per query.
- Implicit feedback, `InteractionPipeline` (nbtrain.kinds.ranking.interactions): `nt.Pipeline.from_interactions(
  df, user="user", item="item", time=None)`, one row per observed interaction; every user ranks the
  whole catalogue in validation and test.

Both report NDCG@10 (the headline), MAP and recall@10, per query or user then averaged
(nbtrain.training.ranking, nbtrain.kinds.ranking.retrieval), and bootstrap the test NDCG over queries or users.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from nbtrain.errors import ConfigError
from nbtrain.kinds.ranking.data import GroupedRows, group_rows
from nbtrain.models.baseline import TreeBaseline
from nbtrain.pipeline import Pipeline
from nbtrain.training.evaluation import score
from nbtrain.training.losses import choose_loss
from nbtrain.training.run import Run


class RankingPipeline(Pipeline):
    """(query, document) rows with a relevance grade; see the module docstring."""

    def _check_columns(self, frame: pd.DataFrame) -> None:
        if self.group_col is None:
            raise ConfigError("task='ranking' orders the rows of each query: pass group_col='<column naming the "
                              "query of each row>' (a query's rows stay together in one split). For user-item "
                              "interactions without relevance grades, use nt.Pipeline.from_interactions(df, "
                              "user=..., item=...).")
        super()._check_columns(frame)

    def _kind_and_task(self, frame: pd.DataFrame, kind: str, task: str) -> tuple[str, str, str]:
        if task not in ("auto", "ranking"):
            raise ConfigError(f"RankingPipeline is for task='ranking'; received task={task!r}.")
        kind, task, why = super()._kind_and_task(frame, kind, "ranking")
        if kind != "tabular":
            raise ConfigError(f"Ranking reads tabular features of each (query, document) row; this data reads as "
                              f"kind {kind!r}, which ranking does not support yet. Pass kind='tabular' if "
                              "its columns are features.")
        return kind, task, why

    def clean(self, **options):
        report = super().clean(**options)
        report.warnings += _query_warnings(self._frame, self.group_col, self.target)
        return report

    def preprocess(self, **options):
        report = super().preprocess(**options)
        # the base counts units, and a unit here is a query: the report speaks of rows
        report.train_rows, report.val_rows = len(self._train.relevance), len(self._val.relevance)
        return report

    # ---- what the model sees -------------------------------------------------------------

    @property
    def classes(self):
        """Ranking has no classes: None (test() and the doctor then skip per-class results)."""
        return None

    def _encode_target(self, values: pd.Series) -> np.ndarray:
        return values.to_numpy(dtype=np.float32)

    def _arrays(self, rows: pd.DataFrame, X: np.ndarray, codes: np.ndarray) -> GroupedRows:
        """The split as whole queries (what the base's preprocess() stores as _train and _val)."""
        features = (X,) if codes.shape[1] == 0 else (X, codes)
        return group_rows(features, self._encode_target(rows[self.target]), rows[self.group_col], rows.index,
                          ("X", "codes")[:len(features)])

    def _fit_defaults(self) -> dict:
        return {"batch_size": 16}  # units are queries: 16 queries of a few dozen documents each

    # ---- runs ----------------------------------------------------------------------------

    def baseline(self, *, library: str = "sklearn") -> Run:
        """Gradient-boosted trees regressing the relevance grade (pointwise), their predictions ranked per
        query and scored on validation like every run. `library`: "sklearn", "lightgbm" or "xgboost"."""
        self._require_split(_LEARNS_FROM_DATA.format(verb="baseline"))
        started = time.perf_counter()
        kinds = {n: p.kind for n, p in self.cleaning_.plans.items() if n in self._frame.columns}
        trees = TreeBaseline("regression", kinds, library=library, seed=self.seed)
        train, val = self._rows("train"), self._rows("val")
        trees.fit(train, self._encode_target(train[self.target]))
        data = group_rows((), self._encode_target(val[self.target]), val[self.group_col], val.index)
        scores = trees.predict(val.iloc[data.order])  # the rows in the group order of `data`
        run = _baseline_run(f"baseline-{library}-{self.split_id[:6]}", trees, library, scores, data,
                            train[self.target].to_numpy(), seed=self.seed,
                            train_units=train[self.group_col].nunique(), started=started, data_kind=self.kind)
        self._log_run(run, None)
        return run

    def _test_outputs(self, run: Run, rows: pd.DataFrame) -> tuple:
        if isinstance(run.model, nn.Module):
            data = self._arrays(rows, *self.preprocessor_.transform(rows))
            scores = network_scores(run.model, data)
        else:
            data = group_rows((), self._encode_target(rows[self.target]), rows[self.group_col], rows.index)
            scores = run.model.predict(rows.iloc[data.order])
        index = pd.MultiIndex.from_arrays([data.group_labels[data.groups], data.index],
                                          names=[self.group_col, rows.index.name])
        return scores, data.target(), index

    # ---- using the model (nbtrain.kinds.ranking.bundle) ----------------------------------------

    def predict(self, new_data, run=None, *, strict: bool = False) -> pd.DataFrame:
        """A run's `score` and `rank` (1 = first) of new (query, document) rows, indexed like them: ranked
        within each query of group_col, or all together when the rows have no such column. The features get
        the training repairs and preprocessing (as a table's); rows of the test split are refused until test().
        `run`: a Run or a run's name; default the run test() evaluated, else the one test() would pick."""
        from nbtrain.kinds.ranking.bundle import ranking_predictor
        return ranking_predictor(self, run, verb="predict").predict(new_data, strict=strict)

    def save(self, path, run=None):
        """Write a run (the network, or the tree baseline) and its preprocessing as one bundle file
        (nbtrain.kinds.ranking.bundle has the format)."""
        from nbtrain.kinds.ranking.bundle import ranking_predictor
        return ranking_predictor(self, run, verb="save", evidence=True).save(path)

    def export(self, path, format: str = "onnx", run=None, *, rtol: float = 1e-4, atol: float = 1e-5):
        """Write a network run for serving (inputs X and codes as a table's, one score per row), checked on the
        validation rows (nbtrain.export). The tree baseline is not exported: save() bundles it."""
        from nbtrain.kinds.ranking.bundle import ranking_predictor, validation_arrays
        predictor = ranking_predictor(self, run, verb="export", network=True)
        return predictor.export(path, format, sample=validation_arrays(self), rtol=rtol, atol=atol)


# ---- helpers --------------------------------------------------------------------------------

_LEARNS_FROM_DATA = "{verb}() learns from data; before split() it would learn from the validation and test rows too."


def _query_warnings(frame: pd.DataFrame, group_col, target) -> list[str]:
    sizes = frame.groupby(group_col, sort=False)[target].agg(["size", "nunique"])
    warnings = []
    single = sizes.index[sizes["size"] == 1]
    if len(single):
        warnings.append(f"{len(single)} of {len(sizes)} queries have a single row (e.g. {single[:5].tolist()}): "
                        "there is nothing to order in them.")
    flat = sizes.index[(sizes["size"] > 1) & (sizes["nunique"] == 1)]
    if len(flat):
        warnings.append(f"{len(flat)} of {len(sizes)} queries have rows of one relevance only (e.g. "
                        f"{flat[:5].tolist()}): they give the pairwise loss nothing to learn, and the metrics skip "
                        "queries with no relevant row.")
    return warnings


@torch.inference_mode()
def network_scores(model: nn.Module, data: GroupedRows, batch_rows: int = 8192) -> np.ndarray:
    """A trained network's score of every row of `data`, in its (group-sorted) order."""
    model.eval()
    device = next(model.parameters()).device
    parts = [model(*batch.inputs).float().reshape(-1).cpu()
             for batch in data.batches(device).evaluation_batches(batch_rows)]
    return torch.cat(parts).numpy()


def _baseline_run(name: str, model, library: str, scores: np.ndarray, data: GroupedRows, y_train: np.ndarray, *,
                  seed: int, train_units: int, started: float, data_kind: str, metrics: dict | None = None) -> Run:
    """A baseline scored on the validation groups like a network's best epoch; its val_loss is the loss a
    network would be trained with (chosen as fit's loss="auto" would), on the baseline's scores of `data`.
    `metrics`: the validation metrics when they come from elsewhere (full ranking), else scored on `data`."""
    target = data.target()
    metrics = {f"val_{k}": v for k, v in (metrics or score("ranking", 1, scores, target)).items()}
    loss_fn, _ = choose_loss("ranking", "auto", y_train, 1)
    with torch.no_grad():
        val_loss = float(loss_fn(torch.as_tensor(scores, dtype=torch.float32),
                                 torch.as_tensor(target, dtype=torch.float32)))
    history = pd.DataFrame([{"epoch": 1, "train_loss": math.nan, "val_loss": val_loss, **metrics, "lr": math.nan}])
    config = {"name": name, "kind": "baseline", "model": model.estimator_name, "library": library, "seed": seed,
              "target_scale": [0.0, 1.0], "monitor": "val_loss", "mode": "min", "train_rows": int(train_units),
              "val_rows": len(data), "data_kind": data_kind, "loss": type(loss_fn).__name__,
              **getattr(model, "config", {})}
    return Run(name=name, config=config, history=history, best_epoch=1, best_value=val_loss, stop_reason="fitted",
               model=model, wall_seconds=time.perf_counter() - started)
