"""Export a trained network for serving without nbtrain, and check the exported file.

Formats:

| format           | file   | runs with                      | notes |
|------------------|--------|--------------------------------|-------|
| `"onnx"`         | .onnx  | onnxruntime, any ONNX runtime  | needs `pip install 'nbtrain[export]'` (onnx, onnxscript, onnxruntime) |
| `"torch.export"` | .pt2   | `torch.export.load(path).module()` | PyTorch's current graph format |
| `"torchscript"`  | .pt    | `torch.jit.load(path)`, LibTorch (C++) | deprecated by PyTorch in favour of torch.export; kept for LibTorch |

Images and text (nbtrain.kinds.image.bundle, nbtrain.kinds.text.bundle) describe their own inputs
(`export_inputs`: images after the eval transform; input_ids and attention_mask with dynamic batch
and sequence axes) and are checked the same way, against the network run through the same head.
A ranking network of (query, document) features takes X and codes as a table's does and returns one
score per row; matrix factorisation (nbtrain.kinds.ranking.interactions_bundle) takes `users` and `items`,
int64 codes (batch,), and returns one score per pair. A forecaster (nbtrain.kinds.timeseries.bundle)
takes `windows`, float32 (batch, lookback, n_inputs) scaled as its preprocessor scales them (lookback
fixed), and returns the forecast of the next `horizon` steps in the target's units, (batch, horizon);
it is checked on the validation windows, against the forecast predict makes.

The exported graph is the network plus its output head, so it returns what `predict` reports:
P(positive class) for binary (shape (batch,)), class probabilities for multiclass (batch, classes),
values in the target's units for regression (batch,). Its inputs are the preprocessed features: `X`
float32 (batch, n_inputs) and, when the data has high-cardinality labels, `codes` int64 (batch,
embedding columns; 0 = a label not seen in train). `Predictor.transform(rows)` makes them from raw
rows. The batch size is dynamic. A JSON description (task, classes, input columns, output) is
embedded in the file: ONNX metadata "nbtrain", or the extra file "nbtrain.json" of .pt2 and .pt.

The check: the written file is loaded back with its own runtime and run on a sample (validation rows
from a pipeline, else 256 synthetic rows), and once on a single row; every output must satisfy
|exported - original| <= atol + rtol * |original| (default atol 1e-5, rtol 1e-4), where "original"
is the network as `predict` runs it. Otherwise the file is not kept and the error gives the largest
difference. The file appears under its name only once it has passed (temp file, then rename).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import nbtrain
from nbtrain.data.preprocess import Arrays
from nbtrain.errors import ConfigError, NbtrainError
from nbtrain.files import atomic_path
from nbtrain.report import Report
from nbtrain.training.evaluation import nn_predictions

FORMATS = {"onnx": ".onnx", "torch.export": ".pt2", "torchscript": ".pt"}
_ALIASES = {"pt2": "torch.export", "export": "torch.export", "jit": "torchscript"}
SAMPLE_ROWS = 256
_TRACE_ROWS = 8


class Served(nn.Module):
    """The network and its output head: probabilities, or values in the target's units."""

    def __init__(self, model: nn.Module, task: str, target_scale: tuple, *, steps: bool = False):
        super().__init__()
        self.model, self.task, self.steps = model, task, steps  # steps: a forecast's (batch, horizon) stays 2-D
        self.mean, self.std = float(target_scale[0]), float(target_scale[1])

    def forward(self, X: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        out = (self.model(X) if codes is None else self.model(X, codes)).float()
        if self.task == "binary":
            return torch.sigmoid(out).reshape(-1)
        if self.task == "multiclass":
            return torch.softmax(out, dim=1)
        if self.task == "ranking":  # scores as the network gives them: only their order within a query counts
            return out.reshape(-1)
        out = out * self.std + self.mean
        return out if self.steps else out.reshape(-1)


@dataclass(repr=False)
class ExportReport(Report):
    """What `export` wrote, and how closely the exported file reproduces the original network."""

    title = "Export"
    run: str = ""
    path: Path | None = None
    format: str = ""
    inputs: list = field(default_factory=list)     # e.g. "X float32 (batch, 10)"
    output: str = ""
    rows_checked: int = 0
    sample: str = ""
    max_abs_diff: float = float("nan")
    rtol: float = 0.0
    atol: float = 0.0
    size_bytes: int = 0
    seconds: float = 0.0
    notes: list = field(default_factory=list)      # what else was written (a text model's tokenizer)
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        return [*self._written(), *self.notes]

    def _written(self) -> list[str]:
        return [f"Wrote run {self.run!r} to {self.path} ({self.format}, {self.size_bytes / 1024:.0f} kB) in "
                f"{self.seconds:.1f} s.",
                f"Inputs: {'; '.join(self.inputs)}. Output: {self.output}.",
                f"Checked on {self.rows_checked} {self.sample} and 1 single row: max |exported - original| = "
                f"{self.max_abs_diff:.2e}, within {self.atol:g} + {self.rtol:g} x |original|."]


def resolve_format(format: str) -> str:
    name = _ALIASES.get(str(format).lower(), str(format).lower())
    if name not in FORMATS:
        raise ConfigError(f"format={format!r} is not an export format; use one of {list(FORMATS)}.")
    if name == "onnx":
        lacking = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
        if lacking:
            raise ConfigError(f"format='onnx' needs {', '.join(lacking)}: pip install 'nbtrain[export]' (or use "
                              "format='torch.export', which needs only torch).")
    return name


@dataclass
class ExportInputs:
    """What an exported graph takes, and the rows its check runs on (tables: X and codes; other kinds:
    nbtrain.kinds.*_bundle's `export_inputs`). `dynamic`: per input, axis -> name ("batch", "sequence")."""

    names: list
    arrays: tuple                   # numpy arrays of the check sample, one per input
    dynamic: tuple
    described: list                 # e.g. "X float32 (batch, 10)"
    sample: str                     # "validation rows", "synthetic rows", ...
    metadata: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)   # axis name -> its largest size (a text model's positions)


