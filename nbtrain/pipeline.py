"""Pipeline: the stage machine and its guards. The real work is delegated to nbtrain.data.

Stages run raw -> cleaned -> split -> preprocessed (-> trained -> tested). Calling a verb again
goes back to its stage and discards what came after it, as re-running a notebook cell should.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nbtrain.data import fingerprint, inputs, leakage
from nbtrain.data import split as splitting
from nbtrain.data.clean import NA_MARKERS, CleaningReport, clean_frame
from nbtrain.data.preprocess import Arrays, PreprocessReport, TabularPreprocessor, describe
from nbtrain.data.task import check_classes, resolve_task
from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainWarning, StageError, TestSetLockedError
from nbtrain.ledger import Ledger, describe_unfinished, locked_message
from nbtrain.report import Report
from nbtrain.models.baseline import TreeBaseline
from nbtrain.training import fit as training
from nbtrain.training import folders
from nbtrain.training.evaluation import TestReport, predict_rows
from nbtrain.training.run import Run
from nbtrain.training.decision import check_rule
from nbtrain.training.runs import HIGHER_IS_BETTER, choose_run, fit_baseline, runs_table, test_report
from nbtrain.doctor.diagnosis import compare_test_with_validation
from nbtrain.doctor import DoctorReport, LRFinderReport, lr_find
from nbtrain.doctor.lr_finder import LR_FIND_OPTIONS
from nbtrain.doctor.report import doctor_report
from nbtrain import fit_wiring
from nbtrain.kinds import infer_kind, maker, pipeline_class
from nbtrain.predictor import from_pipeline, pipeline_card

STAGES = ("raw", "cleaned", "split", "preprocessed", "trained", "tested")
_MADE_BY = {"cleaned": "clean", "split": "split", "preprocessed": "preprocess", "trained": "fit"}
KINDS = ("tabular", "image", "text", "timeseries")
# pandas >= 3 copies on write: a shallow copy is then as safe as a deep one, and free.
_COPY_ON_WRITE = int(pd.__version__.split(".")[0]) >= 3


class Pipeline:
    """A dataset on its way from raw rows to an honestly evaluated model.

    >>> pipe = Pipeline(df, target="species")
    >>> pipe.clean(); pipe.split(); pipe.preprocess()

    This class holds the stages and guards every kind shares, and does the tabular work. Other kinds
    (kind="image", "text", "timeseries", or task="ranking") get a subclass from nbtrain.kinds, which
    overrides the kind's own steps: cleaning checks, preprocessing, the default model, the baseline.
    """

    # A forecaster learns from the target's own past, so a time series may have no other column.
    _needs_features = True

    def __new__(cls, data=None, target=None, *args, kind="auto", task="auto", **options):
        if cls is Pipeline:
            cls = _pipeline_class(_resolve_kind(kind, data, target, task), task)
        return super().__new__(cls)

    def __init__(self, data, target, *, kind="auto", task="auto", time_col=None, group_col=None,
                 ordinal=None, workdir="nbtrain-runs", seed=0):
        # Every kind comes through here; a kind changes a step by overriding its hook (_check_columns,
        # _used_columns, _check_cells, _kind_and_task, _hash_features), not by copying this constructor.
        frame = inputs.require_frame(data)
        inputs.check_shape(frame)
        self.target, self.time_col, self.group_col = target, time_col, group_col
        self._check_columns(frame)
        frame = self._used_columns(frame)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0; received {seed!r}.")
        self.seed = int(seed)
        self._check_cells(frame)
        self.kind, self.task, self.task_reason = self._kind_and_task(frame, kind, task)
        self.ordinal = inputs.check_ordinal(frame, ordinal)
        self._features = [c for c in frame.columns if c not in (target, time_col, group_col)]
        if not self._features and self._needs_features:
            raise DataError(f"The DataFrame has no feature columns besides the target {target!r}"
                            f"{' and the time/group columns' if time_col or group_col else ''}; "
                            "add the columns the model should learn from.")
        # The user's frame is never modified: every later change replaces columns of this copy.
        self._data = frame.copy(deep=not _COPY_ON_WRITE)
        # Content hashes of the rows as given: they identify rows for the test lock and duplicates.
        self._feature_hash = self._hash_features()
        others = [c for c in (target, time_col, group_col) if c is not None]
        self._row_hash = fingerprint.mix(self._feature_hash, fingerprint.combine(self._data, others)) if others \
            else self._feature_hash.copy()  # interactions without times: a row is its (user, item) pair
        if time_col is not None:
            self._data[time_col] = inputs.parse_time(self._data[time_col])
        self.fingerprint = fingerprint.dataset_fingerprint(self._row_hash, list(frame.columns))
        self.workdir = Path(workdir)
        self._stage = "raw"

    def _used_columns(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The columns this pipeline keeps (all of them; interactions keep their user, item and time)."""
        return frame

    def _kind_and_task(self, frame: pd.DataFrame, kind: str, task: str) -> tuple[str, str, str]:
        """(kind, task, why that task): the kind as given or read from the data, the task as given or
        inferred from the target (nbtrain.data.task), its classes checked."""
        kind = _resolve_kind(kind, frame, self.target, task)
        task, why = resolve_task(frame[self.target], task)
        check_classes(frame[self.target].dropna(), task)
        return kind, task, why

    def _check_cells(self, frame: pd.DataFrame) -> None:
        """Cells must hash (row fingerprints); kinds with other cells (pixel arrays) override it."""
        inputs.check_cells_hashable(frame)

    def _hash_features(self) -> np.ndarray:
        """One 64-bit content hash per row of the features (images: of the image's bytes)."""
        return fingerprint.combine(self._data, self._features)

    @classmethod
    def from_folder(cls, path, **options) -> Pipeline:
        """An image Pipeline over a folder with one subfolder of images per class (nbtrain.kinds.image.pipeline)."""
        return maker("from_folder")(path, **options)  # the image kind (torchvision) loads only when asked for

    @classmethod
    def from_arrays(cls, X, y, *, feature_names=None, target_name="target", **options) -> Pipeline:
        """A Pipeline over a 2-D feature array and a 1-D target (numpy arrays or lists)."""
        features = np.asarray(X)
        labels = np.asarray(y)
        if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
            raise DataError(f"from_arrays needs X with 2 dimensions (rows, features) and y with 1 and as many "
                            f"rows; received X of shape {features.shape} and y of shape {labels.shape}.")
        names = list(feature_names) if feature_names is not None else \
            [f"x{i}" for i in range(features.shape[1])]
        if len(names) != features.shape[1]:
            raise DataError(f"feature_names has {len(names)} names for {features.shape[1]} columns of X.")
        if target_name in names:
            raise ConfigError(f"target_name={target_name!r} is also a feature name; choose another.")
        frame = pd.DataFrame(features, columns=names)
        frame[target_name] = labels
        return cls(frame, target_name, **options)

    @classmethod
    def from_interactions(cls, data, user, item, *, time=None, workdir="nbtrain-runs", seed=0) -> Pipeline:
        """A ranking Pipeline over implicit feedback: one row per observed (user, item) interaction, with
        its time when there is one (nbtrain.kinds.ranking.interactions: split, negatives, model and metrics)."""
        return maker("from_interactions")(data, user=user, item=item, time=time, workdir=workdir, seed=seed)

    # ---- state -----------------------------------------------------------------------------

    @property
    def stage(self) -> str:
        return self._stage

    def _require(self, stage: str, verb: str) -> None:
        if STAGES.index(self._stage) < STAGES.index(stage):
            maker = _MADE_BY[stage]
            raise StageError(f"{verb}() comes after {maker}(); this pipeline is at stage {self._stage!r}. "
                             f"Call pipe.{maker}() first.")

    def _reset_to(self, stage: str) -> None:
        """Forget everything later stages built: it was made from what is being redone."""
        self._stage = stage
        later = STAGES[STAGES.index(stage) + 1:]
        for attribute, made_at in (("_split", "split"), ("split_", "split"), ("preprocessor_", "preprocessed"),
                                   ("_train", "preprocessed"), ("_val", "preprocessed"), ("runs_", "trained")):
            if made_at in later and hasattr(self, attribute):
                delattr(self, attribute)

    def _require_split(self, why: str) -> None:
        """The split-first guard of a verb that learns from rows: LeakageError before split(); `why` says
        what the verb would learn from the validation and test rows."""
        if STAGES.index(self._stage) < STAGES.index("split"):
            raise LeakageError(f"{why} This pipeline is at stage {self._stage!r}: call "
                               f"{'pipe.clean(), then ' if self._stage == 'raw' else ''}pipe.split() first.")

    def _check_columns(self, frame: pd.DataFrame) -> None:
        inputs.require_column(frame.columns, self.target, "target")
        for name, role in ((self.time_col, "time_col"), (self.group_col, "group_col")):
            if name is None:
                continue
            inputs.require_column(frame.columns, name, role)
            if name == self.target:
                raise ConfigError(f"{role}={name!r} is also the target; name a different column.")
        if self.time_col is not None and self.time_col == self.group_col:
            raise ConfigError(f"time_col and group_col are both {self.time_col!r}; they must differ.")

    @property
    def ledger(self) -> Ledger:
        """The work folder's ledger, opened once and then held: if its file is deleted, emptied or replaced
        while this pipeline lives, its verbs raise DataError instead of starting an empty test lock."""
        held = self.__dict__.get("_ledger")
        if held is None or held.path.parent != Path(self.workdir):
            held = self._ledger = Ledger(self.workdir)
        return held

    # ---- verbs -----------------------------------------------------------------------------

    def clean(self, *, missing: dict | None = None, na_markers="auto", duplicates: str = "auto",
              keep_identifiers=()) -> CleaningReport:
        """Drop rows without a target and duplicate rows that chance does not explain, repair corrupt
        cells, plan missing values.

        `missing` overrides the strategy of any column: {"age": "median"}; strategies are
        drop_rows, median, mode, sentinel and drop_column (see nbtrain.data.clean). `na_markers`:
        "auto" (NA_MARKERS; "none", "na" and "n/a" stay levels in columns of labels), a list of
        markers for every column, or {column: [markers]}. `duplicates`: "auto" (drop exact
        duplicates only when they are unlikely by chance: nbtrain.data.duplicates), "drop" or "keep".
        Identifier-like columns (row numbers, case ids: nbtrain.data.identifiers) are left out, with
        the reason in the report; `keep_identifiers=[...]` keeps them as features.
        """
        self._frame, positions, report = clean_frame(
            self._data, self._row_hash, target=self.target, features=self._features,
            required=tuple(c for c in (self.time_col, self.group_col) if c is not None),
            ordinal=self.ordinal, missing=missing, na_markers=na_markers, duplicates=duplicates,
            keep_identifiers=tuple(keep_identifiers))
        self._clean_row_hash = self._row_hash[positions]
        self._clean_feature_hash = self._feature_hash[positions]
        self._clean_lock_hash = self._hash_cleaned_rows()
        self.cleaning_ = report
        # predict() repairs new rows with the same markers (each column's own: ColumnPlan.na_markers)
        self._na_markers = NA_MARKERS if isinstance(na_markers, (str, dict)) else tuple(na_markers)
        self._reset_to("cleaned")
        return report

    def _hash_cleaned_rows(self) -> np.ndarray:
        """The test lock's keys of the cleaned rows (nbtrain.data.fingerprint.content_keys): over the columns
        cleaning kept (so an added constant or empty column changes nothing) with the time and group columns,
        and never the target: a row is known by its inputs, so relabelling the classes keeps it known."""
        return fingerprint.content_keys(self._frame, [c for c in self._frame.columns if c != self.target])

    @property
    def _lock_hash(self) -> np.ndarray:
        """One row of test-lock keys per cleaned row. Kinds that clean rows their own way (images, text, time
        series, interactions) key them by their content hashes."""
        return self.__dict__.get("_clean_lock_hash", self._clean_row_hash)

    def _test_keys(self) -> np.ndarray:
        """The test lock's keys of this split's test rows."""
        return self._lock_hash[self._split.positions["test"]]

    def split(self, ratios="auto", seed=None, *, method="auto", random_split_reason=None):
        """Split the cleaned rows into train, validation and test (see nbtrain.data.split)."""
        self._require("cleaned", "split")
        seed = self.seed if seed is None else seed
        ratios = splitting.check_ratios(ratios, len(self._frame))
        check_classes(self._frame[self.target], self.task)
        method = splitting.choose_method(method, task=self.task, time_col=self.time_col,
                                         group_col=self.group_col, random_split_reason=random_split_reason)
        positions = self._assign(method, ratios, np.random.default_rng(seed))
        reason = random_split_reason if self.time_col is not None and method != "time" else None
        self._split = splitting.Split(method, ratios, seed, positions, reason)
        return self._record_split(self._split_report, str(self.target))

    def _record_split(self, make_report, target: str):
        """Identify the split by its rows, record it in the ledger with the dataset, warn about test rows
        evaluated before, and move to stage "split". `make_report(split_id)` builds the SplitReport."""
        split, positions = self._split, self._split.positions
        split_id = fingerprint.rows_fingerprint({p: self._clean_row_hash[pos] for p, pos in positions.items()})
        report = make_report(split_id)
        ledger = self.ledger
        if ledger.read_only is None:
            ledger.record_dataset(self.fingerprint, target=target, n_rows=len(self._data),
                                  columns=[str(c) for c in self._data.columns])
            ledger.record_split(split_id, dataset_id=self.fingerprint, method=split.method, ratios=split.ratios,
                                seed=split.seed, sizes=report.sizes, random_split_reason=split.random_split_reason)
        else:
            report.warnings.append(f"The ledger {str(ledger.path)!r} can only be read ({ledger.read_only}): this split "
                                   "is not recorded in it. pipe.runs and pipe.status() read it; fit() and test() "
                                   "need a writable workdir=.")
        evaluated = ledger.evaluated_row_hashes()
        report.warnings += leakage.earlier_test_rows(fingerprint.known_key(self._lock_hash, evaluated), positions,
                                                     evaluated)
        self.split_ = report
        self._reset_to("split")
        return report

    def _assign(self, method: str, ratios, rng: np.random.Generator) -> dict:
        if method == "time":
            return splitting.split_by_time(self._frame[self.time_col], ratios)
        if method == "group":
            return splitting.split_by_group(self._frame[self.group_col], ratios, rng)
        if method == "stratified":
            return splitting.split_stratified(self._frame[self.target], ratios, rng)
        return splitting.split_random(len(self._frame), ratios, rng)

    def _split_report(self, split_id: str) -> splitting.SplitReport:
        split, frame = self._split, self._frame
        report = splitting.SplitReport(method=split.method, ratios=split.ratios, seed=split.seed,
                                       split_id=split_id, sizes=split.sizes(),
                                       random_split_reason=split.random_split_reason,
                                       **splitting.describe_target(frame[self.target], split.positions, self.task))
        if self.time_col is not None:
            report.time_ranges = splitting.describe_times(frame[self.time_col], split.positions)
        if self.group_col is not None:
            report.groups = {p: int(frame[self.group_col].iloc[pos].nunique()) for p, pos in split.positions.items()}
        report.warnings += self._split_warnings(report)
        return report

    def _split_warnings(self, report: splitting.SplitReport) -> list[str]:
        positions, plans = self._split.positions, self.cleaning_.plans
        warnings = []
        small = [f"{p} has {n} rows" for p, n in report.sizes.items() if p != "train" and n < splitting.FEW_ROWS]
        if small:
            warnings.append(f"Small evaluation splits ({', '.join(small)}): their scores will be noisy. With this "
                            "little data, compare models by cross-validation on train + validation.")
        if report.class_balance is not None:
            absent = [(c, p) for p in report.class_balance for c in report.class_balance.index
                      if report.class_balance.loc[c, p] == 0]
            warnings += [f"Class {c!r} has no rows in {p}: too few rows to reach every split." for c, p in absent]
        if self._split.method != "time":
            warnings += [w for w in self.cleaning_.warnings if "time_col" in w]
        kinds = {name: plan.kind for name, plan in plans.items() if name in self._frame.columns}
        warnings += leakage.identical_feature_rows(self._clean_feature_hash, positions, self._frame, list(kinds))
        warnings += leakage.single_feature_predictors(self._frame, kinds, self.target, self.task, positions,
                                                      self._split.seed)
        return warnings

    def preprocess(self, *, scaler="auto", onehot_max_levels: int = 20) -> PreprocessReport:
        """Fit imputers, scalers and encoders on the train split; apply them to train and validation.

        `scaler`: "auto" (StandardScaler for numbers and dates), "standard", "minmax", "none", or an
        unfitted scikit-learn transformer. See nbtrain.data.preprocess for the per-column rules.
        """
        self._require_split("preprocess() fits imputers, scalers and encoders; before split() they would learn "
                            "from the validation and test rows too, and every later score would be optimistic.")
        plans = {n: p for n, p in self.cleaning_.plans.items() if n in self._frame.columns}
        pre = TabularPreprocessor(plans, self.ordinal, scaler=scaler, onehot_max_levels=onehot_max_levels)
        train = self._rows("train")
        self._train = self._arrays(train, *pre.fit_transform(train))
        self.preprocessor_ = pre
        val = self._rows("val")
        self._val = self._arrays(val, *pre.transform(val))
        self._reset_to("preprocessed")
        return PreprocessReport(train_rows=len(self._train), val_rows=len(self._val), n_inputs=self.n_inputs,
                                cardinalities=dict(pre.cardinalities_), treatments=describe(pre),
                                warnings=list(pre.notes_))

    def _rows(self, part: str) -> pd.DataFrame:
        return self._frame.iloc[self._split.positions[part]]

    def _arrays(self, rows: pd.DataFrame, X: np.ndarray, codes: np.ndarray) -> Arrays:
        return Arrays(X=X, codes=codes, y=self._encode_target(rows[self.target]), index=rows.index)

    def _encode_target(self, values: pd.Series) -> np.ndarray:
        if self.task == "regression":
            return values.to_numpy(dtype=np.float32)
        # -1 for a class train does not have (pd.Categorical with other categories warns, and will raise)
        return pd.Index(self.classes).get_indexer(values).astype(np.int64)

    def fit(self, model=None, *, cell_text: str | None = None, view="auto", auto_fix: bool = False,
            doctor: bool = True, **hyperparameters) -> Run:
        """Train on the train split, select on the validation split; returns the Run.

        Keywords and their defaults are documented in nbtrain.training.fit. The model keeps the
        best epoch's weights whatever ended the run (patience, the epoch limit, Kernel > Interrupt,
        request_stop(), a non-finite loss, an error). The run is logged in the ledger (with `cell_text`,
        the %%train cell that started it) and in TensorBoard under <workdir>/runs/<name>. `view`: "auto"
        (live widgets with a Stop button in a notebook, a line per epoch elsewhere), "text", or None.

        Interrupt (SIGINT): the first one ends the run after the current step and fit returns the Run
        (stop_reason "interrupted"); a second one raises KeyboardInterrupt at once. An exception (a full
        disk, out of memory, a failing callback) is raised after the run is logged with stop_reason
        "error" and run.error; either way the best weights are restored and the ledger row written.

        The training doctor (nbtrain.doctor) watches the run unless `doctor=False`: its findings are in
        `run.diagnoses`, most important first, live in the run state's `diagnoses` while it trains, and
        in the ledger. `auto_fix=True` retries once with the fix of the top finding when it has one
        (lr_too_high: a tenth of the lr, ...); both runs are recorded and the retry is returned.

        `tracker="mlflow"` (and/or `tracking_uri=...`), `"wandb"` or `["mlflow", "wandb"]` also logs the run
        there: params, per-epoch metrics, the diagnoses, the best checkpoint, the run as a bundle and its
        evidence (nbtrain.tracking says where). How the pieces are wired around the loop: nbtrain.fit_wiring.
        """
        self._require("preprocessed", "fit")
        return fit_wiring.fit(self, model, cell_text=cell_text, view=view, auto_fix=auto_fix, doctor=doctor,
                              **hyperparameters)

    def export_run(self, folder, model=None, **hyperparameters) -> Path:
        """Write the run fit(model, **hyperparameters) would train as a folder for torchrun on any machines: the
        run spec (train and validation only), a train.py and a README with the commands (nbtrain.distributed)."""
        self._require("preprocessed", "export_run")
        from nbtrain.distributed.portable import export_run
        return export_run(self._fit_data(), folder, model, {**self._fit_defaults(), **hyperparameters})

    def import_run(self, folder) -> Run:
        """Bring back a run trained from export_run's folder: checked against this dataset and split, copied into
        the work folder, logged like any run (pipe.runs, pipe.test())."""
        self._require("preprocessed", "import_run")
        from nbtrain.distributed.portable import import_run
        data = self._fit_data()
        run = import_run(data, folder, self.workdir)
        fit_wiring.end_run(self, run, None, data=data, threshold=check_rule(run.config.get("threshold", 0.5), self.task))
        return run

    async def fit_async(self, model=None, **options) -> Run:
        """`run = await pipe.fit_async(...)`: fit() on a worker thread while the notebook's kernel stays
        free to read the view's Stop button (ipykernel 7.4+ reads clicks while a cell awaits; %%train
        does this by itself there). Kernel > Interrupt stops it like fit(): see nbtrain.training.worker."""
        from nbtrain.training.worker import run_on_worker
        return await run_on_worker(lambda: self.fit(model, **options), stop=self.request_stop)

    def sweep(self, space, trials: int | None = None, method: str = "auto", *, seed: int | None = None, model=None,
              view="auto", study=None, pruner=None, **fit_keywords):
        """Search hyperparameters; every trial is an ordinary fit() run tagged with the sweep (nbtrain.sweep).

        `space`: {name: nt.loguniform(low, high) | (low, high) | [values] | fixed value} (nbtrain.sweep_space);
        names that are fit keywords go to fit, the others build the model: the tabular MLP's parameters
        (dropout, hidden) when `model` is None, else `model(**values)` for a function. `trials`: how many
        (default 10; a grid: all its points). `method`: "random", "grid", "optuna" (pruning on the
        per-epoch validation metric; `study=`/`pruner=` are Optuna's) or "auto" (a grid when the space only
        lists values, else random). `seed` (default the pipeline's) fixes the trials' values and their
        training. Other keywords go to every fit. Stop or Kernel > Interrupt
        ends the sweep: finished trials are kept. Returns a SweepReport: the trials best first, the best
        trial's %%train cell, a plot, and what the sweep cost the validation split (nbtrain.doctor.budget).
        """
        from nbtrain.sweep import sweep
        return sweep(self, space, trials, method, seed=seed, model=model, view=view, study=study, pruner=pruner,
                     **fit_keywords)

    def _fit_data(self) -> training.FitData:
        """What training sees of this pipeline: the train and validation splits, never the test split."""
        return training.FitData(train=self._train, val=self._val, task=self.task, n_inputs=self.n_inputs,
                                n_outputs=self.n_outputs, cardinalities=self.cardinalities,
                                workdir=self.workdir, seed=self.seed, kind=self.kind,
                                default_model=self._default_model(), dataset_id=self.fingerprint,
                                split_id=self.split_id, taken_names=frozenset(self.ledger.run_names()))

    def _default_model(self):
        """A builder of the model fit() trains when given none; None: the tabular MLP (nbtrain.training.fit)."""
        return None

    def _fit_defaults(self) -> dict:
        """fit() keywords this kind sets differently from nbtrain.training.fit's defaults (text: a
        transformer-sized lr with warmup and linear decay); the user's own keywords always win."""
        return {}

    def baseline(self, *, library: str = "sklearn", tune: bool = True, threshold=0.5) -> Run:
        """Gradient-boosted trees on the same split, scored on validation like every run.

        `library`: "sklearn" (HistGradientBoosting, the default), "lightgbm" or "xgboost". `tune`: choose
        the rounds and tree shape by cross-validation on the train rows (nbtrain.models.baseline says how);
        False fits the library's defaults. `threshold`: how a classifier's labels are read from its
        probabilities, as in fit (nbtrain.training.decision).
        """
        self._require_split("baseline() fits a model; before split() it would learn from the validation and "
                            "test rows too.")
        if self.kind != "tabular":
            raise ConfigError(f"baseline() is for tabular data; this pipeline's kind is {self.kind!r}.")
        threshold = check_rule(threshold, self.task)
        kinds = {n: p.kind for n, p in self.cleaning_.plans.items() if n in self._frame.columns}
        train, val = self._rows("train"), self._rows("val")
        run = fit_baseline(TreeBaseline(self.task, kinds, library=library, seed=self.seed, tune=tune),
                           train, self._encode_target(train[self.target]), val,
                           self._encode_target(val[self.target]), task=self.task, n_classes=self.n_outputs,
                           name=f"baseline-{library}-{self.split_id[:6]}", threshold=threshold,
                           classes=self.classes if self.task != "regression" else None)
        self._log_run(run, None)
        return run

    def _runs(self) -> list:
        return getattr(self, "runs_", [])

    @property
    def last_run(self) -> Run:
        """The latest Run of this session (fit or baseline)."""
        if not self._runs():
            raise StageError("last_run comes after fit() or baseline(); no run yet. Call pipe.fit() first.")
        return self._runs()[-1]

    def _log_run(self, run: Run, cell_text: str | None) -> None:
        self.runs_ = [r for r in self._runs() if r.name != run.name] + [run]
        self.ledger.record_run(run.record(self.fingerprint, self.split_id, cell_text), run.history.to_dict("records"))

    @property
    def runs(self) -> pd.DataFrame:
        """Every run of this dataset and split (the baseline included), read from the ledger, so it
        survives a kernel restart; best first by the task's selection metric, the one test() picks by
        (nbtrain.training.runs: validation log loss, RMSE or NDCG@10; ties: the run recorded first). A run
        whose process died before it ended (killed, a kernel restart) is listed with stop_reason
        "incomplete" (continue it with pipe.fit(resume="<workdir>/runs/<name>")), one training in another
        process as "running"."""
        self._require("split", "runs")
        records = self.ledger.runs(self.fingerprint, self.split_id)
        unfinished = folders.unfinished(self.workdir, self.fingerprint, self.split_id, {r["name"] for r in records})
        held = tuple(r.name for r in self._runs() if r.model is not None)
        return runs_table([*records, *unfinished], self.task, held)

    def test(self, run=None, reuse_reason: str | None = None) -> TestReport:
        """Evaluate a run on the test split, once: the final, unbiased estimate.

        `run`: a Run or a run's name (default: the best run of this session by validation log loss for
        classification, RMSE for regression, NDCG@10 for ranking: `test_pick` in pipe.runs). A second
        evaluation of the same test rows raises TestSetLockedError, from any pipeline or process, unless
        `reuse_reason` says why; it is recorded, and the report says the estimate is optimistic. The
        evaluation is recorded as started first and completed when the report is returned: one cut short
        by a killed kernel shows no number and can be released with release_unfinished_test().
        """
        if not self._runs():
            raise StageError(f"test() comes after fit() or baseline(); this pipeline is at stage {self._stage!r} "
                             "and has no run to evaluate. Call pipe.fit() first.")
        chosen = choose_run(self._runs(), run, self.task)
        keys = self._test_keys()
        seen_here = self._tested_here(keys)
        if seen_here and not (reuse_reason or "").strip():
            raise TestSetLockedError(locked_message(*seen_here, len(keys), 1))
        ledger = self.ledger
        evaluation = ledger.record_test_evaluation(dataset_id=self.fingerprint, split_id=self.split_id,
                                                   row_hashes=keys, run_name=chosen.name, reuse_reason=reuse_reason)
        try:
            predicted, y, index = self._test_outputs(chosen, self._rows("test"))
            report = self._test_report(chosen, predicted, y, index)
            finding = compare_test_with_validation(
                report.headline, HIGHER_IS_BETTER[report.headline], report.metrics[report.headline],
                report.val_metrics[report.headline], report.interval,
                compared=len(ledger.runs(self.fingerprint, self.split_id)), over_time=self._over_time())
            report.diagnoses += [finding] if finding else []
            evaluation = ledger.complete_test_evaluation(evaluation.id)
        except BaseException:
            with contextlib.suppress(DataError):  # the first error is the one to show; the record then
                ledger.cancel_test_evaluation(evaluation.id)  # stays unfinished and status() says so
            raise
        self._own_evaluations = [*getattr(self, "_own_evaluations", []), (np.unique(keys), evaluation)]
        report.reused, report.reuse_reason = evaluation.reused or bool(seen_here), evaluation.reuse_reason
        self._stage = "tested"
        return report

    def _tested_here(self, keys: np.ndarray) -> tuple | None:
        """(evaluation, rows shared) of this pipeline's own earliest evaluation of some of these rows, or None.
        The pipeline remembers its evaluations, so a ledger deleted or replaced behind its back (or another
        workdir=) cannot reopen its test split in this session."""
        for seen, evaluation in getattr(self, "_own_evaluations", []):
            shared = int(fingerprint.any_known(keys, seen).sum())
            if shared:
                return evaluation, shared
        return None

    def release_unfinished_test(self, *, other_hosts: bool = False) -> list:
        """Give back the test rows of an evaluation left unfinished: a kernel killed or restarted inside
        test() showed no number, but its record still holds the rows. Released only once the process that
        started it has ended (told by its pid, host and start time); one started on another host, whose
        processes cannot be seen from here, only with `other_hosts=True`. Returns the released evaluations
        (nbtrain.ledger.TestEvaluation); warns about those kept and why."""
        self._require("split", "release_unfinished_test")
        keys = self._test_keys()
        ledger = self.ledger
        released = ledger.release_unfinished(keys, other_hosts=other_hosts)
        for kept in ledger.test_evaluations(rows=keys, unfinished=True):
            warnings.warn(f"Kept an unfinished evaluation: {describe_unfinished(kept)}", NbtrainWarning, stacklevel=2)
        return released

    def _test_outputs(self, run: Run, rows: pd.DataFrame) -> tuple:
        """(predictions, targets, index labels) of the test rows; kinds whose units are not rows (forecast
        windows, ranked queries) override it."""
        return self._predict(run, rows), self._encode_target(rows[self.target]), rows.index

    def _test_report(self, run: Run, predicted, y, index) -> TestReport:
        """The TestReport of _test_outputs; a kind that does not score row by row (full ranking) overrides it."""
        return test_report(run, predicted, y, index, self.task, self.classes if self.task != "regression" else None,
                           seed=self.seed)

    def _over_time(self) -> bool:
        """Does the test split come later in time than validation (a gap may then be a shift in time)?"""
        return self._split.method == "time"

    def _sealed_feature_hashes(self) -> np.ndarray:
        """Feature hashes of the test rows no evaluation has opened yet, less those a train or validation
        row shares (predicting on those tells nothing new): what predict() refuses for kinds whose rows are
        known by one feature (an image, a text). Tables conform new rows first (nbtrain.predictor)."""
        positions = self._split.positions
        opened = fingerprint.any_known(self._lock_hash[positions["test"]], self.ledger.evaluated_row_hashes())
        seen = self._clean_feature_hash[np.concatenate([positions["train"], positions["val"]])]
        return np.setdiff1d(self._clean_feature_hash[positions["test"][~opened]], seen)

    def _predict(self, run: Run, rows: pd.DataFrame) -> np.ndarray:
        return predict_rows(run.model, getattr(self, "preprocessor_", None), rows, self.task,
                            run.config["target_scale"])

    # ---- using the model (nbtrain.predictor, nbtrain.bundle, nbtrain.export) ----------------

    def predict(self, new_data, run=None, *, strict: bool = False) -> pd.DataFrame:
        """A run's predictions for new rows, indexed like them: `prediction`, and for classification the
        class probabilities (the columns of TestReport.predictions). The rows get the training repairs
        and the fitted preprocessing first; `new_data` is never modified.

        `run`: a Run or a run's name; default the run test() evaluated, else the one test() would pick.
        Rows of the test split are refused until test() has evaluated them (LeakageError). Unseen labels,
        extra columns and gaps where training had none are handled and reported with a warning;
        `strict=True` makes them errors (nbtrain.data.newdata has the rules).
        """
        return from_pipeline(self, run).predict(new_data, strict=strict)

    def save(self, path, run=None) -> Path:
        """Write a run (default as for predict) and its preprocessing as one bundle file, which
        nbtrain.load(path) reads in any process without the training data (format: nbtrain.bundle)."""
        return from_pipeline(self, run, verb="save", evidence=True).save(path)

    def model_card(self, run=None, *, test=None):
        """A model card in Markdown for a run (default: the run `test` evaluated, else as for predict): its
        metrics, the evidence behind them read from the ledger (how the split was made, preprocessing on
        train rows only, runs compared on validation, whether the test score was the first look) and the
        doctor's findings; `test`: the run's TestReport, to show its test scores. `card.save("README.md")`
        writes it (nbtrain.model_card)."""
        return pipeline_card(self, run, test=test)

    def export(self, path, format: str = "onnx", run=None, *, rtol: float = 1e-4, atol: float = 1e-5):
        """Write a network run for serving without nbtrain: "onnx", "torch.export" or "torchscript". The
        file is checked against the original on the validation rows; returns an ExportReport with the
        largest difference (nbtrain.export). `run`: default the network run predict would use."""
        predictor = from_pipeline(self, run, verb="export", network=True)
        return predictor.export(path, format, sample=self._val, rtol=rtol, atol=atol)

    def status(self) -> StatusReport:
        """Where this pipeline stands: stages done, guards, split sizes, runs, the test lock."""
        report = StatusReport(stage=self._stage, task=self.task, target=self.target, dataset=self.fingerprint)
        report.stages = [s for s in STAGES if STAGES.index(s) <= STAGES.index(self._stage)]
        if hasattr(self, "split_"):
            report.split = {"method": self.split_.method, "id": self.split_id, **self.split_.sizes}
            if self.split_.random_split_reason:
                report.warnings.append(f"Random split of time-ordered data, accepted because: "
                                       f"{self.split_.random_split_reason!r}.")
        report.guards = {"split before fitting": "enforced (LeakageError)",
                         "time order": f"split by {self.time_col!r}" if self.time_col else "no time_col",
                         "groups": f"whole groups of {self.group_col!r} per split" if self.group_col else "no group_col"}
        report.runs = [r.name for r in self._runs()]
        ledger = self.ledger
        if hasattr(self, "split_"):  # the evaluations of these test rows, whatever dataset id they were under
            keys = self._test_keys()
            evaluations = ledger.test_evaluations(rows=keys)
            report.unfinished = [describe_unfinished(e) for e in ledger.test_evaluations(rows=keys, unfinished=True)]
        else:
            evaluations = ledger.test_evaluations(self.fingerprint)
        report.test_evaluations = [(e.evaluated_at, e.run_name, e.reuse_reason) for e in evaluations]
        if ledger.read_only is not None:
            report.warnings.append(f"The ledger {str(ledger.path)!r} can only be read ({ledger.read_only}).")
        return report

    def diagnose(self, run=None) -> DoctorReport:
        """The training doctor's findings on a run, most important first (what %nbtrain doctor shows).

        `run`: a Run, or a run's name (also one from before a kernel restart: its diagnoses are in the
        ledger); default the latest network run. Validation overuse is judged again now, since more
        runs may share the validation split than when the run was trained.
        """
        self._require("split", "diagnose")
        records = self.ledger.runs(self.fingerprint, self.split_id)
        networks = [r for r in self._runs() if r.kind == "nn"]
        sizes = (self.task, len(records), self.split_.sizes["val"])
        if isinstance(run, Run) or (run is None and networks) or any(r.name == run for r in self._runs()):
            chosen = run if isinstance(run, Run) else choose_run(self._runs(), run, self.task) if run else networks[-1]
            return doctor_report(chosen.name, chosen.diagnoses, chosen.best_metrics, *sizes, notes=chosen.notes)
        stored = [r for r in records if (r["name"] == run if run is not None else r["kind"] == "nn")]
        if not stored:
            named = f" named {run!r}" if run is not None else ""
            raise StageError(f"diagnose() comes after fit(): this pipeline has no run{named} on this split. "
                             "Call pipe.fit() first.")
        return doctor_report(stored[-1]["name"], stored[-1]["diagnoses"], stored[-1]["best_metrics"], *sizes)

    def lr_find(self, model=None, **options) -> LRFinderReport:
        """Sweep the learning rate exponentially on a copy of the model, on train rows only, and
        suggest one (the rule is in nbtrain.doctor.lr_finder). The model you pass, this pipeline and
        its runs are left untouched. Options: loss, optimizer, weight_decay, batch_size, start_lr,
        end_lr, steps, device, seed.
        """
        self._require("preprocessed", "lr_find")
        options = {**{k: v for k, v in self._fit_defaults().items() if k in LR_FIND_OPTIONS}, **options}
        data = self._fit_data()
        return lr_find(data, model, **options)

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the run in progress to stop after its current step (its best weights are kept); safe from
        another thread (a UI's Stop button). Kernel > Interrupt does the same with reason "interrupted"."""
        active = getattr(self, "_active", None)
        if active is not None:
            active.request_stop(reason)
        sweep = getattr(self, "_sweep", None)  # a sweep ends with its trial: no further trial starts
        if sweep is not None:
            sweep.request_stop(reason)

    # ---- what the model sees ---------------------------------------------------------------

    @property
    def classes(self) -> list:
        """Class labels in the order of the model's outputs (classification only)."""
        if self.task == "regression":
            raise ConfigError("classes exist only for classification; this task is 'regression'.")
        frame = getattr(self, "_frame", self._data)
        return sorted(frame[self.target].dropna().unique().tolist(), key=lambda v: (str(type(v)), v))

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "multiclass" else 1

    @property
    def n_inputs(self) -> int:
        """Width of the float feature matrix (high-cardinality columns come as `codes`, see cardinalities)."""
        self._require("preprocessed", "n_inputs")
        return len(self.preprocessor_.feature_names_)

    @property
    def feature_names(self) -> list:
        """Names of the float inputs ([] for kinds without feature columns: images, text)."""
        self._require("preprocessed", "feature_names")
        return list(getattr(self.preprocessor_, "feature_names_", []))

    @property
    def cardinalities(self) -> dict:
        """Embedding columns and their number of codes (code 0: a label not seen in train)."""
        self._require("preprocessed", "cardinalities")
        return dict(getattr(self.preprocessor_, "cardinalities_", {}))

    @property
    def train(self) -> Arrays:
        self._require("preprocessed", "train")
        return self._train

    @property
    def val(self) -> Arrays:
        self._require("preprocessed", "val")
        return self._val

    @property
    def split_id(self) -> str:
        self._require("split", "split_id")
        return self.split_.split_id

    def __repr__(self) -> str:
        rows = len(getattr(self, "_frame", self._data))
        return (f"Pipeline(target={self.target!r}, kind={self.kind!r}, task={self.task!r}, rows={rows}, "
                f"stage={self._stage!r})")


@dataclass(repr=False)
class StatusReport(Report):
    title = "Pipeline status"
    stage: str = "raw"
    task: str = ""
    target: object = None
    dataset: str = ""
    stages: list = field(default_factory=list)
    split: dict = field(default_factory=dict)
    guards: dict = field(default_factory=dict)
    runs: list = field(default_factory=list)
    test_evaluations: list = field(default_factory=list)  # (when, run, reuse reason)
    unfinished: list = field(default_factory=list)  # evaluations of the test rows that never finished, in words
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        lines = [f"Target {self.target!r} ({self.task}); dataset {self.dataset[:12]}; stage {self.stage!r} "
                 f"(done: {' -> '.join(self.stages)})."]
        if self.split:
            lines.append("Split: " + ", ".join(f"{k} {v}" for k, v in self.split.items()) + ".")
        lines.append(f"Runs in this session: {', '.join(self.runs) or 'none'}.")
        if self.test_evaluations:
            lines += [f"Test split evaluated at {when:%Y-%m-%d %H:%M UTC} (run {run!r})"
                      + (f", reused because {why!r}" if why else "") for when, run, why in self.test_evaluations]
        elif not self.unfinished:
            lines.append("Test split: sealed, never evaluated.")
        lines += [f"Test split: unfinished evaluation. {said}" for said in self.unfinished]
        return lines

    def _sections(self):
        return [("Guards", [f"{k}: {v}" for k, v in self.guards.items()])]


def _resolve_kind(kind: str, data=None, target=None, task="auto") -> str:
    """The data kind: as given, or read from the data ("auto": nbtrain.kinds.infer_kind says why)."""
    if kind == "auto":
        return infer_kind(data, target)
    if kind in KINDS:
        return kind
    raise ConfigError(f"kind={kind!r} is not a data kind; use 'auto' or one of {list(KINDS)}.")


def _pipeline_class(kind: str, task) -> type:
    return pipeline_class(kind, task) or Pipeline
