"""Files nbtrain writes (checkpoints, bundles, exports): atomic, durable, shared as the umask says,
and I/O failures turned into errors that name the path and the cause.

- Atomic: written to a temp file in the same folder, then renamed (os.replace), so a crash never
  leaves half a file under the real name.
- Durable: the file is fsynced before the rename and its folder after it, as SQLite does for its
  journal: once a write returns, a power cut keeps either the old file or the new one.
- Shared: a temp file is created 0600 (tempfile.mkstemp); the final file gets the mode a plain
  open() would give (0666 less the umask), so a teammate sharing the work folder can read it.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from nbtrain.errors import DataError

TEMP_SUFFIX = ".tmp"

# errno -> what a user should read, and what to do about it
_CAUSES = {
    errno.ENOSPC: ("the disk is full", "free some space (old runs under <workdir>/runs are safe to delete) "
                                       "or choose another workdir="),
    errno.EDQUOT: ("the disk quota is exhausted", "free some space or choose another workdir="),
    errno.EROFS: ("the file system is read-only", "choose a writable workdir="),
    errno.EACCES: ("permission denied", "check the folder's permissions, or choose another workdir="),
    errno.EPERM: ("operation not permitted", "check the folder's permissions, or choose another workdir="),
}


def cause(exc: BaseException) -> tuple[str, str]:
    """(what went wrong, what to do) for an OSError, in words."""
    number = getattr(exc, "errno", None)
    if number in _CAUSES:
        return _CAUSES[number]
    return str(exc) or type(exc).__name__, "check the path and the disk, then try again"


def io_error(path, exc: BaseException, doing: str) -> DataError:
    """A DataError for an OSError met while `doing` (e.g. "writing the checkpoint") at `path`."""
    what, todo = cause(exc)
    return DataError(f"Could not finish {doing} at {str(path)!r}: {what}. Nothing was half-written there; "
                     f"{todo}.")


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)  # elsewhere: set and restore (not atomic, but only the mode is at stake)
    os.umask(current)
    return current


def atomic_write(path, write: Callable[[BinaryIO], None], *, doing: str) -> Path:
    """Call write(file) on a temp file beside `path`, make it durable, then rename it to `path`.
    An OSError (disk full, read-only, permissions) becomes a DataError naming `path` and the cause;
    any failure removes the temp file and leaves an existing file at `path` untouched."""
    def into_file(temp: Path) -> None:
        with open(temp, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
    return atomic_path(path, into_file, doing=doing)


def atomic_path(path, write: Callable[[Path], None], *, doing: str, suffix: str = "") -> Path:
    """As atomic_write, for writers that take a file name (ONNX, torch.export): write(temp_path) writes
    the file, and may check it (an exception keeps the old file); `suffix` ends the temp file's name
    (some writers read the format from it)."""
    path = Path(path)
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX + suffix)
        os.close(handle)
        temp = Path(name)
        write(temp)
        os.chmod(temp, 0o666 & ~umask())
        os.replace(temp, path)
        temp = None
        sync_folder(path.parent)
    except OSError as exc:
        raise io_error(path, exc, doing) from exc
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    return path


def sync_folder(folder: Path) -> None:
    """fsync a folder so a rename inside it survives a power cut (a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temp files a killed writer left in `folder` (ours: '.<name>.<random>.tmp[suffix]')."""
    removed = []
    for temp in Path(folder).glob(f".*{TEMP_SUFFIX}*"):
        try:
            temp.unlink()
            removed.append(temp)
        except OSError:
            continue
    return removed
