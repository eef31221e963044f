"""Bundles of forecasters: `pipe.save(path)` on a TimeSeriesPipeline, read back by `nbtrain.load(path)`.

The same file and promises as a table's bundle (nbtrain.bundle), with what a forecaster needs:

    manifest.json   as for tables, with "kind": "timeseries" and "series": the time, series, target and
                    covariate columns; lookback and horizon; how gaps are treated; each series' id and
                    frequency (its step and season); how repeated times are resolved; and, when saved
                    before test(), the first time of the sealed test period
    weights.pt      the network's best weights (a state_dict, read with torch's weights-only loader);
                    the network is rebuilt from its class's import path and config, as for tables
    scaler.skops    the scaler fitted on the train period (scikit-learn's StandardScaler, via skops)

`model.predict(new_data)` forecasts the `horizon` steps after the end of new_data from its last
`lookback` rows per series, as the pipeline did. A bundle saved before test() refuses inputs from the
test period on. The naive baselines are not bundled (they need no file: see
nbtrain.kinds.timeseries.naive).

`model.export(path, format)` (and `pipe.export`) writes the network for serving: input `windows`,
float32 (batch, lookback, n_inputs), scaled as `model.transform(rows)` makes them (the scaler is one
for all series, fitted on the train period, so a server can apply it: its means and stds are in the
file's metadata); output the forecast (batch, horizon) in the target's units, the target's scaling
being part of the graph. The naive baselines are refused: they are not networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbtrain import bundle_safety
from nbtrain.bundle import model_spec, rebuild_model, weights_bytes
from nbtrain.errors import ConfigError, DataError
from nbtrain.kinds.timeseries import data as ts
from nbtrain.kinds.timeseries.data import conform_series, forecast, refuse_test_inputs
from nbtrain.predictor import Predictor, kind_predictor, pick_run

_MEMBERS = {"weights.pt", "scaler.skops"}
_FIELDS = {"time_col": (str, int), "target": (str, int), "covariates": list, "lookback": int, "horizon": int,
           "gaps": str, "calendar": bool, "feature_names": list, "frequencies": list, "duplicate_times": str}


@dataclass(repr=False)
class SeriesPredictor(Predictor):
    """A forecaster with its windowing: `predict(new_data)` forecasts the steps after new_data's end."""

    kind = "timeseries"
    duplicate_times: str = "error"
    sealed_from: object = None       # the first time of the test period while it is sealed, else None

    def predict(self, new_data, *, strict: bool = False) -> pd.DataFrame:
        """One row per series (indexed by the first forecast step's time), columns t+1..t+H, as the pipeline's
        predict() gives them. new_data needs the time column, the target and the covariates (and series)."""
        from nbtrain.training.runs import prediction_frame
        windows = self._last_windows(new_data)
        return prediction_frame(forecast(self.model, windows, self.target_scale), windows.index, self.task, None)

    def transform(self, new_data) -> np.ndarray:
        """The window of each series' last `lookback` rows, scaled: float32 (series, lookback, n_inputs), in
        predict()'s order of series. What an exported forecaster (see export) takes."""
        return self._last_windows(new_data).X

    def export(self, path, format: str = "onnx", *, sample=None, rtol: float = 1e-4, atol: float = 1e-5):
        """Write the network for serving (input `windows`, float32 (batch, lookback, n_inputs) from transform(rows),
        dynamic batch; output the next `horizon` steps in the target's units, (batch, horizon)), checked against
        this model's forecasts on `sample` windows (Windows, an array of scaled windows, or rows of the series to
        cut windows from; default synthetic windows) (nbtrain.export)."""
        from nbtrain.export import export_model
        return export_model(self, path, format, sample=sample, rtol=rtol, atol=atol)

    def export_inputs(self, sample=None):
        """The exported graph's input and the windows its check runs on (nbtrain.export.ExportInputs)."""
        from nbtrain.export import SAMPLE_ROWS, ExportInputs
        pre = self.preprocessor
        shape = (pre.lookback, len(pre.feature_names_))
        found, described = self._sample_windows(sample)
        found = found[:SAMPLE_ROWS]
        if len(found) < 2:  # synthetic windows: scaled inputs look like this; what matters is the graph
            found, described = np.random.default_rng(0).normal(size=(SAMPLE_ROWS, *shape)), "synthetic windows"
        if found.shape[1:] != shape:
            raise ConfigError(f"The sample windows have shape {found.shape[1:]}; this forecaster reads (lookback, "
                              f"n_inputs) = {shape}.")
        return ExportInputs(
            names=["windows"], arrays=(np.ascontiguousarray(found, dtype=np.float32),), dynamic=({0: "batch"},),
            described=[f"windows float32 (batch, {shape[0]}, {shape[1]}): the last {pre.lookback} steps of "
                       f"{pre.feature_names_}, oldest first, scaled by the train period's mean and std"],
            sample=described, metadata=export_metadata(self))

    def export_outputs(self, windows: np.ndarray) -> np.ndarray:
        """The forecasts predict() makes from these scaled windows, (windows, horizon) in the target's units."""
        horizon = self.preprocessor.horizon
        rows = ts.Windows(X=windows, y=np.zeros((len(windows), horizon), np.float32), history=np.zeros(0),
                          index=pd.RangeIndex(len(windows)), spans=pd.DataFrame())
        return forecast(self.model, rows, self.target_scale)

    def _sample_windows(self, sample) -> tuple[np.ndarray, str]:
        if sample is None:
            return np.zeros((0,)), ""
        if isinstance(sample, ts.Windows):
            return sample.X, "validation windows"
        if isinstance(sample, pd.DataFrame):  # rows of the series: every window that fits in them
            windows = self.preprocessor.split_data(conform_series(sample, self.preprocessor, self.duplicate_times),
                                                   observed_targets=False)
            self._refuse_sealed_windows(windows)
            return windows.X, "windows of the sample rows"
        return np.asarray(sample, dtype=np.float32), "sample windows"

    def _last_windows(self, new_data) -> ts.Windows:
        windows = self.preprocessor.last_windows(conform_series(new_data, self.preprocessor, self.duplicate_times))
        self._refuse_sealed_windows(windows)
        return windows

    def _refuse_sealed_windows(self, windows: ts.Windows) -> None:
        if self.sealed_from is not None:
            refuse_test_inputs(windows, self.sealed_from, self.preprocessor.lookback, "The bundle was saved before "
                               "pipe.test(): run pipe.test() in that pipeline and save it again, or pass data that "
                               "ends before the test period.")

    def _bundle_manifest(self) -> dict:
        return _manifest(self)

    def _bundle_members(self) -> dict[str, bytes]:
        return _members(self)

    def _reads(self) -> str:
        pre = self.preprocessor
        steps = ", ".join(sorted({f.name for f in pre.frequencies.values() if f is not None})) or "no fixed step"
        covariates = f" and covariates {pre.covariates}" if pre.covariates else ""
        series = f", per series of {pre.series_col!r} ({len(pre.frequencies)})" if pre.series_col is not None else ""
        return (f"Reads the last {pre.lookback} rows of {pre.target!r}{covariates} by {pre.time_col!r} ({steps})"
                f"{series}; forecasts the next {pre.horizon} step(s).")

    def _sealed_line(self) -> str:
        return ("Test period: evaluated." if self.sealed_from is None else
                f"Test period: sealed; inputs from {self.sealed_from} on are refused until pipe.test().")

    def _columns(self) -> str:
        return f"one row per series with the forecasts {', '.join(f't+{h}' for h in range(1, self.preprocessor.horizon + 1))}"

    def _input_sections(self):
        return []


