"""Checkpoint files: written atomically, read with a clear error when truncated or foreign.

Two files per run (nbtrain.training.fit): `best.pt`, written at every improvement, holds the best
weights and what loading them needs (the config: model class and settings, target scale) and no
more; `last.pt`, written at the end of every epoch, adds the optimizer's and scheduler's state, the
random states and the history, so a run resumes exactly where its last whole epoch ended.
An interrupt (SIGINT) waits until a write has finished: torch.save cut by KeyboardInterrupt leaves
a writer that fails later with "enforce fail".
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from nbtrain.errors import DataError
from nbtrain.files import atomic_write
from nbtrain.training.interrupts import deferred_interrupts

FORMAT = "nbtrain-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, content: dict) -> None:
    """Write atomically and durably (nbtrain.files): a crash never leaves half a file."""
    with deferred_interrupts():
        atomic_write(path, lambda out: _save({"format": FORMAT, "version": VERSION, **content}, out),
                     doing="writing the checkpoint")


def _save(content: dict, out) -> None:
    try:
        torch.save(content, out)
    except RuntimeError as exc:
        # torch's zip writer meets an OSError (a full disk) and then fails again as it closes, with "enforce
        # fail ... unexpected pos": raise the OSError, which says what happened (atomic_write names it)
        if isinstance(exc.__context__, OSError):
            raise exc.__context__ from None
        raise


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
