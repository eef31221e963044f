"""`pipe.export_run(folder)` and `pipe.import_run(folder)`: a run to train anywhere torchrun runs, and back.

The exported folder holds the run spec (the train and validation splits only, the model, fit's keywords:
nbtrain.distributed.spec), a `train.py` that starts nbtrain's worker on it, and a README with the torchrun
commands for one machine and for several. The ranks write the run into <folder>/run/ (best.pt, last.pt,
TensorBoard, epochs.jsonl, result.json). import_run checks that the run was trained on this pipeline's
dataset and split, copies it into the work folder under a free run name, and logs it like any run, so
pipe.runs lists it and pipe.test() can evaluate it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import torch

from nbtrain.distributed import spec as run_spec
from nbtrain.distributed.feed import EPOCHS, RESULT, read_result
from nbtrain.distributed.launch import check_scalable, describe
from nbtrain.errors import DataError, LeakageError
from nbtrain.files import atomic_write, io_error
from nbtrain.training import folders
from nbtrain.training.checkpoint import load_checkpoint
from nbtrain.training.fit import DEFAULTS, _build_model, model_notes
from nbtrain.training.run import Run

RUN = "run"   # the ranks' folder inside an exported one
TRAIN_PY = '''"""Train the nbtrain run exported here: torchrun starts this script once per process (see README.md)."""
from pathlib import Path

from nbtrain.distributed.worker import main

here = Path(__file__).resolve().parent
main([str(here / "spec"), "--out", str(here / "{run}")])
'''


def export_run(data, folder, model, options: dict) -> Path:
    """Write the spec of the run fit(**options) would train, its train.py and its README, into `folder`."""
    folder = Path(folder)
    if (folder / "spec").exists():
        raise DataError(f"{str(folder)!r} already holds an exported run; choose a new folder (an export is never "
                        "overwritten: its run may be training).")
    options = {k: v for k, v in options.items() if k in DEFAULTS and k != "devices"}
    check_scalable(data, options, 2)
    seed = data.seed if options.get("seed") is None else options["seed"]
    torch.manual_seed(seed)  # the initial weights one process would start from
    built = _build_model(model, data, None)
    backend = "gloo" if options.get("device") == "cpu" else "auto"
    run_spec.write(folder / "spec", data, built.cpu(), options, {**describe(0, backend), "exported": True})
    atomic_write(folder / "train.py", lambda out: out.write(TRAIN_PY.format(run=RUN).encode()),
                 doing="exporting the run")
    atomic_write(folder / "README.md", lambda out: out.write(readme(data, options).encode()), doing="exporting the run")
    return folder


def readme(data, options: dict) -> str:
    given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "the defaults"
    return f"""# An nbtrain run, exported to train with torchrun

Dataset {data.dataset_id}, split {data.split_id}: {len(data.train)} train and {len(data.val)} validation rows
(the test split is not here). fit keywords: {given}. Needs Python with nbtrain and torch installed.

batch_size is global: each optimizer step trains on batch_size rows in all, batch_size / world size per
process, so the steps and the learning rate are those of one process (lr is not scaled). The run goes to
`{RUN}/` (best.pt, last.pt, epochs.jsonl, result.json, TensorBoard events; failure-rank<N>.json if a rank fails).

## One machine (every GPU, or N CPU processes)

    python -m torch.distributed.run --standalone --nproc-per-node=gpu train.py
    python -m torch.distributed.run --standalone --nproc-per-node=2 train.py

## Several machines (here 2, with 8 GPUs each): run on every machine, HOST being the first one's address

    python -m torch.distributed.run --nnodes=2 --nproc-per-node=8 --rdzv-id=nbtrain-{data.split_id} \\
        --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 train.py

Rank 0 (on the machine that gets it) writes `{RUN}/`. Copy that folder back, then in the notebook:

    run = pipe.import_run("<this folder>")
"""


def import_run(data, folder, workdir) -> Run:
    """The finished run of an exported folder, as a Run copied into `workdir` (see the module doc)."""
    folder = Path(folder)
    spec = run_spec.read(folder / "spec")
    _check_same_split(spec.about["data"], data)
    trained = folder / RUN
    result = read_result(trained)
    if result is None or not (trained / "best.pt").exists():
        raise DataError(f"{str(trained)!r} holds no finished run (result.json and best.pt): train it first with the "
                        f"torchrun command in {str(folder / 'README.md')!r}, or copy rank 0's {RUN}/ folder here.")
    best = load_checkpoint(trained / "best.pt")
    name, target = folders.claim(workdir, type(spec.model).__name__.lower(), None, data.taken_names)
    _copy_run(trained, target)
    folders.write_card(target, name=name, dataset_id=data.dataset_id, split_id=data.split_id,
                       model=type(spec.model).__name__)
    model = spec.model
    model.load_state_dict(best["model"])
    config = {**best["config"], "name": name, "imported_from": str(folder.resolve())}
    history = pd.DataFrame([json.loads(line) for line in (trained / EPOCHS).read_text().splitlines() if line.strip()])
    history = pd.DataFrame(list(history["record"])) if len(history) else pd.DataFrame()
    return Run(name=name, config=config, history=history, monitor=config["monitor"], best_epoch=result["best_epoch"],
               best_value=result["best"], stop_reason=result["stop_reason"], error=result["error"], folder=target,
               checkpoint=target / "best.pt", last_checkpoint=target / "last.pt" if (target / "last.pt").exists() else None,
               model=model, lrs=list(result["lrs"]), notes=model_notes(model) + [f"Trained by torchrun from {str(folder)!r}."],
               samples_per_s=_samples_per_s(config, result))


def _check_same_split(trained_on: dict, data) -> None:
    if trained_on["dataset_id"] != data.dataset_id:
        raise DataError(f"This run was trained on dataset {trained_on['dataset_id'][:12]}…, not on this pipeline's "
                        f"({data.dataset_id[:12]}…). Import it into a Pipeline over the same data.")
    if trained_on["split_id"] != data.split_id:
        raise LeakageError(f"This run was trained on split {trained_on['split_id']}, and this pipeline's split is "
                           f"{data.split_id}: its training rows may be test rows here, so its test score would be "
                           "optimistic. Split with the same ratios and seed as when it was exported.")


def _copy_run(trained: Path, target: Path) -> None:
    try:
        for path in trained.iterdir():
            if path.is_file():
                shutil.copy2(path, target / path.name)
    except OSError as exc:
        raise io_error(target, exc, "importing the run") from exc


def _samples_per_s(config: dict, result: dict) -> float:
    seconds = result.get("train_seconds") or 0.0
    return config.get("train_rows", 0) * result["epoch"] / seconds if seconds else 0.0
