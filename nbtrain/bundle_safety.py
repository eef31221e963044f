"""What makes loading a bundle safe: a checked manifest, a size budget, and fitted objects read with
skops against an allow-list of types, never unpickled (the trust model is in nbtrain.bundle).

skops (skops.io) stores scikit-learn objects as a JSON description plus arrays and rebuilds them
without calling anything the file names; its own default list trusts scikit-learn's estimators
and NumPy's basic types. nbtrain adds the classes of the libraries and of nbtrain itself that a
bundle holds, and a few named functions; every other name is refused unless the user trusts the file.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import warnings
import zipfile
from pathlib import Path

from nbtrain.errors import ConfigError, DataError, NbtrainWarning

# Classes from these packages are rebuilt as data (object.__new__ and their stored state). Functions
# are called later (a FunctionTransformer calls its function on the rows), so only those named here.
_CLASS_PACKAGES = ("sklearn.", "numpy.", "scipy.", "lightgbm.", "xgboost.", "nbtrain.")
_FUNCTIONS = frozenset({
    "functools.partial",                              # HistGradientBoosting keeps a partial of check_array
    "sklearn.utils.validation.check_array",
    "nbtrain.data.preprocess.days_since_epoch",       # dates to days, in the preprocessing
    "nbtrain.data.preprocess._as_float",              # booleans to floats, in the preprocessing
    "collections.OrderedDict",                        # LightGBM's parameters
})
_TASKS = ("binary", "multiclass", "regression", "ranking")
# Kinds whose bundles another module reads (manifest "kind"; none: a table), and what that module checks.
KIND_READERS = {"text": "nbtrain.kinds.text.bundle", "image": "nbtrain.kinds.image.bundle",
                "timeseries": "nbtrain.kinds.timeseries.bundle", "ranking": "nbtrain.kinds.ranking.bundle",
                "interactions": "nbtrain.kinds.ranking.interactions_bundle"}
_RANKING_KINDS = ("ranking", "interactions")   # the kinds of task "ranking", and the only ones
_MEMBERS = {"network": {"sealed.npy", "weights.pt", "preprocessor.skops"},
            "trees": {"sealed.npy", "baseline.skops"}}


def from_nbtrain(module_name: str) -> bool:
    return module_name == "nbtrain" or module_name.startswith("nbtrain.")


# --- the size budget ------------------------------------------------------------------------------


class Budget:
    """How many bytes the members of one bundle may still unpack to, all together."""

    def __init__(self, max_bytes: int, path: Path) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise ConfigError(f"max_bytes must be a whole number of bytes > 0; received {max_bytes!r}.")
        self.left, self.limit, self.path = max_bytes, max_bytes, path

    def read(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        """The member's bytes, refused before unpacking when its stated size exceeds what is left, and
        cut off if it unpacks to more than it stated."""
        self.check(info.file_size, info.filename)
        with archive.open(info) as member:
            data = member.read(self.left + 1)
        self.check(len(data), info.filename)
        self.left -= len(data)
        return data

    def check(self, size: int, name: str) -> None:
        if size > self.left:
            raise DataError(f"{str(self.path)!r}: its member {name!r} unpacks to {size:,} bytes, more than nbtrain "
                            f"unpacks from one bundle ({self.limit:,} bytes, max_bytes=). A bundle of a tabular model "
                            "is rarely that large: this looks like a zip bomb. If you made this file yourself and "
                            "expect that size, load it with nbtrain.load(path, max_bytes=...).")


# --- the manifest ---------------------------------------------------------------------------------


def check_manifest(manifest: dict, path: Path) -> None:
    """Every field load() reads has the type nbtrain writes; anything else is a DataError naming it."""
    checks = [
        ("task", manifest.get("task") in _TASKS, f"one of {list(_TASKS)}"),
        ("classes", manifest.get("classes") is None or isinstance(manifest.get("classes"), list), "a list or null"),
        ("target_scale", _numbers(manifest.get("target_scale"), 2), "two numbers"),
        ("run", isinstance(manifest.get("run"), dict) and isinstance(manifest["run"].get("kind"), str),
         "an object with a kind"),
        ("model", _model_spec(manifest.get("model")), "null, or module and qualname strings with a config object"),
        ("schema", isinstance(manifest.get("schema"), dict), "an object"),
        ("info", isinstance(manifest.get("info"), dict), "an object"),
        ("evidence", manifest.get("evidence") is None or isinstance(manifest.get("evidence"), dict),
         "null or an object"),
        ("members", _members(manifest.get("members")), "an object of {bytes, sha256} per member"),
    ]
    wrong = [(key, expected) for key, ok, expected in checks if not ok]
    if wrong:
        key, expected = wrong[0]
        raise DataError(f"{str(path)!r}: its manifest is malformed: {key!r} should be {expected}; found "
                        f"{_shown(manifest.get(key))}. The file was damaged or crafted; save the bundle again from "
                        "the pipeline.")
    kind = manifest.get("kind", "tabular")
    if kind != "tabular" and (not isinstance(kind, str) or kind not in KIND_READERS):
        raise DataError(f"{str(path)!r}: its manifest names the kind {_shown(kind)}; this nbtrain reads "
                        f"bundles of tables and of {sorted(KIND_READERS)}. Upgrade nbtrain to load it.")
    if (manifest["task"] == "ranking") != (kind in _RANKING_KINDS):
        raise DataError(f"{str(path)!r}: its manifest is malformed: task {manifest['task']!r} with kind {_shown(kind)} "
                        f"(task 'ranking' goes with the kinds {list(_RANKING_KINDS)} only). The file was damaged or "
                        "crafted; save the bundle again from the pipeline.")
    if kind == "tabular":
        check_table_members(manifest, path)
    # any other kind's reader checks its members


def check_table_members(manifest: dict, path: Path) -> None:
    """The members of a table's bundle (Predictor._bundle_members, nbtrain.predictor), of a network or of trees."""
    kind = "network" if manifest["model"] is not None else "trees"
    if set(manifest["members"]) != _MEMBERS[kind]:
        raise DataError(f"{str(path)!r}: its manifest lists the members {sorted(manifest['members'])}; a bundle of "
                        f"{'a network' if kind == 'network' else 'a tree baseline'} has {sorted(_MEMBERS[kind])}. "
                        "The file was damaged or crafted; save the bundle again from the pipeline.")


