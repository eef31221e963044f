"""Exporting forecasters: scaled windows (batch, lookback, n_inputs) in, the forecast (batch, horizon) in the
target's units out, for the LSTM and the Transformer, in every format, checked on the validation windows."""

import json

import numpy as np
import pytest
import torch

import nbtrain as nt
import nbtrain.export as exporting
from nbtrain import predictor
from nbtrain.errors import ConfigError, LeakageError, NbtrainError
from nbtrain.kinds.timeseries.data import forecast

FORMATS = [pytest.param("onnx", marks=pytest.mark.skipif(not exporting.importlib.util.find_spec("onnxruntime"),
                                                          reason="onnxruntime is not installed")),
           "torch.export", "torchscript"]
WINDOWS = ("windows float32 (batch, 12, 1): the last 12 steps of ['co2'], oldest first, scaled by the train "
           "period's mean and std")


@pytest.fixture(scope="module")
def forecasters(tmp_path_factory):
    """Weekly Mauna Loa CO2 (statsmodels), 12 weeks in, 2 out: the naive baselines, an LSTM and a Transformer
    (the template's two forecasters, small), two epochs each."""
    import statsmodels.api as sm
    from threadpoolctl import threadpool_limits
    co2 = sm.datasets.co2.load_pandas().data.reset_index().rename(columns={"index": "week"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            pipe = nt.Pipeline(co2, target="co2", kind="timeseries", time_col="week",
                               workdir=tmp_path_factory.mktemp("series-export") / "runs")
            pipe.clean(), pipe.split(), pipe.preprocess(lookback=12, horizon=2)
            pipe.baseline(season=12)  # the weekly season (52) is longer than the lookback: a shorter one
            runs = {"lstm": pipe.fit(nt.models.LSTMForecaster(1, 2, hidden=16, layers=1), epochs=2, view=None,
                                     doctor=False),
                    "transformer": pipe.fit(nt.models.TransformerForecaster(1, 2, d_model=16, heads=2, layers=1,
                                                                            dropout=0.0),
                                            epochs=2, view=None, doctor=False)}
    finally:
        torch.set_num_threads(threads)
    return pipe, co2, runs


def run_exported(path, format, windows):
    if format == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"windows": windows})[0]
    module = torch.export.load(str(path)).module() if format == "torch.export" else torch.jit.load(str(path))
    return module(torch.as_tensor(windows)).detach().numpy()


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("network", ["lstm", "transformer"])
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_an_exported_forecaster_reproduces_the_forecasts(forecasters, tmp_path, network, format):
    pipe, co2, runs = forecasters
    run = runs[network]
    report = pipe.export(tmp_path / "forecaster", format=format, run=run.name)
    assert report.path == tmp_path / f"forecaster{exporting.FORMATS[format]}" and report.path.is_file()
    assert report.run == run.name and report.inputs == [WINDOWS]
    assert report.output == "'co2' at steps t+1..t+2 in its own units, shape (batch, 2)"
    assert report.sample == "validation windows"
    assert report.rows_checked == min(len(pipe._val), exporting.SAMPLE_ROWS) and report.max_abs_diff <= 1e-3
    print(f"{network} {format}: max abs difference {report.max_abs_diff:.3g} on {report.rows_checked} windows")
    windows = pipe._val.X[-7:]  # a batch size it was not traced with, in the target's units (ppm, not scaled)
    expected = forecast(run.model, pipe._val, run.config["target_scale"])[-7:]
    np.testing.assert_allclose(run_exported(report.path, format, windows), expected, rtol=1e-4, atol=1e-5)
    history = co2[co2["week"] < pipe.sealed_from()]  # the window predict() forecasts from, and its forecast
    last = pipe.preprocessor_.last_windows(pipe._conform(history)).X
    np.testing.assert_allclose(run_exported(report.path, format, last), pipe.predict(history, run=run).to_numpy(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not exporting.importlib.util.find_spec("onnx"), reason="onnx is not installed")
def test_the_exported_files_describe_the_window_and_its_scaling(forecasters, tmp_path):
    import onnx
    pipe, _, runs = forecasters
    path = pipe.export(tmp_path / "lstm.onnx", run=runs["lstm"].name).path
    in_onnx = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["nbtrain"])
    extra = {"nbtrain.json": ""}
    torch.export.load(str(pipe.export(tmp_path / "lstm.pt2", format="pt2", run=runs["lstm"].name).path),
                      extra_files=extra)
    for described in (in_onnx, json.loads(extra["nbtrain.json"])):
        assert described["kind"] == "timeseries" and described["run"] == runs["lstm"].name
        assert (described["lookback"], described["horizon"]) == (12, 2)
        windows = described["inputs"]["windows"]
        assert windows["shape"] == ["batch", 12, 1] and windows["features"] == ["co2"]
        scaler = pipe.preprocessor_.scaler_
        assert windows["scaling"] == {"co2": {"mean": scaler.mean_[0], "std": scaler.scale_[0]}}
        assert described["target_scale_applied"] == list(runs["lstm"].config["target_scale"])