def series_predictor(pipe, run=None, *, verb: str = "save", evidence: bool = False,
                     network: bool = False) -> SeriesPredictor:
    """The SeriesPredictor of one of a TimeSeriesPipeline's network runs (default as for predict; with
    `network`, the default is among the network runs only)."""
    chosen = pick_run(pipe, run, verb=verb, network=network)
    if chosen.kind == "baseline":
        raise ConfigError(f"{verb}() writes forecasters that learned weights; run {chosen.name!r} is a naive baseline, "
                          "which needs no file (nbtrain.models.naive rebuilds it from its season) and is no network "
                          "to export. Choose a network run (run='<name>').")
    tested = any(e.split_id == pipe.split_id for e in pipe.ledger.test_evaluations(pipe.fingerprint))
    return kind_predictor(SeriesPredictor, pipe, chosen, evidence=evidence, duplicate_times=pipe._duplicate_times,
                          sealed_from=None if tested else pipe.sealed_from(),
                          sealed=np.zeros(0, dtype=np.uint64))  # sealed by time (sealed_from), not by row keys


def export_metadata(predictor: SeriesPredictor) -> dict:
    """The JSON an exported forecaster carries: its window, the order and scaling of its inputs, its output."""
    from nbtrain import __version__
    from nbtrain.export import _describe_output
    pre = predictor.preprocessor
    scaler = pre.scaler_
    scaling = {str(name): {"mean": float(mean), "std": float(std)}
               for name, mean, std in zip(pre.numeric, scaler.mean_, scaler.scale_)}
    return {"nbtrain": __version__, "run": predictor.run.get("name"), "task": predictor.task, "kind": "timeseries",
            "target": predictor.target, "lookback": int(pre.lookback), "horizon": int(pre.horizon),
            "output": _describe_output(predictor), "target_scale_applied": list(predictor.target_scale),
            "inputs": {"windows": {"dtype": "float32", "shape": ["batch", int(pre.lookback), len(pre.feature_names_)],
                                   "features": list(pre.feature_names_), "scaling": scaling,
                                   "calendar": bool(pre.calendar)}},
            "time_col": pre.time_col, "series_col": pre.series_col,
            "preprocessing": "windows are the last `lookback` rows per series, oldest first, each feature scaled as "
                             "(value - mean) / std (inputs.windows.scaling; a missing value becomes 0) and calendar "
                             "features (sin/cos) appended when calendar is true: nbtrain.load(bundle).transform(rows) "
                             "makes them."}


