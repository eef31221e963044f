"""Bundles: one file holding a trained model and all it needs to predict, without the training data.

`pipe.save("penguins.nbtrain")` writes one; `nbtrain.load("penguins.nbtrain")` reads it back as a
Predictor in any process. The file is a zip archive (written atomically: a temp file, then a rename):

    manifest.json        format and bundle version; nbtrain, Python and package versions; task, target,
                         class labels, target scale; the run (name, kind, validation scores); the
                         network's class (module + qualname) and its `config`; the feature schema
                         (columns, kinds, dtypes, labels); the dataset fingerprint and split id; the
                         evidence behind the numbers (nbtrain.evidence: the split, preprocessing on
                         train rows, runs compared on validation, the test split's looks; version 3
                         on); and the size and SHA-256 of every other member
    weights.pt           the network's best weights: a state_dict, read back with torch's weights-only loader
    preprocessor.skops   the fitted scikit-learn preprocessing, in skops' format (no pickle)
    baseline.skops       for a tree-baseline run, the fitted trees instead
    sealed.npy           keys of the test rows still sealed when it was saved (uint64, no pickle)

Loading runs no code from the file. That is the trust model: a bundle is data.
- Nothing is unpickled. The preprocessing and trees are read with skops (skops.io), which rebuilds
  objects from a JSON description without calling what the file names; every type the description
  names must be one nbtrain knows: classes of scikit-learn, NumPy, SciPy, LightGBM, XGBoost and
  nbtrain, and a short list of functions (nbtrain's date conversion, for example). Anything else
  (a scaler class of your own, say) loads only with `nbtrain.load(path, trust=True)`.
- The network is rebuilt from its class's import path and `config` and given the saved weights,
  read with torch's weights-only loader. The class must come from nbtrain, unless `trust=True`:
  importing a module runs its code. Its shapes are checked against the weights on the meta device
  before anything is allocated.
- Only the members the manifest lists are read, each no larger than it says, all together no more
  than `max_bytes` (1 GiB by default): a zip bomb is refused before it is unpacked. Two members with
  one name (two manifests, say) are refused.
- The SHA-256 sums catch a damaged copy. They do not prove who made the file (anyone can recompute
  them), and they need not: what a bundle can do when loaded is bounded by the rules above.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import io
import json
import pickle
import warnings
import zipfile
import zlib
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

import nbtrain
from nbtrain import bundle_safety
from nbtrain.errors import ConfigError, DataError, NbtrainWarning
from nbtrain.files import atomic_write

if TYPE_CHECKING:
    from nbtrain.predictor import Predictor

FORMAT = "nbtrain-bundle"
VERSION = 3            # what this nbtrain writes and the newest it reads (3: the evidence behind the numbers)
OLDEST_READABLE = 2    # version 1 held pickles, which can run code when loaded: no longer read
SUFFIX = ".nbtrain"
MAX_BYTES = 1 << 30    # what load() unpacks at most, all members together, unless told otherwise
_ZIP_MAGIC = b"PK\x03\x04"
_MANIFEST = "manifest.json"
# the packages whose versions a manifest records (a bundle made with others warns when loaded)
PACKAGES = ("torch", "scikit-learn", "pandas", "numpy", "lightgbm", "xgboost")
TABLE_READER = "nbtrain.predictor"  # the reader of tables' bundles; other kinds': bundle_safety.KIND_READERS


def check_target(path) -> Path:
    """The bundle's path; ConfigError where it is a folder."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a folder; save() writes one file. Give a file path such as "
                          f"{str(path / ('model' + SUFFIX))!r}.")
    return path


def write_bundle(path, manifest: dict, members: dict[str, bytes]) -> Path:
    """One bundle file from its manifest's fields and its members (the sizes and checksums are added here).
    Every kind's bundle goes through it (nbtrain.kinds.text.bundle too)."""
    path = check_target(path)
    manifest = {"format": FORMAT, "bundle_version": VERSION, **manifest,
                "members": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                            for name, data in members.items()}}

    def write(out) -> None:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(_MANIFEST, json.dumps(manifest, indent=1, default=_json_value))
            for name, data in members.items():
                archive.writestr(name, data)
    atomic_write(path, write, doing="writing the bundle")  # a crash never leaves half a bundle
    return path


def _json_value(value):
    """numpy scalars (class labels, counts) as Python values; anything else JSON cannot hold is an error."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a {type(value).__name__} cannot be written to the bundle's manifest: {value!r}")


def package_versions(model=None) -> dict:
    """Versions of nbtrain, Python and the packages the model's pieces come from."""
    versions = {"nbtrain": nbtrain.__version__, "python": platform.python_version()}
    for name in PACKAGES:
        if name in ("lightgbm", "xgboost") and getattr(model, "library", None) != name:
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "xgboost":  # the CPU-only wheel is named differently
                versions[name] = _version_or_none("xgboost-cpu")
    return {k: v for k, v in versions.items() if v is not None}


