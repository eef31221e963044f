"""pipe.export: ONNX, torch.export and TorchScript files that reproduce the network, checked on write."""

import json

import numpy as np
import pytest
import torch

import nbtrain as nt
import nbtrain.export as exporting
from nbtrain.errors import ConfigError, NbtrainError

from trained import trained, with_many_labels

FORMATS = [pytest.param("onnx", marks=pytest.mark.skipif(not exporting.importlib.util.find_spec("onnxruntime"),
                                                          reason="onnxruntime is not installed")),
           "torch.export", "torchscript"]


@pytest.fixture(scope="module")
def pipe_and_frame(tmp_path_factory):
    """A network over 5 float inputs and one 40-level label column (embedding codes): two inputs."""
    return trained(tmp_path_factory.mktemp("export") / "runs", with_many_labels(), baseline=True)


def run_exported(path, format, X, codes):
    if format == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"X": X, "codes": codes})[0]
    module = torch.export.load(str(path)).module() if format == "torch.export" else torch.jit.load(str(path))
    return module(torch.as_tensor(X), torch.as_tensor(codes)).detach().numpy()


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_the_exported_model_reproduces_predict(pipe_and_frame, tmp_path, format):
    pipe, frame = pipe_and_frame
    report = pipe.export(tmp_path / "model", format=format)
    assert report.path == tmp_path / f"model{exporting.FORMATS[format]}" and report.path.is_file()
    assert report.inputs == [f"X float32 (batch, {pipe.n_inputs})", "codes int64 (batch, 1)"]
    assert report.rows_checked == len(pipe.val) and report.max_abs_diff <= 1e-5
    assert f"max |exported - original| = {report.max_abs_diff:.2e}, within 1e-05 + 0.0001 x |original|" in repr(report)
    print(f"{format}: max abs difference {report.max_abs_diff:.3g} on {report.rows_checked} validation rows")
    rows = frame.loc[pipe.val.index]
    expected = pipe.predict(rows, run=report.run).filter(like="probability_").to_numpy()
    got = run_exported(report.path, format, pipe.val.X[:7], pipe.val.codes[:7])  # a batch size it was not traced with
    np.testing.assert_allclose(got, expected[:7], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not exporting.importlib.util.find_spec("onnx"), reason="onnx is not installed")
def test_the_onnx_file_describes_its_inputs_and_outputs(pipe_and_frame, tmp_path):
    import onnx
    pipe, _ = pipe_and_frame
    path = pipe.export(tmp_path / "model.onnx").path
    described = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["nbtrain"])
    assert described["classes"] == ["a", "b", "c"] and described["task"] == "multiclass"
    assert described["inputs"]["X"]["columns"] == pipe.feature_names
    assert described["inputs"]["codes"] == {"dtype": "int64", "columns": ["city"], "cardinalities": {"city": 41},
                                            "unseen": 0}


def test_a_loaded_bundle_exports_checked_on_synthetic_rows(pipe_and_frame, tmp_path):
    pipe, _ = pipe_and_frame
    model = nt.load(pipe.save(tmp_path / "model.nbtrain", run="mlp-1"))
    report = model.export(tmp_path / "served.pt2", format="torch.export")
    assert report.sample == "synthetic rows" and report.rows_checked == exporting.SAMPLE_ROWS
    assert report.max_abs_diff <= 1e-5


def test_an_export_that_strays_from_the_original_is_not_kept(pipe_and_frame, tmp_path, monkeypatch):
    pipe, _ = pipe_and_frame
    honest = exporting._RUNNERS["torch.export"]
    monkeypatch.setitem(exporting._RUNNERS, "torch.export", lambda path: (lambda *a: honest(path)(*a) + 1e-3))
    with pytest.raises(NbtrainError, match=r"The exported torch.export model differs from the original by up to "
                                           r"0.001 on \d+ rows \(allowed: 1e-05 \+ 0.0001 x \|original\|\); it was "
                                           r"not kept"):
        pipe.export(tmp_path / "model.pt2", format="torch.export")
    assert list(tmp_path.iterdir()) == []


def test_trees_and_unknown_formats_are_refused(pipe_and_frame, tmp_path):
    pipe, _ = pipe_and_frame
    baseline = next(r for r in pipe._runs() if r.kind == "baseline")
    with pytest.raises(ConfigError, match=rf"export\(\) is for networks; run '{baseline.name}' is a tree baseline "
                                          r"\(HistGradientBoostingClassifier\). Save it with save\(path\)"):
        pipe.export(tmp_path / "trees.onnx", run=baseline.name)
    with pytest.raises(ConfigError, match=r"format='pmml' is not an export format; use one of \['onnx', "
                                          r"'torch.export', 'torchscript'\]"):
        pipe.export(tmp_path / "model.pmml", format="pmml")