def _manifest(predictor: SeriesPredictor) -> dict:
    pre = predictor.preprocessor
    info = {k: v for k, v in predictor.info.items() if k not in ("source", "path")}
    series = {"time_col": pre.time_col, "series_col": pre.series_col, "target": pre.target,
              "covariates": list(pre.covariates), "lookback": int(pre.lookback), "horizon": int(pre.horizon),
              "gaps": pre.gaps, "calendar": bool(pre.calendar), "feature_names": list(pre.feature_names_),
              "frequencies": [_frequency(key, f) for key, f in pre.frequencies.items()],
              "duplicate_times": predictor.duplicate_times, "sealed_from": _moment(predictor.sealed_from)}
    return {"kind": "timeseries", "task": predictor.task, "target": predictor.target, "classes": None,
            "target_scale": list(predictor.target_scale), "run": predictor.run, "model": model_spec(predictor.model),
            "schema": {"time_col": pre.time_col, "series_col": pre.series_col}, "series": series, "info": info,
            "evidence": predictor.evidence}


def _frequency(key, frequency) -> dict:
    key = key.item() if isinstance(key, np.generic) else key
    if frequency is None:
        return {"series": key, "frequency": None}
    # a Timedelta keeps its resolution: forecast times are the last time plus steps, in that resolution
    unit = {"timedelta_ns": int(frequency.unit.value), "resolution": frequency.unit.unit} \
        if isinstance(frequency.unit, pd.Timedelta) else float(frequency.unit)
    return {"series": key, "frequency": {"kind": frequency.kind, "unit": unit, "name": frequency.name,
                                         "season": frequency.season}}