def _version_or_none(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


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
                      "bundle stores its import path, so nbtrain.load() elsewhere needs that class defined first, "
                      "and trust=True. Move it into a module to share the bundle.", NbtrainWarning, stacklevel=4)
    elif not bundle_safety.from_nbtrain(cls.__module__):
        warnings.warn(f"The model class {name!r} comes from outside nbtrain: loading the bundle imports its module, "
                      "which runs that module's code, so nbtrain.load() asks for trust=True.", NbtrainWarning,
                      stacklevel=4)
    return {"module": cls.__module__, "qualname": cls.__qualname__, "config": config}


def load(path, *, trust: bool = False, max_bytes: int = MAX_BYTES) -> Predictor:
    """Read a bundle written by `pipe.save(path)`: a Predictor with `predict(new_data)`.

    Loading runs no code from the file (the module docstring states the trust model). `trust=True`
    also imports a model class from outside nbtrain and loads types nbtrain does not know in the
    preprocessing: only for a bundle whose maker you trust. `max_bytes`: the most the members may
    unpack to, together.

    Raises DataError for a file that is missing, foreign, damaged, truncated or crafted, written by an
    incompatible nbtrain, too large, or whose model class cannot be imported here (the error names it).
    """
    path = Path(path)
    manifest, members = _read(path, max_bytes)
    _warn_versions(manifest["info"].get("packages", {}), path)
    # the kind was checked against the readers by bundle_safety.check_manifest; a reader is imported by name, so
    # this module imports no Predictor (nbtrain.predictor and the kinds' bundle modules import it)
    reader = importlib.import_module(bundle_safety.KIND_READERS.get(manifest.get("kind", "tabular"), TABLE_READER))
    return reader.load_bundle(manifest, members, path, trust=trust)


def _read(path: Path, max_bytes: int) -> tuple[dict, dict[str, bytes]]:
    """The checked manifest and the members it lists (nothing else is unpacked)."""
    _check_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            budget = bundle_safety.Budget(max_bytes, path)
            _refuse_repeated_names(archive, path)
            if _MANIFEST not in archive.namelist():
                raise DataError(f"{str(path)!r} is a zip archive but not an nbtrain bundle (it has no manifest.json). "
                                "Pass the path of a file written by pipe.save(path).")
            manifest = _read_manifest(budget.read(archive, archive.getinfo(_MANIFEST)), path)
            members = {name: budget.read(archive, _listed_member(archive, name, listed, path))
                       for name, listed in manifest["members"].items()}
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{str(path)!r} is a damaged or truncated bundle ({exc}). Copy it again, or save it again "
                        "from the pipeline with pipe.save(path).") from exc
    _check_sums(members, manifest, path)
    return manifest, members


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder; a bundle is one file written by pipe.save(path).")
    if not path.is_file():
        raise DataError(f"No bundle at {str(path)!r}. Pass the path of a file written by pipe.save(path).")
    with open(path, "rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:
        raise DataError(f"{str(path)!r} is not an nbtrain bundle (it is not a zip archive: it starts with {head!r}). "
                        "Pass the path of a file written by pipe.save(path).")


def _refuse_repeated_names(archive: zipfile.ZipFile, path: Path) -> None:
    """Two members of one name: which one a reader takes depends on the reader, so a checked manifest
    and the one used could differ. nbtrain never writes such a file."""
    names = archive.namelist()
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{str(path)!r} holds more than one member named {repeated}: nbtrain never writes such a "
                        "file, so it was crafted or damaged. Save the bundle again from the pipeline.")


def _listed_member(archive: zipfile.ZipFile, name: str, listed: dict, path: Path) -> zipfile.ZipInfo:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise DataError(f"{str(path)!r} is damaged: its member {name!r} is missing. Copy it again, or save it again "
                        "from the pipeline.") from None
    if info.file_size != listed["bytes"]:
        raise DataError(f"{str(path)!r} is damaged or crafted: its member {name!r} unpacks to {info.file_size} bytes, "
                        f"but its manifest says {listed['bytes']}. Save the bundle again from the pipeline.")
    return info


def _read_manifest(data: bytes, path: Path) -> dict:
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # a crafted file may nest deeply
        raise DataError(f"{str(path)!r}: its manifest.json is damaged ({exc}). Save the bundle again.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{str(path)!r} is a zip archive with a manifest, but not an nbtrain bundle (format "
                        f"{manifest.get('format') if isinstance(manifest, dict) else None!r}).")
    version = manifest.get("bundle_version")
    info = manifest.get("info")
    packages = info.get("packages") if isinstance(info, dict) else None
    made_by = packages.get("nbtrain", "?") if isinstance(packages, dict) else "?"
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise DataError(f"{str(path)!r} was written by nbtrain {made_by} in bundle version {version!r}; this nbtrain "
                        f"({nbtrain.__version__}) reads versions {OLDEST_READABLE} to {VERSION}. Upgrade nbtrain "
                        "(pip install -U nbtrain) to load it.")
    if version < OLDEST_READABLE:
        raise DataError(f"{str(path)!r} was written by nbtrain {made_by} in bundle version {version}, which stored its "
                        "preprocessing as a pickle: loading a pickle can run any code, so this nbtrain "
                        f"({nbtrain.__version__}) no longer reads it (oldest: {OLDEST_READABLE}). Save the model again "
                        "from its pipeline with this nbtrain, or retrain.")
    bundle_safety.check_manifest(manifest, path)
    return manifest


