"""pipe.save / nt.load: one file that predicts in another process, and clear errors for bad files."""

import importlib
import json
import os
import shutil
import sys
import textwrap
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainWarning

from bundle_files import predicted_elsewhere
from trained import sealed_rows, trained

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pipeline with a network and a baseline run, and the network saved before test()."""
    folder = tmp_path_factory.mktemp("bundle")
    pipe, frame = trained(folder / "runs", baseline=True)
    network = next(r for r in pipe._runs() if r.kind == "nn")
    return pipe, frame, pipe.save(folder / "model.nbtrain", run=network.name)


def test_a_bundle_predicts_in_a_fresh_process_without_the_training_data(tmp_path):
    pipe, frame = trained(tmp_path / "runs")
    rows = frame.loc[pipe.val.index]
    expected = pipe.predict(rows)
    path = pipe.save(tmp_path / "shared" / "model.nbtrain")
    shutil.rmtree(tmp_path / "runs")  # no ledger, no checkpoints: the bundle must be enough
    predicted, shown = predicted_elsewhere(path, rows.drop(columns="label"), tmp_path)
    pd.testing.assert_frame_equal(predicted, expected)
    assert "Run 'mlp-1' (MLP) predicting 'label': multiclass over ['a', 'b', 'c']." in shown


def test_the_loaded_model_reads_well(saved):
    _, _, path = saved
    model = nt.load(path)
    text = repr(model)
    assert text.startswith("nbtrain model\n=============\nRun 'mlp-1' (MLP) predicting 'label'")
    assert "Reads 3 columns; ignores ['label']." in text
    assert "Test split: sealed; its 90 rows are refused until pipe.test()." in text
    assert "predict(new_data) returns 'prediction' and 'probability_a', 'probability_b', 'probability_c'." in text
    assert "<h4>nbtrain model</h4>" in model._repr_html_()


def test_a_tree_baseline_run_round_trips(saved, tmp_path):
    pipe, frame, _ = saved
    baseline = next(r for r in pipe._runs() if r.kind == "baseline")
    model = nt.load(pipe.save(tmp_path / "trees.nbtrain", run=baseline))
    rows = frame.loc[pipe.val.index]
    pd.testing.assert_frame_equal(model.predict(rows), pipe.predict(rows, run=baseline))


def test_a_bundle_saved_before_test_keeps_the_test_rows_sealed(saved):
    pipe, frame, path = saved
    with pytest.raises(LeakageError, match=r"the test split of the pipeline this model was saved from; it was saved "
                                           r"before pipe.test\(\), so they stay sealed in it"):
        nt.load(path).predict(frame.loc[sealed_rows(pipe)[:3]])


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_foreign_files_are_refused(saved, tmp_path):
    pipe, _, _ = saved
    text = tmp_path / "notes.nbtrain"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"is not an nbtrain bundle \(it is not a zip archive: it starts with b'hell'\)"):
        nt.load(text)
    checkpoint = next(r for r in pipe._runs() if r.kind == "nn").checkpoint  # torch files are zip archives too
    with pytest.raises(DataError, match=r"is a zip archive but not an nbtrain bundle \(it has no manifest.json\)"):
        nt.load(checkpoint)
    other = _zip(tmp_path / "other.zip", {"manifest.json": json.dumps({"format": "something-else"})})
    with pytest.raises(DataError, match=r"is a zip archive with a manifest, but not an nbtrain bundle \(format "
                                        r"'something-else'\)"):
        nt.load(other)
    with pytest.raises(DataError, match=r"No bundle at '.*missing.nbtrain'"):
        nt.load(tmp_path / "missing.nbtrain")


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_damaged_bundles_are_refused(saved, tmp_path, damage):
    _, _, path = saved
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    broken = tmp_path / "broken.nbtrain"
    broken.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"is (a )?damaged"):
        nt.load(broken)


def test_a_bundle_from_an_incompatible_version_says_so(saved, tmp_path):
    _, _, path = saved
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members["manifest.json"])
    members["manifest.json"] = json.dumps({**manifest, "bundle_version": 99})
    newer = _zip(tmp_path / "newer.nbtrain", members)
    with pytest.raises(DataError, match=r"was written by nbtrain 0.1.0 in bundle version 99; this nbtrain \(0.1.0\) "
                                        r"reads versions 2 to 3. Upgrade nbtrain"):
        nt.load(newer)
    members["manifest.json"] = json.dumps({**manifest, "bundle_version": 1})
    older = _zip(tmp_path / "older.nbtrain", members)
    with pytest.raises(DataError, match=r"in bundle version 1, which stored its preprocessing as a pickle: loading a "
                                        r"pickle can run any code, so this nbtrain \(0.1.0\) no longer reads it"):
        nt.load(older)


CUSTOM = """
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, n_inputs, n_outputs, width=8):
        super().__init__()
        self.config = {"n_inputs": n_inputs, "n_outputs": n_outputs, "width": width}
        self.layers = nn.Sequential(nn.Linear(n_inputs, width), nn.ReLU(), nn.Linear(width, n_outputs))

    def forward(self, x):
        return self.layers(x)


