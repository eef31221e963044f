"""Checkpoint files: written atomically, read with a clear error when truncated or foreign.

A checkpoint holds the model's, optimizer's and scheduler's state dicts, the run state and the
run's config, so a run can resume where it stopped.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from nbtrain.errors import DataError
from nbtrain.files import atomic_write

FORMAT = "nbtrain-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, content: dict) -> None:
    """Write atomically and durably (nbtrain.files): a crash never leaves half a file."""
    atomic_write(path, lambda out: torch.save({"format": FORMAT, "version": VERSION, **content}, out),
                 doing="writing the checkpoint")


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"No checkpoint at {str(path)!r}. Pass a Run, or the path of a best.pt/last.pt file "
                        "that nbtrain wrote.")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{str(path)!r} is not a readable checkpoint (truncated or damaged: {exc}). Use another "
                        "checkpoint of the run, or start a new run without resume=.") from exc
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise DataError(f"{str(path)!r} is a torch file but not an nbtrain checkpoint, so it cannot be resumed. "
                        "Load its weights yourself with model.load_state_dict(torch.load(...)).")
    if content.get("version", 0) > VERSION:
        raise DataError(f"{str(path)!r} was written by a newer nbtrain (checkpoint version {content['version']}); "
                        "upgrade nbtrain to resume it.")
    return content