def _moment(value):
    if value is None:
        return None
    return {"datetime": pd.Timestamp(value).isoformat()} if isinstance(value, (pd.Timestamp, np.datetime64)) else \
        {"number": float(value)}


def _members(predictor: SeriesPredictor) -> dict[str, bytes]:
    return {"weights.pt": weights_bytes(predictor.model),
            "scaler.skops": bundle_safety.dump(predictor.preprocessor.scaler_, "scaler")}


# ---- loading ------------------------------------------------------------------------------------


def load_bundle(manifest: dict, members: dict[str, bytes], path, *, trust: bool = False) -> SeriesPredictor:
    """The SeriesPredictor of a checked bundle (nbtrain.bundle.load has read and checksummed its members)."""
    if set(members) != _MEMBERS:
        raise DataError(f"{str(path)!r}: a forecaster's bundle holds {sorted(_MEMBERS)}; its manifest lists "
                        f"{sorted(members)[:5]}. The file was damaged or crafted; save the bundle again.")
    fields = _series_fields(manifest, path)
    model = rebuild_model(manifest["model"], members["weights.pt"], path, trust=trust)
    pre = ts.WindowPreprocessor(target=fields["target"], time_col=fields["time_col"],
                                series_col=fields.get("series_col"), covariates=fields["covariates"],
                                frequencies=_frequencies(fields["frequencies"], path), lookback=fields["lookback"],
                                horizon=fields["horizon"], gaps=fields["gaps"], calendar=fields["calendar"])
    pre.scaler_ = bundle_safety.load(members["scaler.skops"], "scaler", path, trust)
    pre.feature_names_ = list(fields["feature_names"])
    return SeriesPredictor(task=manifest["task"], target=manifest["target"], classes=None,
                           target_scale=tuple(manifest["target_scale"]), run=manifest["run"], model=model,
                           preprocessor=pre, duplicate_times=fields["duplicate_times"],
                           sealed_from=_read_moment(fields.get("sealed_from"), path),
                           evidence=manifest.get("evidence"),
                           info={**manifest["info"], "source": "bundle", "path": str(path)})


def _series_fields(manifest: dict, path) -> dict:
    fields = manifest.get("series")
    wrong = [name for name, kind in _FIELDS.items()
             if not isinstance(fields, dict) or not isinstance(fields.get(name), kind)
             or (kind is int and isinstance(fields.get(name), bool))]
    if not wrong and (fields["lookback"] < 1 or fields["horizon"] < 1):
        wrong = ["lookback or horizon"]
    if wrong:
        raise DataError(f"{str(path)!r}: its manifest is malformed: 'series' should hold {sorted(_FIELDS)} (found a "
                        f"wrong or missing {wrong[0]!r}). The file was damaged or crafted; save the bundle again.")
    return fields


def _frequencies(entries: list, path) -> dict:
    try:
        return {entry["series"]: None if entry["frequency"] is None else ts.Frequency(
            kind=entry["frequency"]["kind"], name=str(entry["frequency"]["name"]), season=entry["frequency"]["season"],
            unit=_timedelta(entry["frequency"]["unit"]) if isinstance(entry["frequency"]["unit"], dict)
            else float(entry["frequency"]["unit"]))
            for entry in entries}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{str(path)!r}: its manifest's series frequencies are malformed ({exc!r}). Save the bundle "
                        "again from the pipeline.") from exc


def _timedelta(unit: dict) -> pd.Timedelta:
    step = pd.Timedelta(int(unit["timedelta_ns"]), unit="ns")
    return step.as_unit(str(unit["resolution"])) if unit.get("resolution") else step


def _read_moment(value, path):
    if value is None:
        return None
    try:
        return pd.Timestamp(value["datetime"]) if "datetime" in value else float(value["number"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{str(path)!r}: its manifest's start of the test period is malformed ({exc!r}). Save the "
                        "bundle again from the pipeline.") from exc
