"""Bundles: one file holding a trained model and all it needs to predict, without the training data.

`pipe.save("penguins.nbtrain")` writes one; `nbtrain.load("penguins.nbtrain")` reads it back as a
Predictor in any process. The file is a zip archive (written atomically: a temp file, then a rename):

    manifest.json      format and bundle version; nbtrain, Python and package versions; task, target,
                       class labels, target scale; the run (name, kind, validation scores); the
                       network's class (module + qualname) and its `config`; the feature schema
                       (columns, kinds, dtypes, labels); the dataset fingerprint and split id; and the
                       SHA-256 of every other member, so a damaged file is caught before it is used
    weights.pt         the network's best weights: a state_dict (read back with weights_only=True)
    preprocessor.pkl   the fitted scikit-learn preprocessing (pickle)
    baseline.pkl       for a tree-baseline run, the fitted trees instead (pickle)
    sealed.npy         fingerprints of the test rows still sealed when it was saved (uint64)

A network is never pickled: it is rebuilt from its class's import path and `config` (nbtrain's MLP
keeps its constructor's keywords there) and given the saved weights, so a class that is missing
at load time is an error that names it. A custom class needs a `config` dict of its constructor's
keywords, or a constructor with no required arguments. The pickled parts are nbtrain's and
scikit-learn's own objects (or a scaler you passed); as with any pickle, load only bundles you trust.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import json
import pickle
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

import nbtrain
from nbtrain.data.newdata import Schema
from nbtrain.errors import ConfigError, DataError, NbtrainWarning
from nbtrain.files import atomic_write
from nbtrain.predictor import Predictor, package_versions

FORMAT = "nbtrain-bundle"
VERSION = 1            # what this nbtrain writes and the newest it reads
OLDEST_READABLE = 1    # bump when a format change makes older bundles unreadable
SUFFIX = ".nbtrain"
_ZIP_MAGIC = b"PK\x03\x04"


def save_bundle(predictor: Predictor, path) -> Path:
    """Write `predictor` to `path` (one file; the `.nbtrain` suffix is the convention). Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a folder; save() writes one file. Give a file path such as "
                          f"{str(path / ('model' + SUFFIX))!r}.")
    members = _members(predictor)
    manifest = _manifest(predictor, members)

    def write(out) -> None:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("manifest.json", json.dumps(manifest, indent=1, default=_json_value))
            for name, data in members.items():
                archive.writestr(name, data)
    atomic_write(path, write, doing="writing the bundle")  # a crash never leaves half a bundle
    return path


def _json_value(value):
    """numpy scalars (class labels, counts) as Python values; anything else JSON cannot hold is an error."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a {type(value).__name__} cannot be written to the bundle's manifest: {value!r}")


def _members(predictor: Predictor) -> dict[str, bytes]:
    sealed = io.BytesIO()
    np.save(sealed, np.asarray(predictor.sealed, dtype=np.uint64), allow_pickle=False)
    members = {"sealed.npy": sealed.getvalue()}
    if predictor.is_network:
        weights = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in predictor.model.state_dict().items()}, weights)
        members["weights.pt"] = weights.getvalue()
        members["preprocessor.pkl"] = pickle.dumps(predictor.preprocessor, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        members["baseline.pkl"] = pickle.dumps(predictor.model, protocol=pickle.HIGHEST_PROTOCOL)
    return members


def _manifest(predictor: Predictor, members: dict) -> dict:
    info = {k: v for k, v in predictor.info.items() if k not in ("source", "path")}
    info["packages"] = package_versions(predictor.model)
    return {"format": FORMAT, "bundle_version": VERSION, "task": predictor.task, "target": predictor.target,
            "classes": predictor.classes, "target_scale": list(predictor.target_scale), "run": predictor.run,
            "model": model_spec(predictor.model) if predictor.is_network else None,
            "schema": predictor.schema.to_dict(), "info": info,
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}}


def model_spec(model: nn.Module) -> dict:
    """How to rebuild the network: its class's import path and constructor keywords, checked now so
    that a model that could not be rebuilt fails at save time, not on someone else's machine."""
    cls = type(model)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise ConfigError(f"The model class {name!r} is defined inside a function, so it cannot be imported when "
                          "the bundle is loaded. Define it at the top level of a module.")
    config = getattr(model, "config", None)
    try:
        json.dumps(config)
        inspect.signature(cls).bind(**(config or {}))
    except TypeError as exc:
        raise ConfigError(f"The model class {name!r} cannot be rebuilt when the bundle is loaded: {exc}. Give it a "
                          "`config` attribute holding its constructor's keywords as plain values (nbtrain.models.MLP "
                          "does: self.config = {...}), or defaults for every constructor argument.") from exc
    if cls.__module__ == "__main__":
        warnings.warn(f"The model class {cls.__qualname__!r} is defined in __main__ (this notebook or script): the "
                      "bundle stores its import path, so nbtrain.load() elsewhere needs that class defined first. "
                      "Move it into a module to share the bundle.", NbtrainWarning, stacklevel=4)
    return {"module": cls.__module__, "qualname": cls.__qualname__, "config": config}


