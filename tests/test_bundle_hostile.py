"""nt.load runs no code from a bundle: crafted files are refused with a clear DataError, and what they
carry (a pickle that runs a command, a zip bomb, a foreign module) never runs. Each crafted file gets
correct sizes and checksums, as an attacker would write them: the checks must hold without them."""

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import nbtrain as nt
from nbtrain.errors import DataError

from trained import trained

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # baselines train here: one thread each on a shared CPU


class Payload:
    """A pickle that runs a shell command when it is loaded (what the issue's attack used)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A network bundle and a tree-baseline bundle of one small pipeline (saved before test())."""
    folder = tmp_path_factory.mktemp("hostile")
    with threadpool_limits(limits=1):  # the one_thread fixture does not reach module fixtures
        pipe, frame = trained(folder / "runs", baseline=True)
    network = pipe.save(folder / "network.nbtrain", run="mlp-1")
    trees = pipe.save(folder / "trees.nbtrain", run=next(r for r in pipe._runs() if r.kind == "baseline"))
    return network, trees, frame.loc[pipe.val.index]


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "code from the bundle ran"


def _members(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _crafted(path: Path, members: dict, manifest_changes: dict | None = None) -> Path:
    """A bundle of `members` whose manifest lists them with their true sizes and checksums."""
    return _write(path, {**members, "manifest.json": _manifest(members, manifest_changes)})


def _manifest(members: dict, changes: dict | None = None) -> str:
    manifest = json.loads(members["manifest.json"])
    manifest["members"] = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                           for name, data in members.items() if name != "manifest.json"}
    return json.dumps({**manifest, **(changes or {})})


def _write(path: Path, members: dict) -> Path:
    """Exactly these members, manifest first."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", members["manifest.json"])
        for name, data in members.items():
            if name != "manifest.json":
                archive.writestr(name, data)
    return path


# --- pickles ----------------------------------------------------------------------------------------


def test_a_version_1_bundle_with_a_pickle_payload_runs_nothing(bundles, tmp_path, marker):
    network, _, _ = bundles
    members = _members(network)
    members["preprocessor.pkl"] = pickle.dumps(Payload(marker))
    del members["preprocessor.skops"]
    crafted = _crafted(tmp_path / "v1.nbtrain", members, {"bundle_version": 1})
    with pytest.raises(DataError, match=r"bundle version 1, which stored its preprocessing as a pickle"):
        nt.load(crafted)
    crafted = _crafted(tmp_path / "v2.nbtrain", members)  # the same members under the current version
    with pytest.raises(DataError, match=r"its manifest lists the members \['preprocessor.pkl', 'sealed.npy', "
                                        r"'weights.pt'\]; a bundle of a network has \['preprocessor.skops'"):
        nt.load(crafted)


@pytest.mark.parametrize("member", ["preprocessor.skops", "weights.pt", "sealed.npy"])
def test_a_pickle_payload_in_place_of_any_member_runs_nothing(bundles, tmp_path, marker, member):
    network, _, _ = bundles
    members = _members(network)
    members[member] = pickle.dumps(Payload(marker))
    with pytest.raises(DataError, match=rf"its ({member}|preprocessing) (is damaged|is not a state_dict)") as caught:
        nt.load(_crafted(tmp_path / "p.nbtrain", members))
    assert "weights_only=False" not in str(caught.value)


def test_a_skops_file_naming_a_foreign_callable_is_refused(bundles, tmp_path, marker):
    """skops' own format, crafted to name subprocess.Popen where nbtrain's ColumnPlan was."""
    network, _, _ = bundles
    members = _members(network)
    inner = _members_of(members["preprocessor.skops"])
    schema = inner["schema.json"].decode()
    assert '"nbtrain.data.clean"' in schema
    inner["schema.json"] = schema.replace('"nbtrain.data.clean"', '"subprocess"').replace('"ColumnPlan"', '"Popen"')
    members["preprocessor.skops"] = _zip_bytes(inner)
    with pytest.raises(DataError, match=r"its preprocessing names 1 type\(s\) nbtrain does not load from a file alone: "
                                        r"\['subprocess.Popen'\]. Loading them could run code.*trust=True"):
        nt.load(_crafted(tmp_path / "popen.nbtrain", members))


def _members_of(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip_bytes(members: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


# --- sizes and names --------------------------------------------------------------------------------

# Load a bundle in a fresh process and report the outcome and the peak memory (RSS) it reached.
_LOAD_AND_MEASURE = """
import json, resource, sys
import nbtrain as nt
from nbtrain.errors import DataError
try:
    nt.load(sys.argv[1])
    outcome = "loaded"
except DataError as exc:
    outcome = str(exc)
