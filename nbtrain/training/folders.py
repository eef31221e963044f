"""Run folders, `<workdir>/runs/<name>/`: claiming a name, the run's card, and runs that never finished.

Several notebooks (kernels, processes) may train in one work folder at once, so a run's name is
claimed with an exclusive `mkdir` of its folder: of two processes that pick the same name, one
gets it and the other moves on to the next number. A name the user chose that is taken gets a
suffix ("wide" -> "wide-2"), with a warning: re-running a cell should not fail, and should never
overwrite another run's checkpoints.

When the name is claimed, a small `run.json` (the card) records which dataset and split the run
trains on, the process and its start time. A run that ends, however it ends, is logged in the
ledger; a folder with a card and no ledger row belongs to a run still training in another process
("running") or to one whose process died ("incomplete": killed, a kernel restart, a power cut),
which `resume=<its folder>` continues from its last epoch (last.pt).
"""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from nbtrain.errors import ConfigError, NbtrainWarning
from nbtrain.files import atomic_write, io_error

CARD = "run.json"


def runs_folder(workdir) -> Path:
    return Path(workdir) / "runs"


def claim(workdir, stem: str, name: str | None = None, taken=()) -> tuple[str, Path]:
    """Create `<workdir>/runs/<name>` exclusively and return (name, folder). With `name` None the name is
    "<stem>-<n>", n the first number free; names in `taken` (the ledger's) are skipped too."""
    runs = runs_folder(workdir)
    try:
        runs.mkdir(parents=True, exist_ok=True)
        existing = {p.name for p in runs.iterdir()} | set(taken)
    except OSError as exc:
        raise io_error(runs, exc, "creating the run folder") from exc
    wanted = name if name is not None else f"{stem}-1"
    for candidate in _candidates(_check_name(name) if name is not None else stem, name is None):
        if candidate in existing:
            continue
        try:
            (runs / candidate).mkdir()
        except FileExistsError:  # another process claimed it since we listed the folder
            continue
        except OSError as exc:
            raise io_error(runs / candidate, exc, "creating the run folder") from exc
        if name is not None and candidate != wanted:
            warnings.warn(f"A run named {name!r} already exists in {str(runs)!r}; this run is named {candidate!r}. "
                          f"To continue that run instead, pass resume={str(runs / name)!r}.", NbtrainWarning,
                          stacklevel=5)  # the user's pipe.fit(...) line
        return candidate, runs / candidate
    raise AssertionError("unreachable: the candidates never end")


def _candidates(base: str, numbered_from_one: bool):
    """"<base>-1", "<base>-2", ... (default names); or "<base>", "<base>-2", ... (a name the user chose)."""
    n = 1
    if not numbered_from_one:
        yield base
        n = 2
    while True:
        yield f"{base}-{n}"
        n += 1


def _check_name(name) -> str:
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name \
            or name.startswith("."):
        raise ConfigError(f"name must be a plain folder name (letters, digits, '-', '_'; no '/' and no leading "
                          f"'.'); received {name!r}.")
    return name


def write_card(folder: Path, *, name: str, dataset_id: str | None, split_id: str | None, model: str) -> None:
    """The run's card: what it trains on and which process trains it (rewritten when a run resumes)."""
    card = {"name": name, "dataset_id": dataset_id, "split_id": split_id, "model": model, "pid": os.getpid(),
            "process_started": _process_start(os.getpid()), "host": socket.gethostname(),
            "started_at": datetime.now(timezone.utc).isoformat()}
    atomic_write(folder / CARD, lambda out: out.write(json.dumps(card, indent=1).encode()),
                 doing="writing the run's card")


def read_card(folder: Path) -> dict | None:
    """The card of a run folder, or None (no card: an older nbtrain's folder, or one being created)."""
    try:
        card = json.loads((Path(folder) / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def is_running(card: dict) -> bool:
    """Whether the process that wrote the card is alive (on this host; elsewhere we cannot tell: False).
    Its start time guards against a recycled process id."""
    if card.get("host") != socket.gethostname() or not isinstance(card.get("pid"), int):
        return False
    pid = card["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    except OSError:
        return False
    recorded = card.get("process_started")
    return recorded is None or _process_start(pid) in (None, recorded)


def refuse_if_running(folder: Path) -> None:
    """resume= on a run another live process is still training would write over its checkpoints."""
    card = read_card(folder)
    if card is not None and card.get("pid") != os.getpid() and is_running(card):
        raise ConfigError(f"Run {card.get('name')!r} is still training in process {card['pid']} (started "
                          f"{card.get('started_at', '?')}); resuming it here would write over its checkpoints. "
                          "Wait for it to end (or stop it), then resume.")


def unfinished(workdir, dataset_id: str, split_id: str, logged) -> list[dict]:
    """Runs of this dataset and split that have a card but no ledger row (their names are not in
    `logged`), as ledger records (nbtrain.ledger.Ledger.runs): stop_reason "running" while their
    process lives, else "incomplete"; epochs and best scores so far from their last.pt."""
    try:
        folders = sorted(p for p in runs_folder(workdir).iterdir() if p.is_dir() and p.name not in logged)
    except OSError:
        return []
    found = []
    for folder in folders:
        card = read_card(folder)
        if card is None or card.get("dataset_id") != dataset_id or card.get("split_id") != split_id:
            continue
        progress = _progress(folder / "last.pt")
        config = progress["config"]
        found.append({"name": folder.name, "dataset_id": dataset_id, "split_id": split_id, "kind": "nn",
                      "model": card.get("model", ""), "parameters": config.get("parameters"),
                      "config": {**config, "folder": str(folder)}, "monitor": config.get("monitor", "val_loss"),
                      "mode": config.get("mode", "min"), "best_epoch": progress["best_epoch"],
                      "best_value": progress.get("best_value"), "best_metrics": progress["best_metrics"],
                      "stop_reason": "running" if is_running(card) else "incomplete", "wall_seconds": None,
                      "samples_per_s": None, "cell_text": None, "diagnoses": [],
                      "recorded_at": card.get("started_at")})
    return found


def _progress(path: Path) -> dict:
    """Epochs done, best epoch and its validation scores, from a last.pt (tensors memory-mapped, not read)."""
    # killed before its first epoch ended: nothing known but that (val_loss, the runs table's default order, as NaN)
    nothing = {"epochs_done": 0, "best_epoch": 0, "best_metrics": {"val_loss": math.nan}, "config": {}}
    if not path.is_file():
        return nothing
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        state, config = saved["state"], saved.get("config", {})
    except (RuntimeError, OSError, KeyError, TypeError, ValueError, EOFError):  # torn or foreign: as if absent
        return nothing
    best = state["history"][state["best_epoch"] - 1] if state.get("best_epoch") else {}
    return {"epochs_done": state.get("epoch", 0), "best_epoch": state.get("best_epoch", 0),
            "best_value": state.get("best"), "config": config,
            "best_metrics": {k: v for k, v in best.items() if k.startswith("val_")}}


def _process_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5); the first two fields are before the split
    except (OSError, IndexError, ValueError):
        return None
