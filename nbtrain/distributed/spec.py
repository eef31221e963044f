"""The run spec: everything a torchrun worker needs to train a run, in one folder, and nothing of the test split.

    spec/
      spec.json      what the run is, readable: data kind, task, sizes, dataset and split ids, seed, devices,
                     the fit keywords as text, the model's class
      options.pkl    the fit keywords themselves (a loss, an optimizer or a schedule may be an object)
      model.pkl      the model with its initial weights
      train/, val/   tables: X.npy, codes.npy, y.npy (memory-mapped by the workers); other kinds: split.pkl

The model is written with cloudpickle: a class defined in a notebook cell (module `__main__`) travels by
value, its code inside the file, since no worker could import it; a class from an importable module
travels by reference (module and name), as pickle does, and the worker imports it. Module + qualname +
config (what bundles use) would refuse the notebook's own classes, which is where most models live.
Only the train and validation splits are written: the test split never leaves the notebook.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import torch

from nbtrain.data.preprocess import Arrays
from nbtrain.errors import DataError
from nbtrain.files import atomic_write, io_error

FORMAT = 1
_ARRAYS = ("X", "codes", "y")
# the FitData fields a worker needs, besides the two splits (nbtrain.training.fit.FitData)
DATA_FIELDS = ("task", "n_inputs", "n_outputs", "cardinalities", "seed", "kind", "dataset_id", "split_id")


@dataclass
class Spec:
    """A run spec read back: the data (train and validation only), the model, fit's keywords, the layout."""

    data: dict                  # DATA_FIELDS
    train: object
    val: object
    model: torch.nn.Module
    options: dict               # fit keywords (devices, device, precision... as the user gave them)
    distributed: dict           # world size, backend, what batch_size and lr mean: also in the run's config
    about: dict = field(default_factory=dict)   # spec.json as written


def write(folder: Path, data, model: torch.nn.Module, options: dict, distributed: dict) -> Path:
    """Write the spec of a run into `folder` (created); `data` is a FitData, `options` fit's keywords, `model`
    on the CPU (the workers move it to their device)."""
    folder = Path(folder)
    described = {name: getattr(data, name) for name in DATA_FIELDS}
    about = {"format": FORMAT, "data": described, "train_rows": len(data.train), "val_rows": len(data.val),
             "model": f"{type(model).__module__}:{type(model).__qualname__}", "distributed": distributed,
             "options": {k: repr(v) for k, v in options.items()},
             "python": sys.version.split()[0], "torch": torch.__version__}
    for part, split in (("train", data.train), ("val", data.val)):
        _write_split(folder / part, split)
    _pickle(folder / "model.pkl", model, "the run's model")
    _pickle(folder / "options.pkl", options, "fit's keywords")
    atomic_write(folder / "spec.json", lambda out: out.write(json.dumps(about, indent=1, default=str).encode()),
                 doing="writing the run spec")
    return folder


def read(folder: Path) -> Spec:
    """The spec in `folder`, as a worker (or import_run) reads it; the arrays memory-mapped."""
    folder = Path(folder)
    try:
        about = json.loads((folder / "spec.json").read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{str(folder)!r} holds no run spec (spec.json): pass the spec folder that "
                        "pipe.export_run() or a devices= run wrote.") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"The run spec {str(folder / 'spec.json')!r} cannot be read: {exc}.") from exc
    if about.get("format") != FORMAT:
        raise DataError(f"The run spec in {str(folder)!r} has format {about.get('format')!r}; this nbtrain reads "
                        f"format {FORMAT}. Export it again with this version.")
    return Spec(data=about["data"], train=_read_split(folder / "train"), val=_read_split(folder / "val"),
                model=_unpickle(folder / "model.pkl"), options=_unpickle(folder / "options.pkl"),
                distributed=about["distributed"], about=about)


def _write_split(folder: Path, split) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(folder, exc, "writing the run spec") from exc
    if isinstance(split, Arrays):  # tables: plain arrays, memory-mapped by every worker
        for name in _ARRAYS:
            values = np.ascontiguousarray(getattr(split, name))
            atomic_write(folder / f"{name}.npy", lambda out, v=values: np.save(out, v, allow_pickle=False),
                         doing="writing the run spec")
    else:  # another kind's split data (its own inputs: image arrays or paths, token ids)
        _pickle(folder / "split.pkl", split, "a split of the run spec")


def _read_split(folder: Path):
    if (folder / "split.pkl").exists():
        return _unpickle(folder / "split.pkl")
    try:
        # "c": copy on write, so torch sees writable arrays; the pages are shared until one is written
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="c", allow_pickle=False) for name in _ARRAYS}
    except (OSError, ValueError) as exc:
        raise DataError(f"The run spec's arrays in {str(folder)!r} cannot be read: {exc}.") from exc
    return Arrays(**arrays, index=pd.RangeIndex(len(arrays["y"])))


def _pickle(path: Path, value, what: str) -> None:
    try:
        payload = cloudpickle.dumps(value)
    except Exception as exc:  # noqa: BLE001 - pickling runs arbitrary __reduce__ code; say what could not travel
        raise DataError(f"{what} cannot be written to the run spec for the worker processes: "
                        f"{type(exc).__name__}: {exc}. Keep files, locks and open connections out of it.") from exc
    atomic_write(path, lambda out: out.write(payload), doing="writing the run spec")


def _unpickle(path: Path):
    try:
        with open(path, "rb") as handle:
            return cloudpickle.load(handle)
    except OSError as exc:
        raise io_error(path, exc, "reading the run spec") from exc


def pythonpath() -> str:
    """PYTHONPATH for the workers: the notebook's folder (its own modules) and this nbtrain first."""
    here = str(Path(__file__).resolve().parents[2])
    entries = [os.getcwd(), here, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return os.pathsep.join(dict.fromkeys(e for e in entries if e))
