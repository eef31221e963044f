"""Helpers of the bundle tests: a bundle's members, a crafted copy of it (sums kept true, as an attacker
would keep them), and a bundle loaded and used in a fresh Python process."""

import copy
import hashlib
import json
import subprocess
import sys
import zipfile

import pandas as pd

LOAD_AND_PREDICT = """
import sys
import warnings
import pandas as pd
import nbtrain as nt
model = nt.load(sys.argv[1])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # cold starts are warned about; the tests compare the frames
    model.predict(pd.read_pickle(sys.argv[2])).to_pickle(sys.argv[3])
print(repr(model))
"""


def members_of(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rebuilt(path, out, change=lambda m: m, add=None, drop=()):
    """A copy of a bundle with members added, replaced or dropped and the manifest changed; sums kept true,
    as a crafted file would have them."""
    members = members_of(path)
    manifest = json.loads(members.pop("manifest.json"))
    members = {k: v for k, v in members.items() if k not in drop} | (add or {})
    manifest["members"] = {k: {"bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in members.items()}
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("manifest.json", json.dumps(change(manifest)))
        for name, data in members.items():
            archive.writestr(name, data)
    return out


def setting(*section, **fields):
    """A manifest change for rebuilt(): `fields` set inside the nested `section`, e.g.
    setting("model", "config", dim=8) or setting(kind="audio") at the top."""
    def change(manifest: dict) -> dict:
        manifest = copy.deepcopy(manifest)
        inner = manifest
        for key in section:
            inner = inner[key]
        inner.update(fields)
        return manifest
    return change


def predicted_elsewhere(path, rows, folder, env=None):
    """(predictions, repr) of the bundle at `path` loaded in a fresh Python process, on `rows`."""
    rows.to_pickle(folder / "rows.pkl")
    done = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(path), str(folder / "rows.pkl"),
                           str(folder / "predicted.pkl")], cwd=folder, capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr
    return pd.read_pickle(folder / "predicted.pkl"), done.stdout