def _check_sums(members: dict, manifest: dict, path: Path) -> None:
    for name, listed in manifest["members"].items():
        if hashlib.sha256(members[name]).hexdigest() != listed["sha256"]:
            raise DataError(f"{str(path)!r} is damaged: its member {name!r} does not match its checksum. Copy it "
                            "again, or save it again from the pipeline.")


def _warn_versions(saved: dict, path: Path) -> None:
    """Fitted scikit-learn objects and tree models may not behave the same across versions."""
    here = package_versions()
    differ = [f"{name} {saved[name]} (here {here[name]})" for name in saved
              if name in here and name not in ("nbtrain", "python") and here[name] != saved[name]]
    if differ:
        warnings.warn(f"{str(path)!r} was made with {', '.join(differ)}. Its preprocessing and weights load, but "
                      "predictions may differ slightly; install the versions it was made with to be sure.",
                      NbtrainWarning, stacklevel=3)


def sealed_bytes(keys) -> bytes:
    """sealed.npy: the keys of the test rows still sealed, uint64, without pickle (read_sealed reads it)."""
    out = io.BytesIO()
    np.save(out, np.asarray(keys, dtype=np.uint64), allow_pickle=False)
    return out.getvalue()


def read_sealed(data: bytes, path: Path) -> np.ndarray:
    try:
        sealed = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{str(path)!r}: its sealed.npy is damaged ({exc}). Save the bundle again.") from exc
    if sealed.dtype != np.uint64 or sealed.ndim != 1:
        raise DataError(f"{str(path)!r}: its sealed.npy holds {sealed.dtype} values of shape {sealed.shape}, not the "
                        "uint64 row keys nbtrain writes. Save the bundle again.")
    return sealed


# --- the network --------------------------------------------------------------------------------


def weights_bytes(model: nn.Module) -> bytes:
    """weights.pt: the network's state_dict on the CPU (read_weights reads it with torch's weights-only loader)."""
    out = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out)
    return out.getvalue()


def rebuild_model(spec: dict, weights: bytes, path: Path, *, trust: bool = False) -> nn.Module:
    """The network, rebuilt from its class's import path and config, with the saved weights, in eval mode."""
    cls = _import_class(spec["module"], spec["qualname"], path, trust)
    state = read_weights(weights, path)
    name = f"{spec['module']}.{spec['qualname']}"
    if not trust:  # shapes first, on the meta device: a crafted config cannot make us allocate terabytes
        _check_shapes(_construct(cls, spec, name, path, meta=True), state, name, path)
    model = _construct(cls, spec, name, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{str(path)!r}: the saved weights do not fit {name} as it is defined now ({exc}). Use the "
                        "version of the class the bundle was saved with.") from exc
    return model.eval()


def _construct(cls: type, spec: dict, name: str, path: Path, meta: bool = False) -> nn.Module:
    config = spec.get("config") or {}
    try:
        with torch.device("meta" if meta else "cpu"):
            return cls(**config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{str(path)!r}: the model class {name} cannot be built from the bundle's config {config!r} "
                        f"({exc}). Save the bundle again from the pipeline.") from exc


def _check_shapes(probe: nn.Module, state: dict, name: str, path: Path) -> None:
    expected = {key: tuple(value.shape) for key, value in probe.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    if expected != found:
        differ = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))[:5]
        raise DataError(f"{str(path)!r}: the saved weights do not fit {name} built from the bundle's config "
                        f"(they differ at {differ}). Save the bundle again from the pipeline.")


def read_weights(data: bytes, path: Path) -> dict:
    """The state_dict, read with torch's weights-only loader; anything else is a DataError in nbtrain's
    words (torch's own message would suggest weights_only=False, which can run code from the file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the error below says enough
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, KeyError, AttributeError,
            IndexError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{str(path)!r}: its weights.pt is not a state_dict of tensors that can be read safely "
                        f"({type(exc).__name__}: {first}). The file was damaged or crafted; nbtrain does not load it. "
                        "Save the bundle again from the pipeline.") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise DataError(f"{str(path)!r}: its weights.pt holds a {type(state).__name__}, not a state_dict of tensors. "
                        "Save the bundle again from the pipeline.")
    return state


def _import_class(module_name: str, qualname: str, path: Path, trust: bool) -> type:
    name = f"{module_name}.{qualname}"
    if not trust and not bundle_safety.from_nbtrain(module_name):
        raise DataError(f"{str(path)!r} needs the model class {name!r}, from outside nbtrain. Importing its module "
                        "would run that module's code, so nbtrain does not do it for a file alone: if you trust this "
                        "bundle and where it came from, load it with nbtrain.load(path, trust=True) (the module must "
                        "be importable here).")
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