class NoConfig(TinyNet):
    def __init__(self, n_inputs, n_outputs):
        super().__init__(n_inputs, n_outputs)
        del self.config
"""


def test_a_custom_model_class_loads_only_with_trust_and_is_named_when_missing(tmp_path, monkeypatch):
    (tmp_path / "tinynets.py").write_text(textwrap.dedent(CUSTOM))
    monkeypatch.syspath_prepend(str(tmp_path))
    tinynets = importlib.import_module("tinynets")
    pipe, frame = trained(tmp_path / "runs", model=tinynets.TinyNet(5, 3))  # make_frame: 5 inputs
    rows = frame.loc[pipe.val.index]
    with pytest.warns(NbtrainWarning, match=r"'tinynets.TinyNet' comes from outside nbtrain.*trust=True"):
        path = pipe.save(tmp_path / "tiny.nbtrain")
    with pytest.raises(DataError, match=r"needs the model class 'tinynets.TinyNet', from outside nbtrain. Importing its "
                                        r"module would run that module's code.*nbtrain.load\(path, trust=True\)"):
        nt.load(path)
    pd.testing.assert_frame_equal(nt.load(path, trust=True).predict(rows), pipe.predict(rows))
    monkeypatch.delitem(sys.modules, "tinynets")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    importlib.invalidate_caches()
    with pytest.raises(DataError, match=r"needs the model class 'tinynets.TinyNet', but its module cannot be imported "
                                        r"here \(No module named 'tinynets'\)"):
        nt.load(path, trust=True)


def test_a_model_class_that_cannot_be_rebuilt_is_refused_at_save_time(tmp_path, monkeypatch):
    (tmp_path / "tinynets2.py").write_text(textwrap.dedent(CUSTOM))
    monkeypatch.syspath_prepend(str(tmp_path))
    tinynets = importlib.import_module("tinynets2")
    pipe, _ = trained(tmp_path / "runs", model=tinynets.NoConfig(5, 3))
    with pytest.raises(ConfigError, match=r"The model class 'tinynets2.NoConfig' cannot be rebuilt when the bundle is "
                                          r"loaded: missing a required argument: 'n_inputs'. Give it a `config`"):
        pipe.save(tmp_path / "no.nbtrain")
    assert not (tmp_path / "no.nbtrain").exists()
    with pytest.raises(ConfigError, match=r"is a folder; save\(\) writes one file"):
        pipe.save(tmp_path)


@pytest.mark.parametrize("mask", [0o002, 0o077])
def test_a_bundle_follows_the_umask(saved, tmp_path, mask):
    """A teammate sharing the work folder can read a bundle when the umask lets them (it was 0600 always)."""
    pipe, _, _ = saved
    old = os.umask(mask)
    try:
        path = pipe.save(tmp_path / "shared.nbtrain", run="mlp-1")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