def test_a_loaded_forecaster_exports_and_transforms_what_its_file_takes(forecasters, tmp_path):
    pipe, co2, runs = forecasters
    model = nt.load(pipe.save(tmp_path / "co2.nbtrain", run=runs["transformer"].name))
    report = model.export(tmp_path / "served.pt2", format="torch.export")
    assert report.sample == "synthetic windows" and report.rows_checked == exporting.SAMPLE_ROWS
    assert report.max_abs_diff <= 1e-3
    history = co2[co2["week"] < pipe.sealed_from()]
    real = model.export(tmp_path / "real.pt2", format="torch.export", sample=history)
    assert real.sample == "windows of the sample rows" and real.rows_checked == exporting.SAMPLE_ROWS
    windows = model.transform(history)
    assert windows.shape == (1, 12, 1) and windows.dtype == np.float32
    np.testing.assert_allclose(run_exported(real.path, "torch.export", windows), model.predict(history).to_numpy(),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(LeakageError, match=r"reach into the test period .* The bundle was saved before pipe.test\(\)"):
        model.export(tmp_path / "sealed.pt2", format="torch.export", sample=co2)
    with pytest.raises(ConfigError, match=r"The sample windows have shape \(10, 1\); this forecaster reads "
                                          r"\(lookback, n_inputs\) = \(12, 1\)"):
        model.export(tmp_path / "short.pt2", format="torch.export", sample=np.zeros((4, 10, 1)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["co2.nbtrain", "real.pt2", "served.pt2"]


def test_naive_baselines_are_refused_and_the_default_is_a_network(forecasters, tmp_path, monkeypatch):
    pipe, _, runs = forecasters
    naive = [r for r in pipe._runs() if r.kind == "baseline"]
    assert len(naive) == 2  # last value and seasonal naive
    for run in naive:
        with pytest.raises(ConfigError, match=rf"export\(\) writes forecasters that learned weights; run "
                                              rf"{run.name!r} is a naive baseline, .* no network to export"):
            pipe.export(tmp_path / "naive.onnx", format="torch.export", run=run.name)
    # whichever scores best on validation (two epochs may or may not beat the last value), say a baseline:
    # export's default passes it over for the best network
    monkeypatch.setattr(predictor, "default_run", lambda pipe, among: next(
        (r for r in among if r.kind == "baseline"), among[-1]))
    assert predictor.default_run(pipe, pipe._runs()).kind == "baseline"
    assert pipe.export(tmp_path / "default.pt2", format="torch.export").run == runs["transformer"].name


def test_a_forecaster_export_that_strays_is_not_kept(forecasters, tmp_path, monkeypatch):
    pipe, _, runs = forecasters
    honest = exporting._RUNNERS["torch.export"]
    # forecasts are ~330 ppm: 1 ppm is beyond 1e-5 + 1e-4 x 330
    monkeypatch.setitem(exporting._RUNNERS, "torch.export", lambda path: (lambda *a: honest(path)(*a) + 1.0))
    with pytest.raises(NbtrainError, match=r"The exported torch.export model differs from the original by up to "
                                           r"1 on \d+ rows .* it was not kept"):
        pipe.export(tmp_path / "lstm.pt2", format="torch.export", run=runs["lstm"].name)
    assert list(tmp_path.iterdir()) == []