def _numbers(value, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and \
        all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _model_spec(spec) -> bool:
    return spec is None or (isinstance(spec, dict) and isinstance(spec.get("module"), str)
                            and isinstance(spec.get("qualname"), str)
                            and (spec.get("config") is None or isinstance(spec.get("config"), dict)))


def _members(members) -> bool:
    return isinstance(members, dict) and all(
        isinstance(entry, dict) and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)
        for entry in members.values())


def _shown(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# --- fitted objects through skops -----------------------------------------------------------------


def dump(obj, what: str) -> bytes:
    """`obj` in skops' format; warns when loading it will need trust=True (a class of your own)."""
    import skops.io as sio
    try:
        data = sio.dumps(obj)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"The {what} cannot be saved in a form that loads without running code ({exc}). Use "
                          "nbtrain's own preprocessing or a scikit-learn transformer.") from exc
    unknown = [name for name in sio.get_untrusted_types(data=data) if not _allowed(name)]
    if unknown:
        warnings.warn(f"The {what} holds types nbtrain does not load on its own: {unknown[:5]}. The bundle is "
                      "written, and nbtrain.load() will ask for trust=True to read it.", NbtrainWarning, stacklevel=5)
    return data


def plain_trees(baseline):
    """A copy of a TreeBaseline whose label levels are lists (pandas' Index has no skops form)."""
    plain = copy.copy(baseline)
    plain.levels_ = {name: levels.tolist() for name, levels in baseline.levels_.items()}
    return plain


def load(data: bytes, what: str, path: Path, trust: bool):
    """A fitted object from its skops bytes; no type outside the allow-list unless `trust`."""
    import skops.io as sio
    _check_inner_sizes(data, what, path)
    try:
        named = sio.get_untrusted_types(data=data)
        unknown = [name for name in named if not _allowed(name)]
        if unknown and not trust:
            raise DataError(f"{str(path)!r}: its {what} names {len(unknown)} type(s) nbtrain does not load from a file "
                            f"alone: {unknown[:5]}. Loading them could run code. If you trust this bundle and its "
                            "maker (a scaler class of your own, say), load it with nbtrain.load(path, trust=True).")
        return sio.loads(data, trusted=named)
    except ImportError as exc:
        raise DataError(f"{str(path)!r}: its {what} needs {exc.name or exc}, which cannot be imported here ({exc}). "
                        "Install the package that provides it, then load again.") from exc
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise DataError(f"{str(path)!r}: its {what} is damaged or malformed ({type(exc).__name__}: {exc}). Save the "
                        "bundle again from the pipeline.") from exc


def _check_inner_sizes(data: bytes, what: str, path: Path) -> None:
    """skops' format is itself a zip archive: what it unpacks to is bounded like the bundle's members."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            total = sum(info.file_size for info in inner.infolist())
    except zipfile.BadZipFile as exc:
        raise DataError(f"{str(path)!r}: its {what} is damaged ({exc}). Save the bundle again.") from exc
    limit = max(len(data) * 4, 1 << 20)  # skops stores its arrays uncompressed: sizes stay close to the bytes
    if total > limit:
        raise DataError(f"{str(path)!r}: its {what} would unpack to {total:,} bytes from {len(data):,}: this looks "
                        "like a zip bomb, so nbtrain does not unpack it. Save the bundle again from the pipeline.")


def _allowed(name: str) -> bool:
    """A name skops does not trust by default that nbtrain loads: a listed function, or a class (not a
    function) of the packages bundles are made of."""
    if name in _FUNCTIONS:
        return True
    if not name.startswith(_CLASS_PACKAGES):
        return False
    module, _, attribute = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute, None)  # a module of those packages
    except ImportError:  # not installed here: nothing of it can be built, and load() says what to install
        return True
    return isinstance(found, type)
