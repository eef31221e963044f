"""TensorBoard inline: start (or reuse) a real server for the work folder and embed it.

tensorboard.notebook starts the `tensorboard` program it finds on PATH; a kernel started from a
virtual environment often lacks that PATH entry, and the start then fails with only a printed line.
So the program beside the kernel's own Python is named explicitly. Servers this kernel started are
stopped when it exits. On Binder, `binder/start` sets TENSORBOARD_PROXY_URL so the frame goes
through jupyter-server-proxy; Colab proxies by itself.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import sys
from pathlib import Path

# PIDs of the servers this kernel started (reused ones are left alone); per process, as atexit is
_STARTED: set[int] = set()


def tensorboard_program() -> str | None:
    beside = Path(sys.executable).parent / "tensorboard"
    return str(beside) if beside.exists() else None


def show(logdir: Path) -> None:
    from tensorboard import manager, notebook
    program = tensorboard_program()
    if program and "TENSORBOARD_BINARY" not in os.environ:
        os.environ["TENSORBOARD_BINARY"] = program
    logdir = Path(logdir).resolve()
    logdir.mkdir(parents=True, exist_ok=True)
    before = {info.pid for info in manager.get_all()}
    notebook.start(f"--logdir {shlex.quote(str(logdir))} --host 127.0.0.1 --port 0")
    started = {info.pid for info in manager.get_all() if info.logdir == str(logdir)} - before
    if started and not _STARTED:
        atexit.register(stop_started)
    _STARTED.update(started)


def stop_started() -> None:
    for pid in list(_STARTED):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _STARTED.discard(pid)