print(json.dumps({"outcome": outcome, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_BOMB_MIB = 1536  # the size of the zip bomb the issue reports


def _with_bomb(source: Path, path: Path, name: str, listed: bool) -> Path:
    """`source`'s members plus `name`: 1.5 GiB of zeros in ~1.5 MB, listed in the manifest or not."""
    members = _members(source)
    manifest = json.loads(members.pop("manifest.json"))
    digest, zeros = hashlib.sha256(), bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open(name, "w", force_zip64=True) as bomb:
            for _ in range(_BOMB_MIB):
                bomb.write(zeros)
                digest.update(zeros)
        if listed:
            manifest["members"][name] = {"bytes": _BOMB_MIB << 20, "sha256": digest.hexdigest()}
        for member, data in members.items():
            if not (listed and member == name):
                archive.writestr(member, data)
        archive.writestr("manifest.json", json.dumps(manifest))
    assert path.stat().st_size < 16 << 20  # a hundredth of what it unpacks to
    return path


def _load_in_child(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _LOAD_AND_MEASURE, str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def reference_peak(bundles):
    """The peak memory of a fresh process loading the plain bundle: what the bombs are measured against."""
    result = _load_in_child(bundles[0])
    assert result["outcome"] == "loaded"
    return result["peak_mib"]


@pytest.mark.slow
def test_a_zip_bomb_is_refused_before_it_is_unpacked(bundles, tmp_path, reference_peak):
    network, _, _ = bundles
    result = _load_in_child(_with_bomb(network, tmp_path / "bomb.nbtrain", "weights.pt", listed=True))
    assert "its member 'weights.pt' unpacks to 1,610,612,736 bytes, more than nbtrain unpacks from one bundle " \
           "(1,073,741,824 bytes, max_bytes=)" in result["outcome"]
    assert "zip bomb" in result["outcome"]
    assert result["peak_mib"] < reference_peak + 256  # unpacking it would have taken 1,536 MiB more


@pytest.mark.slow
def test_a_member_the_manifest_does_not_list_is_never_read(bundles, tmp_path, reference_peak):
    network, _, _ = bundles
    result = _load_in_child(_with_bomb(network, tmp_path / "extra.nbtrain", "notes.bin", listed=False))
    assert result["outcome"] == "loaded"
    assert result["peak_mib"] < reference_peak + 256


def test_a_member_larger_than_the_manifest_says_is_refused(bundles, tmp_path):
    network, _, _ = bundles
    members = _members(network)
    manifest = json.loads(_manifest(members))
    manifest["members"]["weights.pt"]["bytes"] = 10  # the real member is larger
    with pytest.raises(DataError, match=r"its member 'weights.pt' unpacks to \d+ bytes, but its manifest says 10"):
        nt.load(_write(tmp_path / "lie.nbtrain", {**members, "manifest.json": json.dumps(manifest)}))


def test_a_second_manifest_is_refused(bundles, tmp_path):
    network, _, _ = bundles
    members = _members(network)
    path = tmp_path / "two.nbtrain"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("manifest.json", json.dumps({**json.loads(members["manifest.json"]), "task": "regression"}))
    with pytest.raises(DataError, match=r"holds more than one member named \['manifest.json'\]: nbtrain never writes "
                                        r"such a file, so it was crafted or damaged"):
        nt.load(path)


def test_max_bytes_bounds_what_is_unpacked(bundles):
    network, _, rows = bundles
    total = sum(json.loads(_members(network)["manifest.json"])["members"][n]["bytes"]
                for n in ("sealed.npy", "weights.pt", "preprocessor.skops"))
    with pytest.raises(DataError, match=r"more than nbtrain unpacks from one bundle \(1,000 bytes, max_bytes=\)"):
        nt.load(network, max_bytes=1000)
    assert len(nt.load(network, max_bytes=total + (1 << 20)).predict(rows)) == len(rows)  # + the manifest


# --- the model class ---------------------------------------------------------------------------------

EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).touch()  # importing this module runs code

import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(5, 3)
"""


def test_a_model_class_from_outside_nbtrain_is_not_imported(bundles, tmp_path, monkeypatch):
    network, _, _ = bundles
    ran = tmp_path / "imported"
    (tmp_path / "evil_models.py").write_text(textwrap.dedent(EVIL_MODULE.format(marker=str(ran))))
    monkeypatch.syspath_prepend(str(tmp_path))
    members = _members(network)
    model = {"module": "evil_models", "qualname": "Net", "config": None}
    crafted = _crafted(tmp_path / "foreign.nbtrain", members, {"model": model})
    with pytest.raises(DataError, match=r"needs the model class 'evil_models.Net', from outside nbtrain. Importing its "
                                        r"module would run that module's code, so nbtrain does not do it"):
        nt.load(crafted)
    assert not ran.exists()
    with pytest.raises(DataError, match=r"the saved weights do not fit evil_models.Net"):
        nt.load(crafted, trust=True)  # trusted: imported (the user said so), then checked like any other
    assert ran.exists()


@pytest.mark.parametrize("qualname", ["os.system", "torch.load", "Path.unlink"])
def test_a_qualname_cannot_reach_a_function_through_an_nbtrain_module(bundles, tmp_path, marker, qualname):
    network, _, _ = bundles
    model = {"module": "nbtrain.files", "qualname": qualname, "config": {"command": f"touch {marker}"}}
    with pytest.raises(DataError, match=rf"needs the model class 'nbtrain.files.{qualname}', but module "
                                        r"'nbtrain.files' has no such torch.nn.Module"):
        nt.load(_crafted(tmp_path / "reach.nbtrain", _members(network), {"model": model}))


def _state_bytes(state) -> bytes:
    out = io.BytesIO()
    torch.save(state, out)
    return out.getvalue()


@pytest.mark.parametrize("weights", ["garbage", "a list", "an object", "wrong shapes"])
def test_bad_weights_are_a_data_error_without_torchs_advice(bundles, tmp_path, marker, weights):
    network, _, _ = bundles
    members = _members(network)
    members["weights.pt"] = {
        "garbage": lambda: np.random.default_rng(0).bytes(4096),
        "a list": lambda: _state_bytes([torch.zeros(3)]),
        "an object": lambda: _state_bytes({"layer": Payload(marker)}),
        "wrong shapes": lambda: _state_bytes({k: torch.zeros(2, 2) for k in torch.load(
            io.BytesIO(members["weights.pt"]), weights_only=True)}),
    }[weights]()
    with pytest.raises(DataError, match=r"weights") as caught:
        nt.load(_crafted(tmp_path / "w.nbtrain", members))
    assert "weights_only=False" not in str(caught.value)
    assert "Save the bundle again" in str(caught.value)


def test_a_config_that_would_allocate_terabytes_is_refused_before_allocating(bundles, tmp_path):
    network, _, _ = bundles
    members = _members(network)
    model = json.loads(members["manifest.json"])["model"]
    model["config"] = {**model["config"], "hidden": [10 ** 7, 10 ** 7]}  # 4e14 bytes of weights
    with pytest.raises(DataError, match=r"the saved weights do not fit nbtrain.models.tabular.MLP built from the "
                                        r"bundle's config"):
        nt.load(_crafted(tmp_path / "huge.nbtrain", members, {"model": model}))


# --- malformed manifests -----------------------------------------------------------------------------

MALFORMED = {
    "task": ("task", 5),
    "classes": ("classes", "abc"),
    "target_scale": ("target_scale", [1.0]),
    "run": ("run", "mlp-1"),
    "model": ("model", {"module": ["nbtrain"], "qualname": "MLP"}),
    "schema": ("schema", None),
    "info": ("info", []),
    "members": ("members", {"weights.pt": "abc"}),
}


@pytest.mark.parametrize("key", list(MALFORMED))
def test_every_malformed_manifest_field_is_a_data_error_naming_it(bundles, tmp_path, key):
    network, _, _ = bundles
    members = _members(network)
    manifest = json.loads(_manifest(members))
    field, value = MALFORMED[key]
    crafted = _write(tmp_path / "m.nbtrain", {**members, "manifest.json": json.dumps({**manifest, field: value})})
    with pytest.raises(DataError, match=rf"its manifest is malformed: '{field}' should be"):
        nt.load(crafted)


def test_a_deeply_nested_manifest_is_a_data_error(bundles, tmp_path):
    network, _, _ = bundles
    members = _members(network)
    nested = "[" * 100_000 + "]" * 100_000
    with pytest.raises(DataError, match=r"its manifest.json is damaged"):
        nt.load(_write(tmp_path / "deep.nbtrain", {**members, "manifest.json": '{"format": ' + nested + "}"}))


def test_a_malformed_schema_is_a_data_error(bundles, tmp_path):
    network, _, _ = bundles
    members = _members(network)
    schema = json.loads(members["manifest.json"])["schema"]
    schema["columns"][0] = {"name": "x1", "kind": "numeric", "levels": 3, "not_a_field": True}
    with pytest.raises(DataError, match=r"its manifest's feature schema is malformed"):
        nt.load(_crafted(tmp_path / "s.nbtrain", members, {"schema": schema}))


def test_the_tree_bundle_holds_no_pickle(bundles):
    _, trees, rows = bundles
    names = set(_members(trees))
    assert names == {"manifest.json", "sealed.npy", "baseline.skops"}
    assert len(nt.load(trees).predict(rows)) == len(rows)