def load(path) -> Predictor:
    """Read a bundle written by `pipe.save(path)`: a Predictor with `predict(new_data)`.

    Raises DataError for a file that is missing, foreign, damaged or truncated, written by an
    incompatible nbtrain, or whose model class cannot be imported here (the error names it).
    """
    path = Path(path)
    members = _read_members(path)
    manifest = _read_manifest(members, path)
    _check_sums(members, manifest, path)
    _warn_versions(manifest["info"].get("packages", {}), path)
    if manifest["model"] is not None:
        model = rebuild_model(manifest["model"], members["weights.pt"], path)
        preprocessor = _unpickle(members["preprocessor.pkl"], "preprocessing", path)
    else:
        model, preprocessor = _unpickle(members["baseline.pkl"], "tree baseline", path), None
    sealed = np.load(io.BytesIO(members["sealed.npy"]), allow_pickle=False)
    return Predictor(schema=Schema.from_dict(manifest["schema"]), task=manifest["task"], target=manifest["target"],
                     classes=manifest["classes"], target_scale=tuple(manifest["target_scale"]), run=manifest["run"],
                     model=model, preprocessor=preprocessor, sealed=sealed,
                     info={**manifest["info"], "source": "bundle", "path": str(path)})


def _read_members(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder; a bundle is one file written by pipe.save(path).")
    if not path.is_file():
        raise DataError(f"No bundle at {str(path)!r}. Pass the path of a file written by pipe.save(path).")
    with open(path, "rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:
        raise DataError(f"{str(path)!r} is not an nbtrain bundle (it is not a zip archive: it starts with {head!r}). "
                        "Pass the path of a file written by pipe.save(path).")
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist()}
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{str(path)!r} is a damaged or truncated bundle ({exc}). Copy it again, or save it again "
                        "from the pipeline with pipe.save(path).") from exc


def _read_manifest(members: dict, path: Path) -> dict:
    if "manifest.json" not in members:
        raise DataError(f"{str(path)!r} is a zip archive but not an nbtrain bundle (it has no manifest.json). Pass "
                        "the path of a file written by pipe.save(path).")
    try:
        manifest = json.loads(members["manifest.json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{str(path)!r}: its manifest.json is damaged ({exc}). Save the bundle again.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{str(path)!r} is a zip archive with a manifest, but not an nbtrain bundle (format "
                        f"{manifest.get('format') if isinstance(manifest, dict) else None!r}).")
    version = manifest.get("bundle_version")
    made_by = manifest.get("info", {}).get("packages", {}).get("nbtrain", "?")
    if not isinstance(version, int) or version > VERSION:
        raise DataError(f"{str(path)!r} was written by nbtrain {made_by} in bundle version {version!r}; this nbtrain "
                        f"({nbtrain.__version__}) reads versions {OLDEST_READABLE} to {VERSION}. Upgrade nbtrain "
                        "(pip install -U nbtrain) to load it.")
    if version < OLDEST_READABLE:
        raise DataError(f"{str(path)!r} was written by nbtrain {made_by} in bundle version {version}, which this "
                        f"nbtrain ({nbtrain.__version__}) no longer reads (oldest: {OLDEST_READABLE}). Load it with "
                        f"nbtrain {made_by} and save it again, or retrain.")
    return manifest


def _check_sums(members: dict, manifest: dict, path: Path) -> None:
    for name, expected in manifest.get("sha256", {}).items():
        if name not in members or hashlib.sha256(members[name]).hexdigest() != expected:
            what = "is missing" if name not in members else "does not match its checksum"
            raise DataError(f"{str(path)!r} is damaged: its member {name!r} {what}. Copy it again, or save it "
                            "again from the pipeline.")


def _warn_versions(saved: dict, path: Path) -> None:
    """Pickled scikit-learn objects and tree models may not behave the same across versions."""
    here = package_versions()
    differ = [f"{name} {saved[name]} (here {here[name]})" for name in saved
              if name in here and name not in ("nbtrain", "python") and here[name] != saved[name]]
    if differ:
        warnings.warn(f"{str(path)!r} was made with {', '.join(differ)}. Its preprocessing and weights load, but "
                      "predictions may differ slightly; install the versions it was made with to be sure.",
                      NbtrainWarning, stacklevel=3)


def rebuild_model(spec: dict, weights: bytes, path: Path) -> nn.Module:
    """The network, rebuilt from its class's import path and config, with the saved weights, in eval mode."""
    cls = _import_class(spec["module"], spec["qualname"], path)
    model = cls(**spec["config"]) if spec.get("config") is not None else cls()
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{str(path)!r}: the saved weights do not fit {spec['module']}.{spec['qualname']} as it is "
                        f"defined now ({exc}). Use the version of the class the bundle was saved with.") from exc
    return model.eval()


def _import_class(module_name: str, qualname: str, path: Path) -> type:
    name = f"{module_name}.{qualname}"
    try:
        found = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(f"{str(path)!r} needs the model class {name!r}, but its module cannot be imported here "
                        f"({exc}). Install or put on sys.path the module {module_name!r} that defines it, then load "
                        "again.") from exc
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        where = ("define or import the class in this session (notebook or script) before nbtrain.load()"
                 if module_name == "__main__" else f"use a version of {module_name!r} that defines it")
        raise DataError(f"{str(path)!r} needs the model class {name!r}, but module {module_name!r} has no such "
                        f"torch.nn.Module. To load this bundle, {where}.")
    return found


def _unpickle(data: bytes, what: str, path: Path):
    try:
        return pickle.loads(data)
    except (ModuleNotFoundError, AttributeError) as exc:  # a class the pickle names is not importable here
        raise DataError(f"{str(path)!r}: its {what} needs {getattr(exc, 'name', None) or exc}, which cannot be "
                        f"imported here ({exc}). Install the package that provides it, then load again.") from exc
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{str(path)!r}: its {what} is damaged ({exc}). Save the bundle again.") from exc