def export_model(predictor, path, format: str = "onnx", *, sample=None, rtol: float = 1e-4,
                 atol: float = 1e-5) -> ExportReport:
    """Write `predictor`'s network to `path` in `format`, check it, and report (see the module docstring)."""
    started = time.perf_counter()
    format = resolve_format(format)
    path = Path(path)
    path = path.with_suffix(FORMATS[format]) if not path.suffix else path
    served = Served(copy.deepcopy(predictor.model).cpu().eval(), predictor.task, predictor.target_scale,
                    steps=predictor.kind == "timeseries").eval()
    inputs = predictor.export_inputs(sample) if hasattr(predictor, "export_inputs") else \
        _tabular_inputs(predictor, sample)
    example = tuple(torch.as_tensor(a[:_TRACE_ROWS]) for a in inputs.arrays)
    checked = {}

    def write(temp: Path) -> None:  # the file replaces `path` only once it passed the parity check
        with _quiet():
            _WRITERS[format](served, example, temp, json.dumps(inputs.metadata, default=str), inputs)
            checked["difference"] = _max_difference(predictor, served, format, temp, inputs, rtol, atol)
    atomic_path(path, write, doing=f"writing the {format} export", suffix=FORMATS[format])
    return ExportReport(run=predictor.run.get("name", ""), path=path, format=format, inputs=inputs.described,
                        output=_describe_output(predictor), rows_checked=len(inputs.arrays[0]), sample=inputs.sample,
                        max_abs_diff=checked["difference"], rtol=rtol, atol=atol, size_bytes=path.stat().st_size,
                        seconds=time.perf_counter() - started)


def _tabular_inputs(predictor, sample) -> ExportInputs:
    X, codes, described = _sample(predictor, sample)
    arrays = (X, codes) if codes.shape[1] else (X,)
    return ExportInputs(names=["X", "codes"][:len(arrays)], arrays=arrays, dynamic=tuple({0: "batch"} for _ in arrays),
                        described=_describe_inputs(X, codes), sample=described, metadata=metadata(predictor))


