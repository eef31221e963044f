"""Ranking: a model that orders the documents of a query, or the items of a user, best first.

Two kinds of data, two Pipelines:

- Graded relevance, `RankingPipeline`: `nt.Pipeline(df, target="relevance", task="ranking",
  group_col="query")`, one row per (query, document) with features and a relevance grade >= 0.
  Split by query (the base's group split: no query in two splits); the base's tabular preprocessing
  of the features, fitted on train; the tabular MLP scores each row (one output); the units of
  training and evaluation are whole queries; loss LambdaRank. baseline(): gradient-boosted trees
  regressing the relevance (pointwise), their predictions ranked per query.
- Implicit feedback, `InteractionPipeline`: `nt.Pipeline.from_interactions(df, user="user",
  item="item", time=None)`, one row per observed interaction. Split by time (a global cut) when
  there is a time column, else per user (see `split`); matrix factorisation trained with BPR on
  negatives drawn each epoch from the items a user has not interacted with in train; validation
  and test rank each user's held-out items among sampled items the user never interacted with.
  baseline(): items ranked by train popularity.

Both report NDCG@10 (the headline), MAP and recall@10, per query or user then averaged
(nbtrain.training.ranking), and bootstrap the test NDCG over queries or users.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from nbtrain.data import fingerprint, inputs
from nbtrain.data import split as splitting
from nbtrain.data.ranking import GroupedRows, InteractionCodes, clean_interactions, group_rows, split_per_user
from nbtrain.errors import ConfigError, DataError, LeakageError
from nbtrain.models.baseline import TreeBaseline
from nbtrain.models.ranking import MatrixFactorization, Popularity
from nbtrain.pipeline import _COPY_ON_WRITE, Pipeline
from nbtrain.report import Report
from nbtrain.training.evaluation import score
from nbtrain.training.losses import choose_loss
from nbtrain.training.run import Run

FULL_CATALOGUE = 1000      # up to this many items, users are evaluated against every item (exact metrics)
SAMPLED_NEGATIVES = 100    # beyond it, against this many sampled unobserved items per user
SPLITS = ("auto", "time", "per_user")


class RankingPipeline(Pipeline):
    """(query, document) rows with a relevance grade; see the module docstring."""

    def __init__(self, data, target, *, task="ranking", group_col=None, **options):
        if task not in ("auto", "ranking"):
            raise ConfigError(f"RankingPipeline is for task='ranking'; received task={task!r}.")
        if group_col is None:
            raise ConfigError("task='ranking' orders the rows of each query: pass group_col='<column naming the "
                              "query of each row>' (a query's rows stay together in one split). For user-item "
                              "interactions without relevance grades, use nt.Pipeline.from_interactions(df, "
                              "user=..., item=...).")
        super().__init__(data, target, task="ranking", group_col=group_col, **options)
        if self.kind != "tabular":
            raise ConfigError(f"Ranking reads tabular features of each (query, document) row; this data reads as "
                              f"kind {self.kind!r}, which ranking does not support yet. Pass kind='tabular' if "
                              "its columns are features.")

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

    # ---- not for ranking yet ----------------------------------------------------------------

    def predict(self, new_data, run=None, *, strict: bool = False):
        raise ConfigError("predict() is not available for ranking yet. Score rows with the run's model: "
                          "run.model(*inputs) gives one score per row; higher ranks first.")

    def save(self, path, run=None):
        raise ConfigError("save() writes tabular bundles only; ranking runs are not supported yet. The best "
                          "weights are in run.checkpoint.")

    def export(self, path, format: str = "onnx", run=None, **options):
        raise ConfigError("export() is not available for ranking yet; the best weights are in run.checkpoint.")


class InteractionPipeline(RankingPipeline):
    """Implicit feedback: one row per observed (user, item) interaction; see the module docstring.

    Made by nt.Pipeline.from_interactions(df, user=..., item=..., time=None). Other columns of `df` are
    not used. The rows' content hashes (user, item and time) key the test lock, as for every kind.
    """

    def __init__(self, data, *, user, item, time=None, workdir="nbtrain-runs", seed=0):
        frame = inputs.require_frame(data)
        inputs.check_shape(frame)
        named = [c for c in (user, item, time) if c is not None]
        for name, role in zip(named, ("user", "item", "time")):
            inputs.require_column(frame.columns, name, role)
        if len(set(named)) < len(named):
            raise ConfigError(f"user, item and time must name different columns; received {named}.")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0; received {seed!r}.")
        # what the base's __init__ sets, for interactions: no target, no features beyond the two ids
        self.user, self.item, self.seed = user, item, int(seed)
        self.target, self.time_col, self.group_col, self.ordinal = None, time, None, {}
        self.kind, self.task = "interactions", "ranking"
        self.task_reason = ("implicit feedback: every row is an observed interaction; the items a user has not "
                            "interacted with are the negatives")
        self._features = [user, item]
        inputs.check_cells_hashable(frame[named])
        self._data = frame[named].copy(deep=not _COPY_ON_WRITE)
        self._feature_hash = fingerprint.combine(self._data, [user, item])
        self._row_hash = fingerprint.mix(self._feature_hash, fingerprint.combine(self._data, [time])) \
            if time is not None else self._feature_hash.copy()
        if time is not None:
            self._data[time] = inputs.parse_time(self._data[time])
        self.fingerprint = fingerprint.dataset_fingerprint(self._row_hash, named)
        self.workdir = Path(workdir)
        self._stage = "raw"

    def clean(self):
        """Drop interactions without a user or item (or time), and repeats of a (user, item) pair (the
        earliest is kept); report users and items with too few interactions."""
        self._frame, positions, report = clean_interactions(self._data, self.user, self.item, self.time_col)
        self._clean_row_hash = self._row_hash[positions]
        self._clean_feature_hash = self._feature_hash[positions]
        self.cleaning_ = report
        self._reset_to("cleaned")
        return report

    def split(self, ratios="auto", seed=None, *, method="auto", random_split_reason=None):
        """Split the interactions into train, validation and test without leaks.

        method "time" (the default with a time column): one cut in time for everyone; every validation
        interaction is later than every train one, every test one later still. "per_user" (the default
        without times): each user's own interactions cut by the ratios, the latest first when there are
        times (leave-last; with a time column it needs random_split_reason, since train then holds other
        users' later interactions), else at random (seeded). The report says which, and why.
        """
        self._require("cleaned", "split")
        seed = self.seed if seed is None else seed
        ratios = splitting.check_ratios(ratios, len(self._frame))
        method, protocol = self._split_method(method, random_split_reason)
        times = self._frame[self.time_col] if self.time_col is not None else None
        if method == "time":
            positions = splitting.split_by_time(times, ratios)
        else:
            positions = split_per_user(self._frame[self.user], ratios, np.random.default_rng(seed), times)
        reason = random_split_reason if self.time_col is not None and method != "time" else None
        self._split = splitting.Split(method, ratios, seed, positions, reason)
        return self._record_split(lambda split_id: self._interaction_split_report(split_id, protocol),
                                  f"interactions of {self.user!r} with {self.item!r}")

    def _split_method(self, method: str, reason) -> tuple[str, str]:
        if method not in SPLITS:
            raise ConfigError(f"method={method!r} is not a split of interactions; use 'auto', 'time' (one cut in "
                              "time, needs time=) or 'per_user' (each user's own interactions held out).")
        if method == "auto":
            method = "time" if self.time_col is not None else "per_user"
        if method == "time" and self.time_col is None:
            raise ConfigError("method='time' needs the time of each interaction: pass time='<column>' to "
                              "nt.Pipeline.from_interactions.")
        if method == "per_user" and self.time_col is not None and not reason:
            raise LeakageError(
                f"The interactions have a time column ({self.time_col!r}); a per-user split holds out each user's "
                "latest interactions but trains on other users' interactions from after them, so the model learns "
                "what becomes popular later before it is evaluated. Use method='time' (the default: one cut in "
                "time for everyone), or pass random_split_reason='...' to accept it (common when a time cut leaves "
                "most test users unseen in train); the reason is recorded.")
        return method, _PROTOCOLS[method if method == "time" or self.time_col is None else "leave_last"]

    def _interaction_split_report(self, split_id: str, protocol: str) -> InteractionSplitReport:
        split, frame = self._split, self._frame
        report = InteractionSplitReport(method=split.method, ratios=split.ratios, seed=split.seed, split_id=split_id,
                                        sizes=split.sizes(), random_split_reason=split.random_split_reason,
                                        protocol=protocol)
        report.groups = {p: int(frame[self.user].iloc[pos].nunique()) for p, pos in split.positions.items()}
        if self.time_col is not None:
            report.time_ranges = splitting.describe_times(frame[self.time_col], split.positions)
        train = frame.iloc[split.positions["train"]]
        for part in ("val", "test"):
            rows = frame.iloc[split.positions[part]]
            cold = ~(rows[self.user].isin(train[self.user]) & rows[self.item].isin(train[self.item]))
            report.cold[part] = int(cold.sum())
            if len(rows) and cold.mean() >= 0.2:
                report.warnings.append(
                    f"{cold.mean():.0%} of the {part} interactions ({int(cold.sum())} of {len(rows)}) are by users or "
                    "of items with no train interaction (cold starts): a model of users and items cannot score them, "
                    "so they are left out of evaluation." + (" A time cut does this to users who arrived later; "
                    "method='per_user' holds out every user's own latest interactions instead."
                                                             if split.method == "time" else ""))
        return report

    def preprocess(self, *, negatives="auto"):
        """Codes for the train split's users and items (learned from train only), the train pairs, and the
        validation candidates: each user's held-out items plus `negatives` items drawn (seeded) from those
        the user has no train or validation interaction with. "auto": every such item when the catalogue
        has at most 1,000 items (exact metrics), else 100 sampled; an int, or "all"."""
        self._require_split(_LEARNS_FROM_DATA.format(verb="preprocess"))
        _negatives(negatives, None)  # a bad value fails before any work
        train, val = self._rows("train"), self._rows("val")
        codes = InteractionCodes(self.user, self.item).fit(train)
        chosen = _negatives(negatives, codes.n_items)
        self._train, full = codes.train_data(train)
        self._val, cold = codes.candidates(val, train, chosen, np.random.default_rng([self._split.seed, 1]))
        if not len(self._val):
            raise DataError(f"No validation user can be scored: all {len(val)} validation interactions are cold "
                            "starts (users or items with no train interaction). Split with method='per_user', or "
                            "give the time split a larger train share.")
        self.preprocessor_, self._eval_negatives = codes, chosen
        self._reset_to("preprocessed")
        return InteractionPreprocessReport(users=codes.n_users, items=codes.n_items, train_pairs=len(self._train),
                                           full_users=full, val_users=len(self._val), val_rows=len(self._val.relevance),
                                           val_cold=cold, negatives=chosen)

    @property
    def n_users(self) -> int:
        """Users with a train interaction (the rows of the user embedding)."""
        self._require("preprocessed", "n_users")
        return self.preprocessor_.n_users

    @property
    def n_items(self) -> int:
        """Items with a train interaction (the rows of the item embedding)."""
        self._require("preprocessed", "n_items")
        return self.preprocessor_.n_items

    @property
    def n_inputs(self) -> int:
        return 0  # no float features: users and items come as codes

    @property
    def feature_names(self) -> list:
        return []

    @property
    def cardinalities(self) -> dict:
        self._require("preprocessed", "cardinalities")
        return {str(self.user): self.n_users, str(self.item): self.n_items}

    def _default_model(self):
        users, items = self.n_users, self.n_items
        return lambda: MatrixFactorization(users, items, dim=32)

    def _fit_defaults(self) -> dict:
        # units are observed pairs (the default batch of 256). Measured on MovieLens (100k interactions, 15
        # epochs): lr 1e-2 beats 3e-3 (embeddings are updated only when their user or item is in a batch), and
        # weight decay 0.1 keeps them from overfitting within a few epochs (val NDCG@10 0.68, against 0.61 at 1e-2)
        return {"lr": 1e-2, "weight_decay": 0.1}

    def baseline(self, *, library: str = "popularity") -> Run:
        """Every user gets the same ranking, items by train popularity, scored on validation like every run."""
        if library != "popularity":
            raise ConfigError(f"library={library!r}: the baseline of implicit feedback is 'popularity' (items "
                              "ranked by their number of train interactions).")
        self._require("preprocessed", "baseline")
        started = time.perf_counter()
        model = Popularity(self.preprocessor_.popularity_)
        run = _baseline_run(f"baseline-popularity-{self.split_id[:6]}", model, library,
                            model.score(*self._val.inputs), self._val, self._train.y, seed=self.seed,
                            train_units=len(self._train), started=started, data_kind=self.kind)
        self._log_run(run, None)
        return run

    def _test_outputs(self, run: Run, rows: pd.DataFrame) -> tuple:
        seen = pd.concat([self._rows("train"), self._rows("val")])
        data, self._test_cold = self.preprocessor_.candidates(rows, seen, self._eval_negatives,
                                                              np.random.default_rng([self._split.seed, 2]))
        if not len(data):
            raise DataError(f"No test user can be scored: all {len(rows)} test interactions are cold starts (users "
                            "or items with no train interaction). Split with method='per_user'.")
        scores = network_scores(run.model, data) if isinstance(run.model, nn.Module) else run.model.score(*data.inputs)
        self._test_users = len(data)
        return scores, data.target(), data.index

    def test(self, run=None, reuse_reason: str | None = None):
        report = super().test(run, reuse_reason)
        against = ("every item they have no train or validation interaction with" if self._eval_negatives == "all"
                   else f"{self._eval_negatives} sampled items they never interacted with")
        report.warnings.append(
            f"The held-out items of each of the {self._test_users} test users were ranked among {against}"
            + ("" if self._eval_negatives == "all" else ": sampled metrics compare models fairly on the same "
               "candidates, but overstate how well the full catalogue would be ranked") + ".")
        shifted = self._split.method == "per_user" and self.time_col is not None
        if shifted and any(d.code == "test_worse_than_validation" for d in report.diagnoses):
            report.warnings.append("With a leave-last split, test holds each user's latest interactions, later than "
                                   "validation's: part of the gap can be that shift in time (tastes move on), not "
                                   "only model selection.")
        if self._test_cold:
            report.warnings.append(f"{self._test_cold} test interactions were cold starts (a user or item with no "
                                   "train interaction) and were left out.")
        return report

    def status(self):
        report = super().status()
        report.target = f"interactions of {self.user!r} with {self.item!r}"
        return report

    def __repr__(self) -> str:
        rows = len(getattr(self, "_frame", self._data))
        return (f"Pipeline.from_interactions(user={self.user!r}, item={self.item!r}, time={self.time_col!r}, "
                f"rows={rows}, stage={self._stage!r})")


# ---- reports ------------------------------------------------------------------------------

_PROTOCOLS = {
    "time": ("A global cut in time: every validation interaction is later than every train interaction, and every "
             "test one later still, as in use, where a model only knows the past. Users or items first seen after "
             "the cut cannot be scored by a model of users and items (cold starts) and are left out of evaluation."),
    "leave_last": ("Leave-last per user: each user's latest interactions are held out (validation, then test) by "
                   "the ratios of the user's own count; users with fewer than 3 interactions stay in train. Train "
                   "also holds other users' interactions from after a user's held-out ones (accepted, reason "
                   "recorded)."),
    "per_user": ("Leave-random per user: a seeded random share of each user's interactions (by the ratios) is held "
                 "out for validation and test, since without times there is no order to respect, and holding out "
                 "whole users would leave them unknown to a model of users; users with fewer than 3 interactions "
                 "stay in train."),
}


@dataclass(repr=False)
class InteractionSplitReport(splitting.SplitReport):
    protocol: str = ""
    cold: dict = field(default_factory=dict)   # part -> interactions left out of evaluation (cold starts)

    def _summary(self) -> list[str]:
        lines = super()._summary()
        lines[1] = lines[1].replace("Rows:", "Interactions:")
        lines[2:2] = [self.protocol] if self.protocol else []
        if any(self.cold.values()):
            lines.append("Cold starts left out of evaluation: " + ", ".join(f"{p} {n}" for p, n in self.cold.items())
                         + ".")
        return [line.replace("Groups:", "Users:") for line in lines]


@dataclass(repr=False)
class InteractionPreprocessReport(Report):
    title = "Preprocessing report"
    users: int = 0
    items: int = 0
    train_pairs: int = 0
    full_users: int = 0
    val_users: int = 0
    val_rows: int = 0
    val_cold: int = 0
    negatives: object = "all"
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        against = ("every item they have not interacted with (exact metrics)" if self.negatives == "all" else
                   f"{self.negatives} items drawn (seeded, fixed for every epoch and run) from those they have not "
                   "interacted with")
        lines = [f"Codes for {self.users} users and {self.items} items, learned from the train split only; "
                 f"{self.train_pairs} train interactions, each paired every epoch with a fresh negative (an item its "
                 "user has no train interaction with).",
                 f"Validation: {self.val_users} users, each ranking their held-out items among {against}; "
                 f"{self.val_rows} candidates in all."]
        if self.val_cold:
            lines.append(f"{self.val_cold} validation interactions are cold starts (user or item unseen in train), "
                         "left out.")
        if self.full_users:
            lines.append(f"{self.full_users} users interacted with every item: no negative exists for them, so their "
                         "train interactions are left out of training.")
        return lines


# ---- helpers --------------------------------------------------------------------------------

_LEARNS_FROM_DATA = "{verb}() learns from data; before split() it would learn from the validation and test rows too."


def _negatives(negatives, n_items: int | None):
    if negatives == "all" or (negatives == "auto" and n_items is not None and n_items <= FULL_CATALOGUE):
        return "all"
    if negatives == "auto":
        return SAMPLED_NEGATIVES
    if isinstance(negatives, bool) or not isinstance(negatives, (int, np.integer)) or negatives < 1:
        raise ConfigError(f"negatives must be 'auto', 'all' or a whole number >= 1; received {negatives!r}.")
    return int(negatives)


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
                  seed: int, train_units: int, started: float, data_kind: str) -> Run:
    """A baseline scored on the validation groups like a network's best epoch; its val_loss is the loss a
    network would be trained with (chosen as fit's loss="auto" would), on the baseline's scores."""
    target = data.target()
    metrics = {f"val_{k}": v for k, v in score("ranking", 1, scores, target).items()}
    loss_fn, _ = choose_loss("ranking", "auto", y_train, 1)
    with torch.no_grad():
        val_loss = float(loss_fn(torch.as_tensor(scores, dtype=torch.float32),
                                 torch.as_tensor(target, dtype=torch.float32)))
    history = pd.DataFrame([{"epoch": 1, "train_loss": math.nan, "val_loss": val_loss, **metrics, "lr": math.nan}])
    config = {"name": name, "kind": "baseline", "model": model.estimator_name, "library": library, "seed": seed,
              "target_scale": [0.0, 1.0], "monitor": "val_loss", "mode": "min", "train_rows": int(train_units),
              "val_rows": len(data), "data_kind": data_kind, "loss": type(loss_fn).__name__}
    return Run(name=name, config=config, history=history, best_epoch=1, best_value=val_loss, stop_reason="fitted",
               model=model, wall_seconds=time.perf_counter() - started)
