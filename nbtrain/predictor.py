"""`Predictor`: one trained run, ready for new rows, with everything it needs and nothing else.

`Pipeline.predict`, `Pipeline.save`, `Pipeline.export` and `nbtrain.load` all go through a
Predictor, so a model predicts the same way in the pipeline that trained it and in a fresh process
that loaded it from a bundle (nbtrain.bundle). It holds the feature schema (nbtrain.data.newdata),
the fitted preprocessing, the model with its best weights, the task and class labels, the target
scale, and the fingerprints of test rows that are still sealed.

Predictions come in the form of `TestReport.predictions`: a `prediction` column, and for
classification the class probabilities (`probability_<class>`; binary: the positive class's only).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

import nbtrain
from nbtrain import bundle_safety
from nbtrain.bundle import (check_target, model_spec, package_versions, read_sealed, rebuild_model, sealed_bytes,
                            weights_bytes, write_bundle)
from nbtrain.data.clean import NA_MARKERS
from nbtrain.data import fingerprint
from nbtrain.data.newdata import Schema, as_frame, build_schema, conform
from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainWarning, StageError
from nbtrain.evidence import collect as collect_evidence, describe as describe_evidence
from nbtrain.model_card import ModelCard, bundle_name, render
from nbtrain.report import Report
from nbtrain.training.decision import from_config
from nbtrain.training.evaluation import predict_rows
from nbtrain.training.run import Run
from nbtrain.training.runs import prediction_frame, choose_run

_EXAMPLES = 5
# Packages whose versions a bundle records: the ones its contents were made with.


@dataclass(repr=False)
class Predictor(Report):
    """A trained run and its preprocessing: `predict(new_data)` returns a DataFrame indexed like the input."""

    title = "nbtrain model"
    kind = "tabular"                            # the data kind (a class attribute: nbtrain.kinds.text.bundle)
    schema: Schema = None
    task: str = ""
    target: object = None
    classes: list | None = None
    target_scale: tuple = (0.0, 1.0)
    run: dict = field(default_factory=dict)     # name, kind, model, best_epoch, val_metrics, stop_reason
    model: object = None                        # a torch.nn.Module, or the tree baseline
    preprocessor: object = None                 # the fitted TabularPreprocessor (networks only)
    sealed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    info: dict = field(default_factory=dict)    # dataset, split, source, tested, created_at, packages
    evidence: dict | None = None                # the record behind the run's numbers (nbtrain.evidence)
    warnings: list = field(default_factory=list)

    @property
    def is_network(self) -> bool:
        return self.run.get("kind") != "baseline"

    def predict(self, new_data, *, strict: bool = False) -> pd.DataFrame:
        """Predictions for new rows (a DataFrame, a dict or a list of row dicts), indexed like them.

        The rows get the training repairs and preprocessing first (nbtrain.data.newdata says how).
        Unseen labels, extra columns and gaps where training had none are handled and reported
        with a warning; `strict=True` makes them errors instead. The input is never modified.
        """
        frame = as_frame(new_data)
        conformed, notes = conform(frame, self.schema, strict=strict)
        self._refuse_sealed(conformed)
        if notes:
            warnings.warn(" ".join(notes), NbtrainWarning, stacklevel=user_stacklevel())
        return self._prediction_frame(self._outputs(conformed), frame)

    def _prediction_frame(self, outputs: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
        """predict()'s frame of the outputs for `frame`'s rows (ranking's: scores and ranks, ranking_bundle)."""
        return prediction_frame(outputs, frame.index, self.task, self.classes,
                                self.run.get("decision"))  # the run's threshold (nbtrain.training.decision)

    def transform(self, new_data) -> tuple[np.ndarray, np.ndarray]:
        """The network's inputs for new rows: float32 X (rows, n_inputs) and int64 embedding codes
        (rows, embedding columns; 0 = unseen). What an exported model (see export) takes."""
        self._require_network("transform")
        conformed, _ = conform(as_frame(new_data), self.schema)
        self._refuse_sealed(conformed)
        return self.preprocessor.transform(conformed)

    def export(self, path, format: str = "onnx", *, sample=None, rtol: float = 1e-4, atol: float = 1e-5):
        """Write the network for serving without nbtrain and check it (see nbtrain.export).

        `sample`: Arrays (or an (X, codes) pair) to compare outputs on; default 256 synthetic rows.
        """
        from nbtrain.export import export_model
        self._require_network("export")
        return export_model(self, path, format, sample=sample, rtol=rtol, atol=atol)

    def save(self, path):
        """Write this model as one bundle file (see nbtrain.bundle; each kind's bundle module says what its
        bundle holds); returns its path."""
        check_target(path)  # before the work: a folder given by mistake is said at once
        return write_bundle(path, self._bundle_manifest(), self._bundle_members())

    def _bundle_manifest(self) -> dict:
        """The bundle manifest's fields (nbtrain.bundle adds the format, version and checksums)."""
        info = {k: v for k, v in self.info.items() if k not in ("source", "path")}
        info["packages"] = package_versions(self.model)
        return {"task": self.task, "target": self.target, "classes": self.classes,
                "target_scale": list(self.target_scale), "run": self.run,
                "model": model_spec(self.model) if self.is_network else None,
                "schema": self.schema.to_dict(), "info": info, "evidence": self.evidence}

    def _bundle_members(self) -> dict[str, bytes]:
        """The bundle's files by name: the sealed keys, and the network's weights and preprocessing or the
        trees (bundle_safety.check_table_members reads them back). A kind keeps its own."""
        members = {"sealed.npy": sealed_bytes(self.sealed)}
        if self.is_network:
            members["weights.pt"] = weights_bytes(self.model)
            members["preprocessor.skops"] = bundle_safety.dump(self.preprocessor, "preprocessing")
        else:
            members["baseline.skops"] = bundle_safety.dump(bundle_safety.plain_trees(self.model), "tree baseline")
        return members

    def model_card(self, *, test=None):
        """This model's card in Markdown: its metrics, the evidence behind them and the doctor's findings
        (nbtrain.model_card). `test`: the TestReport of its run, to show the test scores too."""
        return render(run=self.run, target=self.target, task=self.task, kind=self.kind, classes=self.classes,
                      evidence=self.evidence, test=test,
                      bundle=Path(self.info["path"]).name if self.info.get("path") else "model.nbtrain")

    def _outputs(self, conformed: pd.DataFrame) -> np.ndarray:
        if conformed.empty:
            return np.zeros((0, len(self.classes)) if self.task == "multiclass" else (0,))
        return predict_rows(self.model, self.preprocessor, conformed, self.task, self.target_scale)

    def _row_keys(self, conformed: pd.DataFrame) -> np.ndarray:
        """The keys sealed test rows are stored under (a text model: the text's hash, nbtrain.kinds.text.bundle)."""
        return fingerprint.name_keys(conformed, self.schema.names)

    def _refuse_sealed(self, conformed: pd.DataFrame) -> None:
        """Test rows not evaluated yet are refused: a prediction on them is a look at the test set."""
        if not len(self.sealed) or conformed.empty:
            return
        hit = np.isin(self._row_keys(conformed), self.sealed)
        if not hit.any():
            return
        rows = conformed.index[hit][:_EXAMPLES].tolist()
        where = ("this pipeline's test split, which stays sealed until pipe.test()"
                 if self.info.get("source") == "pipeline" else
                 "the test split of the pipeline this model was saved from; it was saved before pipe.test(), "
                 "so they stay sealed in it")
        todo = ("Call pipe.test() first (once, for the final estimate), or drop those rows." if
                self.info.get("source") == "pipeline" else
                "Run pipe.test() in that pipeline and save the model again, or drop those rows.")
        raise LeakageError(f"New rows belong to {where}: {int(hit.sum())} of {len(conformed)} (e.g. rows {rows}). A "
                           "prediction on them is a look at the test set by another door, and what you learn from it "
                           f"shapes the model you choose. {todo}")

    def _require_network(self, verb: str) -> None:
        if not self.is_network:
            raise ConfigError(f"{verb}() is for networks; run {self.run.get('name')!r} is a tree baseline "
                              f"({self.run.get('model')}). Save it with save(path), which predicts the same way, or "
                              "choose a network run (run='<name>').")

    # ---- how it reads --------------------------------------------------------------------------

    def _summary(self) -> list[str]:
        run, info = self.run, self.info
        lines = [f"Run {run.get('name')!r} ({run.get('model')}) predicting {self.target!r}: {self._task_phrase()}."]
        scores = ", ".join(f"{k.removeprefix('val_')} {v:.4g}" for k, v in run.get("val_metrics", {}).items())
        if scores:
            when = "" if run.get("kind") == "baseline" else f" at its best epoch ({run.get('best_epoch')})"
            lines.append(f"Validation{when}: {scores}.")
        lines.append(self._reads())
        lines.append(self._sealed_line())
        made = ", ".join(f"{k} {v}" for k, v in info.get("packages", {}).items() if k in ("nbtrain", "torch"))
        origin = info.get("path") or "this pipeline"
        lines.append(f"From {origin}; dataset {str(info.get('dataset', ''))[:12]}, split {info.get('split')}"
                     + (f"; made with {made}" if made else "") + ".")
        if self.task in ("binary", "multiclass"):
            lines.append(f"Predicts {from_config(self.run.get('decision'), self.task).describe(self.classes)}.")
        lines.append(f"predict(new_data) returns {self._columns()}.")
        return lines

    def _sealed_line(self) -> str:
        return ("Test split: evaluated." if not len(self.sealed) else
                f"Test split: sealed; its {len(self.sealed)} rows are refused until pipe.test().")

    def _reads(self) -> str:
        ignored = f"; ignores {list(self.schema.ignored)}" if self.schema.ignored else ""
        return f"Reads {len(self.schema.columns)} columns{ignored}."

    def _task_phrase(self) -> str:
        if self.task == "regression":
            return "regression"
        if self.task == "binary":
            return f"binary, probability of {self.classes[1]!r} (else {self.classes[0]!r})"
        return f"multiclass over {self.classes}"

    def _columns(self) -> str:
        if self.task == "regression":
            return "a 'prediction' column"
        shown = self.classes[1:] if self.task == "binary" else self.classes
        return "'prediction' and " + ", ".join(f"'probability_{c}'" for c in shown)

    def _sections(self):
        evidence = [("Evidence behind the numbers", describe_evidence(self.evidence))] \
            if self.evidence is not None or self.info.get("source") == "bundle" else []
        return [*evidence, *self._input_sections()]

    def _input_sections(self):
        rows = {spec.name: {"kind": spec.kind, "training dtype": spec.dtype,
                            "missing in training": "none" if spec.strategy in ("-", "drop_rows") else spec.strategy,
                            "labels": len(spec.levels) if spec.levels is not None else ""}
                for spec in self.schema.columns}
        return [("Input columns", pd.DataFrame.from_dict(rows, orient="index"))]


def user_stacklevel() -> int:
    """The stacklevel that makes a warning point at the first caller outside nbtrain (the user's line),
    whether predict was called on a Pipeline or on a loaded model."""
    root = os.path.dirname(os.path.abspath(nbtrain.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(root + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def pick_run(pipe, run=None, *, verb: str = "predict", network: bool = False) -> Run:
    """One of `pipe`'s runs that holds its model (default: see default_run; with `network`, among network
    runs only); StageError before any run, ConfigError for a run without its model."""
    runs = [r for r in pipe._runs() if r.kind != "baseline" or not network]
    if not runs and not isinstance(run, Run):
        what = "network run (the runs so far are baselines, not networks)" if pipe._runs() else "trained run"
        raise StageError(f"{verb}() comes after fit(){'' if network else ' or baseline()'}; this pipeline is at "
                         f"stage {pipe.stage!r} and has no {what}. Call pipe.fit() first.")
    chosen = default_run(pipe, runs) if run is None else choose_run(pipe._runs(), run, pipe.task)
    if chosen.model is None:
        raise ConfigError(f"Run {chosen.name!r} holds no model in this session; train it again or choose another run.")
    return chosen


def from_pipeline(pipe, run=None, *, verb: str = "predict", network: bool = False,
                  evidence: bool = False) -> Predictor:
    """The Predictor of one of `pipe`'s runs (see pick_run). Reads the pipeline's fitted state; copies
    nothing large and changes nothing. `evidence`: also read the evidence behind the run's numbers from
    the ledger (nbtrain.evidence), as a bundle carries it."""
    chosen = pick_run(pipe, run, verb=verb, network=network)
    schema = pipeline_schema(pipe)
    tested = _evaluated_here(pipe)
    return Predictor(schema=schema, task=pipe.task, target=pipe.target,
                     classes=list(pipe.classes) if pipe.task != "regression" else None,
                     target_scale=tuple(chosen.config.get("target_scale", (0.0, 1.0))),
                     run=run_summary(chosen), model=chosen.model,
                     preprocessor=getattr(pipe, "preprocessor_", None) if chosen.kind != "baseline" else None,
                     sealed=sealed_hashes(pipe, schema),
                     info={"dataset": pipe.fingerprint, "split": pipe.split_id, "source": "pipeline",
                           "tested": bool(tested), "train_rows": len(pipe._split.positions["train"]),
                           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "packages": package_versions(chosen.model)},
                     evidence=collect_evidence(pipe, chosen) if evidence else None)


def kind_predictor(cls: type, pipe, chosen, *, evidence: bool, packages: dict | None = None, **fields) -> Predictor:
    """A Predictor subclass of a kind whose preprocessing is its own (text, images: nbtrain.kinds.*_bundle) for
    run `chosen`: the fields every kind shares, read from the pipeline, plus the kind's own `fields`."""
    sealed = fields.pop("sealed") if "sealed" in fields else pipe._sealed_feature_hashes()
    classes = list(pipe.classes) if pipe.task in ("binary", "multiclass") else None
    return cls(task=pipe.task, target=pipe.target, classes=classes,
               target_scale=tuple(chosen.config.get("target_scale", (0.0, 1.0))), run=run_summary(chosen),
               model=chosen.model, preprocessor=pipe.preprocessor_, sealed=sealed,
               evidence=collect_evidence(pipe, chosen) if evidence else None,
               info={"dataset": pipe.fingerprint, "split": pipe.split_id, "source": "pipeline",
                     "train_rows": int(pipe.split_.sizes["train"]),
                     "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "packages": {**package_versions(chosen.model), **(packages or {})}}, **fields)


def run_summary(run) -> dict:
    return {"name": run.name, "kind": run.kind, "model": run.config.get("model", ""), "best_epoch": run.best_epoch,
            "monitor": run.monitor, "stop_reason": run.stop_reason, "val_metrics": run.best_metrics,
            "decision": run.config.get("decision")}


def pipeline_schema(pipe) -> Schema:
    plans = {n: p for n, p in pipe.cleaning_.plans.items() if n in pipe._frame.columns}
    ignored = [c for c in (pipe.target, pipe.time_col, pipe.group_col) if c is not None]
    ignored += [c for c in pipe.cleaning_.dropped_columns if c not in ignored]
    return build_schema(plans, pipe._rows("train"), pipe._data.dtypes.to_dict(), pipe.ordinal, ignored,
                        getattr(pipe, "_na_markers", NA_MARKERS))


def default_run(pipe, runs: list):
    """Of `runs`, the one test() evaluated on this split, if it did; else the one test() would choose."""
    names = {r.name for r in runs}
    tested = [e.run_name for e in _evaluated_here(pipe) if e.run_name in names]
    return choose_run(runs, tested[-1] if tested else None, pipe.task)


def _evaluated_here(pipe) -> list:
    return [e for e in pipe.ledger.test_evaluations(pipe.fingerprint) if e.split_id == pipe.split_id]


def sealed_hashes(pipe, schema: Schema) -> np.ndarray:
    """Keys of the test rows no evaluation has opened yet, over the model's columns, in the test lock's
    normal form (nbtrain.data.fingerprint): a float32 copy, tiny noise or numbers as text still match.

    A test row whose columns equal a train or validation row's is left out: predicting on it tells
    nothing the train or validation row would not tell too.
    """
    positions = pipe._split.positions["test"]
    opened = fingerprint.any_known(pipe._lock_hash[positions], pipe.ledger.evaluated_row_hashes())
    if opened.all():
        return np.zeros(0, dtype=np.uint64)
    test = pipe._frame.iloc[positions[~opened]]
    seen = pipe._frame.iloc[np.concatenate([pipe._split.positions["train"], pipe._split.positions["val"]])]
    test_keys = fingerprint.name_keys(conform(test, schema)[0], schema.names)
    seen_keys = fingerprint.name_keys(conform(seen, schema)[0], schema.names)
    return np.setdiff1d(test_keys, seen_keys)


def pipeline_card(pipe, run=None, *, test=None) -> ModelCard:
    """The card of one of `pipe`'s runs (default: the run `test` evaluated, else as for predict), with the
    evidence read from its ledger now."""
    chosen = pick_run(pipe, run if run is not None or test is None else test.run, verb="model_card")
    classes = list(pipe.classes) if pipe.task in ("binary", "multiclass") else None
    return render(run=run_summary(chosen), target=pipe.target, task=pipe.task, kind=pipe.kind, classes=classes,
                  evidence=collect_evidence(pipe, chosen), test=test, bundle=bundle_name(pipe, chosen))


# ---- the table's bundle, read back (nbtrain.bundle.load reads the file and calls load_bundle) ------------


def load_bundle(manifest: dict, members: dict[str, bytes], path: Path, *, trust: bool = False) -> Predictor:
    """The Predictor of a checked bundle of a table (nbtrain.bundle.load has read and checksummed its members)."""
    return load_table(manifest, members, path, trust=trust)


def load_table(manifest: dict, members: dict[str, bytes], path: Path, *, trust: bool = False, cls: type | None = None,
               **fields) -> Predictor:
    """The `cls` Predictor of a checked bundle of a table's members (Predictor._bundle_members), with the kind's own `fields`."""
    cls = cls or Predictor
    if manifest["model"] is not None:
        model = rebuild_model(manifest["model"], members["weights.pt"], path, trust=trust)
        preprocessor = bundle_safety.load(members["preprocessor.skops"], "preprocessing", path, trust)
    else:
        model, preprocessor = bundle_safety.load(members["baseline.skops"], "tree baseline", path, trust), None
    return cls(schema=_schema(manifest["schema"], path), task=manifest["task"], target=manifest["target"],
               classes=manifest["classes"], target_scale=tuple(manifest["target_scale"]), run=manifest["run"],
               model=model, preprocessor=preprocessor, sealed=read_sealed(members["sealed.npy"], path),
               info={**manifest["info"], "source": "bundle", "path": str(path)},
               evidence=manifest.get("evidence"), **fields)  # evidence None in a version 2 bundle: its repr says so


def _schema(values: dict, path: Path) -> Schema:
    try:
        return Schema.from_dict(values)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{str(path)!r}: its manifest's feature schema is malformed ({exc!r}). Save the bundle "
                        "again from the pipeline.") from exc