def _sample(predictor, sample) -> tuple[np.ndarray, np.ndarray, str]:
    """Rows to compare on: the given Arrays or (X, codes), else synthetic rows shaped like the inputs."""
    if sample is not None:
        X, codes = (sample.X, sample.codes) if isinstance(sample, Arrays) else sample
        X, codes = np.asarray(X, dtype=np.float32)[:SAMPLE_ROWS], np.asarray(codes, dtype=np.int64)[:SAMPLE_ROWS]
        if len(X) >= 2:
            return X, codes, "validation rows" if isinstance(sample, Arrays) else "sample rows"
    pre = predictor.preprocessor
    rng = np.random.default_rng(0)
    # standardised features look like this; codes cover every level, 0 (unseen) included
    X = rng.normal(size=(SAMPLE_ROWS, len(pre.feature_names_))).astype(np.float32)
    codes = np.stack([rng.integers(0, n, size=SAMPLE_ROWS) for n in pre.cardinalities_.values()], axis=1) \
        if pre.cardinalities_ else np.zeros((SAMPLE_ROWS, 0), dtype=np.int64)
    return X, codes.astype(np.int64), "synthetic rows"


def _dynamic_shapes(inputs: ExportInputs) -> tuple:
    """torch.export's dims: one per axis name, shared by the inputs that have it (a sequence's ids and mask)."""
    dims = {name: torch.export.Dim(name, max=inputs.limits[name]) if name in inputs.limits else torch.export.Dim(name)
            for axes in inputs.dynamic for name in axes.values()}
    return tuple({axis: dims[name] for axis, name in axes.items()} for axes in inputs.dynamic)


def _write_onnx(served: Served, example: tuple, path: Path, described: str, inputs: ExportInputs) -> None:
    import onnx
    try:
        torch.onnx.export(served, example, str(path), input_names=list(inputs.names), output_names=["output"],
                          dynamic_shapes=_dynamic_shapes(inputs), dynamo=True, verbose=False)
    except torch.onnx.errors.OnnxExporterError as exc:
        raise ConfigError(f"This model cannot be exported to ONNX: {exc}. Try format='torch.export'.") from exc
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"nbtrain": described})
    onnx.save(model, str(path))


def _write_torch_export(served: Served, example: tuple, path: Path, described: str, inputs: ExportInputs) -> None:
    program = torch.export.export(served, example, dynamic_shapes=_dynamic_shapes(inputs))
    torch.export.save(program, str(path), extra_files={"nbtrain.json": described})


def _write_torchscript(served: Served, example: tuple, path: Path, described: str, inputs: ExportInputs) -> None:
    # traced for inference, as it will run: with gradients on, a Transformer encoder takes its slow path on the
    # first trace and its fused one on trace's own re-check, which then fails although both compute the same
    try:
        with torch.no_grad():
            traced = torch.jit.trace(served, example)
    except torch.jit.TracingCheckError as exc:
        raise ConfigError("This model cannot be held by TorchScript: tracing it twice gave different graphs, so the "
                          "traced file would not reliably compute what the network does. TorchScript is deprecated "
                          "by PyTorch; use format='torch.export' or format='onnx'.") from exc
    torch.jit.save(traced, str(path), _extra_files={"nbtrain.json": described})


def _run_onnx(path: Path):
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *arrays: session.run(None, dict(zip(names, arrays)))[0]


def _run_torch(load):
    def runner(path: Path):
        module = load(str(path))
        return lambda *arrays: module(*(torch.as_tensor(a) for a in arrays)).detach().numpy()
    return runner


_WRITERS = {"onnx": _write_onnx, "torch.export": _write_torch_export, "torchscript": _write_torchscript}
_RUNNERS = {"onnx": _run_onnx, "torch.export": _run_torch(lambda p: torch.export.load(p).module()),
            "torchscript": _run_torch(torch.jit.load)}


