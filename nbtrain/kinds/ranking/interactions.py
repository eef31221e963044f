"""Implicit feedback: one row per observed (user, item) interaction, ranked for each user.

`nt.Pipeline.from_interactions(df, user="user", item="item", time=None)`. Split without leaks (see
`split`: a global cut in time, leave-one-out, the last fraction of each user's interactions, or a
random fraction); matrix factorisation trained with BPR on negatives drawn each epoch from the
items a user has not interacted with in train.

Evaluation ranks, for every validation (test) user, the whole catalogue less the items they
interacted with before (nbtrain.kinds.ranking.retrieval): NDCG@10 (the headline and the run selection
metric), MAP and recall@10, exact. Held-out interactions of users or items train never saw count
as misses; the reports give the figures without them too. Sampled metrics (each user's held-out
items among N sampled items) only when asked for, `preprocess(negatives=N)`, and then labelled as
such in every report, run note, the runs table and the test report.

Baselines: popularity, item-kNN, EASE and ALS (the `implicit` package), each a run scored like a
network; a network's run notes compare it with the best of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch import nn

from nbtrain.data import fingerprint, inputs
from nbtrain.data import split as splitting
from nbtrain.errors import ConfigError, DataError, LeakageError
from nbtrain.kinds.ranking.data import InteractionCodes, clean_interactions, split_per_user
from nbtrain.kinds.ranking.models import MatrixFactorization
from nbtrain.kinds.ranking.pipeline import _LEARNS_FROM_DATA, RankingPipeline, _baseline_run, network_scores
from nbtrain.kinds.ranking.recommenders import ALS, RECOMMENDERS
from nbtrain.kinds.ranking.retrieval import (FULL_LABEL, SAMPLED_WHY, FullRankingSplit, Ranked, bootstrap_users,
                                             rank_with_baseline, rank_with_model, ranks_frame, sampled_label)
from nbtrain.report import Report
from nbtrain.training.evaluation import HEADLINE, TestReport
from nbtrain.training.run import Run

SPLITS = ("auto", "time", "leave_one_out", "last_fraction", "per_user")
LOSS_NEGATIVES = 20        # sampled items per validation user for the cheap validation loss (fixed, seeded)


class InteractionPipeline(RankingPipeline):
    """Implicit feedback: one row per observed (user, item) interaction; see the module docstring.

    Made by nt.Pipeline.from_interactions(df, user=..., item=..., time=None). Other columns of `df` are
    not used. The rows' content hashes (user, item and time) key the test lock, as for every kind.
    """

    def __init__(self, data, *, user, item, time=None, workdir="nbtrain-runs", seed=0):
        self.user, self.item = user, item
        # no target: the base constructor's hooks below read the user, item and time columns instead
        super().__init__(data, None, time_col=time, workdir=workdir, seed=seed)

    def _named(self) -> list:
        return [c for c in (self.user, self.item, self.time_col) if c is not None]

    def _check_columns(self, frame: pd.DataFrame) -> None:
        named = self._named()
        for name, role in zip(named, ("user", "item", "time")):
            inputs.require_column(frame.columns, name, role)
        if len(set(named)) < len(named):
            raise ConfigError(f"user, item and time must name different columns; received {named}.")

    def _used_columns(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[self._named()]  # other columns of the interactions are not used

    def _kind_and_task(self, frame: pd.DataFrame, kind: str, task: str) -> tuple[str, str, str]:
        return "interactions", "ranking", ("implicit feedback: every row is an observed interaction; the items a "
                                           "user has not interacted with are the negatives")

    def clean(self):
        """Drop interactions without a user or item (or time), and repeats of a (user, item) pair (the
        earliest is kept); report users and items with too few interactions."""
        self._frame, positions, report = clean_interactions(self._data, self.user, self.item, self.time_col)
        self._clean_row_hash = self._row_hash[positions]
        self._clean_feature_hash = self._feature_hash[positions]
        self.cleaning_ = report
        self._reset_to("cleaned")
        return report

    # ---- split ----------------------------------------------------------------------------

    def split(self, ratios="auto", seed=None, *, method="auto", random_split_reason=None):
        """Split the interactions into train, validation and test without leaks.

        method:
        - "time" (the default with a time column): one cut in time for everyone; every validation
          interaction is later than every train one, every test one later still.
        - "leave_one_out" (needs times): each user's last interaction is their test, the one before it
          their validation, the rest train (ratios unused).
        - "last_fraction" (needs times): each user's latest interactions by the ratios of the user's own
          count (about 10% each for validation and test).
        - "per_user": the last fraction with times; without, a seeded random fraction of each user's.
        Per-user methods with a time column need random_split_reason: train then holds other users'
        interactions from after a user's held-out ones. Users with fewer than 3 interactions stay in train.
        """
        self._require("cleaned", "split")
        seed = self.seed if seed is None else seed
        ratios = splitting.check_ratios(ratios, len(self._frame))
        method, protocol = self._split_method(method, random_split_reason)
        times = self._frame[self.time_col] if self.time_col is not None else None
        if method == "time":
            positions = splitting.split_by_time(times, ratios)
        else:
            positions = split_per_user(self._frame[self.user], ratios, np.random.default_rng(seed), times,
                                       one=method == "leave_one_out")
        reason = random_split_reason if self.time_col is not None and method != "time" else None
        self._split = splitting.Split(method, ratios, seed, positions, reason)
        return self._record_split(lambda split_id: self._interaction_split_report(split_id, protocol),
                                  f"interactions of {self.user!r} with {self.item!r}")

    def _split_method(self, method: str, reason) -> tuple[str, str]:
        if method not in SPLITS:
            raise ConfigError(f"method={method!r} is not a split of interactions; use 'auto', 'time' (one cut in "
                              "time, needs time=), 'leave_one_out' (each user's last interaction), 'last_fraction' "
                              "(each user's latest share) or 'per_user'.")
        if method == "auto":
            method = "time" if self.time_col is not None else "per_user"
        if method == "per_user" and self.time_col is not None:
            method = "last_fraction"
        if method != "per_user" and self.time_col is None:
            raise ConfigError(f"method={method!r} needs the time of each interaction: pass time='<column>' to "
                              "nt.Pipeline.from_interactions, or use method='per_user' (a random share of each "
                              "user's interactions).")
        if method in ("leave_one_out", "last_fraction") and not reason:
            raise LeakageError(
                f"The interactions have a time column ({self.time_col!r}); a per-user split ({method}) holds out "
                "each user's latest interactions but trains on other users' interactions from after them, so the "
                "model learns what becomes popular later before it is evaluated. Use method='time' (the default: "
                "one cut in time for everyone), or pass random_split_reason='...' to accept it (common when a time "
                "cut leaves most test users unseen in train); the reason is recorded.")
        return method, _PROTOCOLS[method]

    def _interaction_split_report(self, split_id: str, protocol: str) -> InteractionSplitReport:
        split, frame = self._split, self._frame
        report = InteractionSplitReport(method=split.method, ratios=split.ratios, seed=split.seed, split_id=split_id,
                                        sizes=split.sizes(), random_split_reason=split.random_split_reason,
                                        protocol=protocol)
        report.groups = {p: int(frame[self.user].iloc[pos].nunique()) for p, pos in split.positions.items()}
        if split.method != "time":
            report.protocol += (f" Validation holds {report.sizes['val'] / max(report.groups['val'], 1):.1f} "
                                f"interactions per user on average, test {report.sizes['test'] / max(report.groups['test'], 1):.1f}.")
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
                    "so they count as misses." + (" A time cut does this to users who arrived later; "
                    "method='last_fraction' or 'leave_one_out' holds out every user's own latest interactions instead."
                                                  if split.method == "time" else ""))
        return report

    # ---- preprocess -------------------------------------------------------------------------

    def preprocess(self, *, negatives="all", train_negatives: int = 1):
        """Codes for the train split's users and items (learned from train only), the train pairs, and what
        validation ranks. negatives="all" (the default; "auto" is the same): each validation user ranks
        every item they have no train interaction with (full ranking). An int N: sampled metrics instead,
        each user's held-out items among N items drawn (seeded) from those, labelled as sampled everywhere.
        `train_negatives`: negatives drawn per observed train pair, every epoch."""
        self._require_split(_LEARNS_FROM_DATA.format(verb="preprocess"))
        chosen = _negatives(negatives)
        if isinstance(train_negatives, bool) or not isinstance(train_negatives, (int, np.integer)) \
                or not 1 <= train_negatives <= 100:
            raise ConfigError(f"train_negatives must be a whole number from 1 to 100; received {train_negatives!r}.")
        train, val = self._rows("train"), self._rows("val")
        codes = InteractionCodes(self.user, self.item).fit(train)
        self._train, full = codes.train_data(train, negatives=int(train_negatives))
        rng = np.random.default_rng([self._split.seed, 1])
        if chosen == "all":
            pairs, _ = codes.candidates(val, train, LOSS_NEGATIVES, rng)
            self._val = FullRankingSplit(pairs, codes.held_out(val, train))
            ranked, cold = len(self._val.held.users), self._val.held.cold_interactions
        else:
            self._val, cold = codes.candidates(val, train, chosen, rng)
            ranked = len(self._val)
        if not ranked:
            raise DataError(f"No validation user can be scored: all {len(val)} validation interactions are cold "
                            "starts (users or items with no train interaction). Split with method='last_fraction' or "
                            "'leave_one_out', or give the time split a larger train share.")
        self.preprocessor_, self._eval_negatives = codes, chosen
        self._reset_to("preprocessed")
        return InteractionPreprocessReport(users=codes.n_users, items=codes.n_items, train_pairs=len(self._train),
                                           full_users=full, val_users=ranked, val_interactions=len(val),
                                           val_cold=cold, negatives=chosen, train_negatives=int(train_negatives))

    @property
    def evaluation(self) -> str:
        """What validation and test rank: "full ranking: ..." or "sampled: N negatives per user"."""
        self._require("preprocessed", "evaluation")
        return FULL_LABEL if self._eval_negatives == "all" else sampled_label(self._eval_negatives)

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

    # ---- runs ---------------------------------------------------------------------------------

    def _default_model(self):
        users, items = self.n_users, self.n_items
        return lambda: MatrixFactorization(users, items, dim=DEFAULT_DIM)

    def _fit_defaults(self) -> dict:
        return dict(FIT_DEFAULTS)

    def baseline(self, library: str = "popularity", **options) -> Run:
        """A classical recommender fitted on the train interactions, scored on validation like every run:
        "popularity" (items by train popularity), "item_knn" (neighbours=100), "ease" (l2=200.0) or "als"
        (implicit's ALS: factors=64, regularization=0.05, alpha=2.0, iterations=15). `options` override those."""
        if library not in RECOMMENDERS:
            raise ConfigError(f"library={library!r} is not a baseline of implicit feedback; use one of "
                              f"{list(RECOMMENDERS)}.")
        self._require("preprocessed", "baseline")
        started = time.perf_counter()
        extra = {"seed": self.seed} if RECOMMENDERS[library] is ALS else {}
        try:
            model = RECOMMENDERS[library](**{**extra, **options})
        except TypeError as exc:
            raise ConfigError(f"baseline({library!r}) does not take {sorted(options)}: {exc}.") from exc
        model.fit(self.preprocessor_.matrix(self._rows("train")))
        pairs = self._val.pairs if isinstance(self._val, FullRankingSplit) else self._val
        metrics = rank_with_baseline(model, self._val.held).metrics() if isinstance(self._val, FullRankingSplit) \
            else None
        sampled = "" if metrics is not None else f"-sampled{self._eval_negatives}"  # never the full-ranking run's name
        run = _baseline_run(f"baseline-{library.replace('_', '-')}{sampled}-{self.split_id[:6]}", model, library,
                            model.score(*pairs.inputs), pairs, self._train.y, seed=self.seed,
                            train_units=len(self._train), started=started, data_kind=self.kind, metrics=metrics)
        self._log_run(run, None)
        return run

    def _log_run(self, run: Run, cell_text: str | None) -> None:
        """Every run says how it was evaluated (config "evaluation"); a sampled one also in its notes."""
        run.config["evaluation"] = self.evaluation
        if self._eval_negatives != "all":
            run.notes.append(f"Validation metrics are {self.evaluation}: {SAMPLED_WHY}.")
        super()._log_run(run, cell_text)

    @property
    def runs(self) -> pd.DataFrame:
        """The base's runs table with an `evaluation` column: full ranking or sampled, per run."""
        table = super().runs
        if not table.empty:
            said = {r["name"]: r["config"].get("evaluation", "sampled (before full ranking existed)")
                    for r in self.ledger.runs(self.fingerprint, self.split_id)}
            table.insert(0, "evaluation", [said.get(name) for name in table.index])
        return table

    # ---- test -----------------------------------------------------------------------------------

    def _test_outputs(self, run: Run, rows: pd.DataFrame) -> tuple:
        seen = pd.concat([self._rows("train"), self._rows("val")])
        codes = self.preprocessor_
        if self._eval_negatives == "all":
            held = codes.held_out(rows, seen)
            if not len(held.users):
                raise DataError(f"No test user can be scored: all {len(rows)} test interactions are cold starts "
                                "(users or items with no train interaction). Split with method='last_fraction'.")
            ranked = rank_with_model(run.model, held) if isinstance(run.model, nn.Module) else \
                rank_with_baseline(run.model, held)
            return ranked, held, None
        data, self._test_cold = codes.candidates(rows, seen, self._eval_negatives,
                                                 np.random.default_rng([self._split.seed, 2]))
        if not len(data):
            raise DataError(f"No test user can be scored: all {len(rows)} test interactions are cold starts (users "
                            "or items with no train interaction). Split with method='last_fraction'.")
        scores = network_scores(run.model, data) if isinstance(run.model, nn.Module) else run.model.score(*data.inputs)
        self._test_users = len(data)
        return scores, data.target(), data.index

    def _test_report(self, run: Run, predicted, y, index) -> TestReport:
        if not isinstance(predicted, Ranked):
            return super()._test_report(run, predicted, y, index)
        ranked, held = predicted, y
        headline = HEADLINE["ranking"]
        val = {k.removeprefix("val_"): v for k, v in run.best_metrics.items() if k != "val_loss"}
        report = TestReport(run=run.name, metrics=ranked.metrics(), val_metrics=val, headline=headline,
                            interval=bootstrap_users(ranked.ndcg, self.seed), predictions=ranks_frame(held, ranked),
                            units="held-out interactions of items train knows")
        self._test_users, self._test_cold, self._test_held = len(held), held.cold_interactions, held
        self._test_warm = ranked.metrics(warm=True)
        return report

    def _over_time(self) -> bool:
        return self._split.method in ("time", "leave_one_out", "last_fraction")

    def test(self, run=None, reuse_reason: str | None = None):
        report = super().test(run, reuse_reason)
        if self._eval_negatives == "all":
            held = self._test_held
            report.warnings.append(
                f"Full ranking: each of the {len(held)} test users' held-out items ranked among every item they have "
                f"no train or validation interaction with (about {int(np.median(report.predictions['candidates']))} "
                "per user).")
            if self._test_cold:
                warm = self._test_warm
                report.warnings.append(
                    f"{self._test_cold} of {held.interactions} test interactions ({self._test_cold / held.interactions:.1%}) "
                    f"are cold starts (a user or item with no train interaction): counted as misses. Without them "
                    + ", ".join(f"{k} {v:.4g}" for k, v in warm.items()) + ".")
        else:
            report.warnings.append(
                f"Sampled metrics ({self.evaluation}): the held-out items of each of the {self._test_users} test "
                f"users were ranked among {self._eval_negatives} sampled items they never interacted with; "
                f"{SAMPLED_WHY}.")
            if self._test_cold:
                report.warnings.append(f"{self._test_cold} test interactions were cold starts (a user or item with no "
                                       "train interaction) and were left out of the sampled candidates.")
        return report

    # ---- using the model (nbtrain.kinds.ranking.interactions_bundle) -----------------------------------

    def predict(self, new_data, run=None, *, strict: bool = False) -> pd.DataFrame:
        """A run's `score` of (user, item) pairs (a DataFrame with the user and item columns) and their `rank`
        (1 = first) among the pairs given for the same user, indexed like them. A pair whose user or item
        train never saw (a cold start) scores NaN, rank <NA>, with a warning (`strict=True`: an error). Pairs
        of the test split are refused until test(). `run`: default the run test() evaluated, else the one
        test() would pick; a classical baseline predicts too, in this session."""
        from nbtrain.kinds.ranking.interactions_bundle import interaction_predictor
        return interaction_predictor(self, run, verb="predict").predict(new_data, strict=strict)

    def save(self, path, run=None):
        """Write a network run as one bundle file: its weights, the user and item index maps and the sealed
        test pairs, no train interaction (nbtrain.kinds.ranking.interactions_bundle has the format). The classical
        baselines are not bundled: the error says why."""
        from nbtrain.kinds.ranking.interactions_bundle import interaction_predictor
        return interaction_predictor(self, run, verb="save", evidence=True).save(path)

    def export(self, path, format: str = "onnx", run=None, *, rtol: float = 1e-4, atol: float = 1e-5):
        """Write a network run for serving (inputs `users` and `items`, int64 codes; one score per pair), checked
        on the validation pairs train knows (nbtrain.kinds.ranking.interactions_bundle, nbtrain.export)."""
        from nbtrain.kinds.ranking.interactions_bundle import interaction_predictor
        return interaction_predictor(self, run, verb="export").export(path, format, sample=self._rows("val"),
                                                                      rtol=rtol, atol=atol)

    def status(self):
        report = super().status()
        report.target = f"interactions of {self.user!r} with {self.item!r}"
        return report

    def __repr__(self) -> str:
        rows = len(getattr(self, "_frame", self._data))
        return (f"Pipeline.from_interactions(user={self.user!r}, item={self.item!r}, time={self.time_col!r}, "
                f"rows={rows}, stage={self._stage!r})")


# Matrix factorisation's defaults, measured on MovieLens small (last_fraction split, full-ranking validation,
# seeds 0 and 1). The former ones (dim 32, batch 256, 15 epochs) annealed the lr to 1e-5 while the best epoch was
# still the last. Batch 2048 (a quarter of the optimizer steps per epoch) at lr 2e-2, cosine over 12 epochs,
# converges: 20 or 30 epochs reach the same validation and test NDCG@10 (0.068-0.078, 0.057-0.061), only later
# (benchmarks/bench_ranking.py). Weight decay 0.1 keeps embeddings from overfitting within a few epochs.
DEFAULT_DIM = 64
FIT_DEFAULTS = {"lr": 2e-2, "weight_decay": 0.1, "batch_size": 2048, "monitor": "val_ndcg@10", "epochs": 12,
                "patience": 4}


# ---- reports ------------------------------------------------------------------------------

_PROTOCOLS = {
    "time": ("A global cut in time: every validation interaction is later than every train interaction, and every "
             "test one later still, as in use, where a model only knows the past. Users or items first seen after "
             "the cut cannot be scored by a model of users and items (cold starts): they count as misses."),
    "leave_one_out": ("Leave-one-out per user: each user's last interaction is held out for test and the one before "
                      "it for validation; users with fewer than 3 interactions stay in train. Train also holds other "
                      "users' interactions from after a user's held-out ones (accepted, reason recorded)."),
    "last_fraction": ("Last fraction per user: each user's latest interactions are held out (validation, then test) "
                      "by the ratios of the user's own count; users with fewer than 3 interactions stay in train. "
                      "Train also holds other users' interactions from after a user's held-out ones (accepted, reason "
                      "recorded)."),
    "per_user": ("Random fraction per user: a seeded random share of each user's interactions (by the ratios) is "
                 "held out for validation and test, since without times there is no order to respect, and holding "
                 "out whole users would leave them unknown to a model of users; users with fewer than 3 "
                 "interactions stay in train."),
}


@dataclass(repr=False)
class InteractionSplitReport(splitting.SplitReport):
    protocol: str = ""
    cold: dict = field(default_factory=dict)   # part -> interactions by users or of items train never saw

    def _summary(self) -> list[str]:
        lines = super()._summary()
        lines[1] = lines[1].replace("Rows:", "Interactions:")
        lines[2:2] = [self.protocol] if self.protocol else []
        if any(self.cold.values()):
            lines.append("Cold starts (counted as misses): " + ", ".join(f"{p} {n}" for p, n in self.cold.items())
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
    val_interactions: int = 0
    val_cold: int = 0
    negatives: object = "all"
    train_negatives: int = 1
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        drawn = "a fresh negative" if self.train_negatives == 1 else f"{self.train_negatives} fresh negatives"
        lines = [f"Codes for {self.users} users and {self.items} items, learned from the train split only; "
                 f"{self.train_pairs} train interactions, each paired every epoch with {drawn} (an item its user "
                 "has no train interaction with)."]
        if self.negatives == "all":
            lines.append(f"Validation: {self.val_users} users, each ranking every item they have no train "
                         f"interaction with ({FULL_LABEL}); NDCG@10, recall@10 and MAP exact. The validation loss "
                         f"(cheap, for the curves) compares each held-out item with {LOSS_NEGATIVES} sampled items.")
        else:
            lines.append(f"Validation: {self.val_users} users, each ranking their held-out items among "
                         f"{self.negatives} items drawn (seeded, fixed for every epoch and run) from those they have "
                         f"not interacted with. Metrics are {sampled_label(self.negatives)}: {SAMPLED_WHY}.")
        if self.val_cold:
            lines.append(f"{self.val_cold} of {self.val_interactions} validation interactions are cold starts (user or "
                         "item unseen in train)" + (": counted as misses." if self.negatives == "all" else
                                                    ": left out of the sampled candidates."))
        if self.full_users:
            lines.append(f"{self.full_users} users interacted with every item: no negative exists for them, so their "
                         "train interactions are left out of training.")
        return lines


def _negatives(negatives):
    if negatives in ("all", "auto"):
        return "all"
    if isinstance(negatives, bool) or not isinstance(negatives, (int, np.integer)) or negatives < 1:
        raise ConfigError(f"negatives must be 'all' (full ranking, the default) or a whole number >= 1 (sampled "
                          f"metrics); received {negatives!r}.")
    return int(negatives)


__all__ = ["InteractionPipeline"]