def _expected(predictor, served: Served, arrays: tuple) -> np.ndarray:
    """The original's outputs: a table's or a forecaster's network as predict runs it (`export_outputs`);
    another kind's through the same head."""
    if hasattr(predictor, "export_outputs"):
        return predictor.export_outputs(*arrays)
    if not hasattr(predictor, "export_inputs"):
        codes = arrays[1] if len(arrays) > 1 else np.zeros((len(arrays[0]), 0), dtype=np.int64)
        rows = Arrays(X=arrays[0], codes=codes, y=np.zeros(len(arrays[0]), dtype=np.float32), index=None)
        return nn_predictions(predictor.model, rows, predictor.task, tuple(predictor.target_scale))
    with torch.no_grad():
        return served(*(torch.as_tensor(a) for a in arrays)).numpy()


def _max_difference(predictor, served: Served, format: str, path: Path, inputs: ExportInputs, rtol: float,
                    atol: float) -> float:
    """Run the written file on the sample and on one row; raise when it strays from the original."""
    run = _RUNNERS[format](path)
    largest = 0.0
    for rows in (slice(None), slice(0, 1)):
        arrays = tuple(np.ascontiguousarray(a[rows]) for a in inputs.arrays)
        expected = _expected(predictor, served, arrays)
        got = np.asarray(run(*arrays), dtype=np.float64)
        if got.shape != expected.shape:
            raise NbtrainError(f"The exported {format} model returns shape {got.shape}, the original {expected.shape}; "
                               "it was not kept.")
        gap = np.abs(got - expected)
        largest = max(largest, float(gap.max()))
        if not np.all(gap <= atol + rtol * np.abs(expected)):
            raise NbtrainError(f"The exported {format} model differs from the original by up to {largest:.3g} on "
                               f"{len(expected)} rows (allowed: {atol:g} + {rtol:g} x |original|); it was not kept. "
                               "Try another format, or pass looser rtol=/atol= if the difference is acceptable.")
    return largest


def metadata(predictor) -> dict:
    pre = predictor.preprocessor
    return {"nbtrain": nbtrain.__version__, "run": predictor.run.get("name"), "task": predictor.task,
            "target": predictor.target, "classes": predictor.classes, "output": _describe_output(predictor),
            "inputs": {"X": {"dtype": "float32", "columns": list(pre.feature_names_)},
                       "codes": {"dtype": "int64", "columns": list(pre.embedding_columns_),
                                 "cardinalities": dict(pre.cardinalities_), "unseen": 0}},
            "preprocessing": "X and codes are nbtrain's preprocessed features: nbtrain.load(bundle).transform(rows) "
                             "makes them from raw rows."}


def _describe_inputs(X: np.ndarray, codes: np.ndarray) -> list[str]:
    described = [f"X float32 (batch, {X.shape[1]})"]
    return described + [f"codes int64 (batch, {codes.shape[1]})"] if codes.shape[1] else described


def _describe_output(predictor) -> str:
    if predictor.task == "binary":
        return f"P({predictor.classes[1]!r}), shape (batch,)"
    if predictor.task == "multiclass":
        return f"probabilities of {predictor.classes}, shape (batch, {len(predictor.classes)})"
    if predictor.task == "ranking":
        pair = predictor.kind == "interactions"
        return (f"a score per {'(user, item) pair' if pair else 'row'}, shape (batch,): higher ranks first within "
                f"{'a user' if pair else 'a query'}")
    if predictor.kind == "timeseries":
        horizon = predictor.preprocessor.horizon
        return f"{predictor.target!r} at steps t+1..t+{horizon} in its own units, shape (batch, {horizon})"
    return f"{predictor.target!r} in its own units, shape (batch,)"


@contextlib.contextmanager
def _quiet():
    """The exporters log and warn about their own internals (missing torchvision ops, deprecations of
    torch.jit); none of it is about the user's model, whose problems raise instead."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(torch|onnx|onnxscript|onnx_ir|copyreg)(\.|$)")
            # torch's own graph code and an LSTM's weight list, raised from modules not named torch
            warnings.filterwarnings("ignore", message=r"_check_is_size will be removed", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights.* were assigned during "
                                                      r"export", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)
