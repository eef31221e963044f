"""Which process started something, and whether that process still runs.

The test lock records who is evaluating a test split, so that an evaluation left unfinished by a
killed kernel can be told from one still running. A pid alone cannot say it: once a process ends,
the system hands its number to the next one. So a process is named by its host, its pid and its
start time (Linux: the kernel's start time of the process in clock ticks since boot, with the boot
id, so neither a reused pid nor a reboot can match). Processes of another host cannot be seen
from here: their state is "unknown", and only the user can say they ended.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

RUNNING, ENDED, UNKNOWN = "running", "ended", "unknown"


@dataclass(frozen=True)
class ProcessId:
    """A process, named so that no other process, before or after it, has the same name."""

    pid: int
    host: str
    started: str | None  # None where the system does not tell a process's start time

    def to_dict(self) -> dict:
        return {"pid": self.pid, "host": self.host, "started": self.started}

    @classmethod
    def from_dict(cls, values: dict) -> ProcessId:
        return cls(pid=int(values["pid"]), host=str(values["host"]), started=values.get("started"))

    def __str__(self) -> str:
        return f"process {self.pid} on host {self.host!r}"


def this_process() -> ProcessId:
    return ProcessId(pid=os.getpid(), host=socket.gethostname(), started=_start_time(os.getpid()))


def state(process: ProcessId) -> str:
    """RUNNING, ENDED or UNKNOWN (a process of another host)."""
    if process.host != socket.gethostname():
        return UNKNOWN
    if not _pid_exists(process.pid):
        return ENDED
    if process.started is None:  # nothing more to compare: a live pid is taken as the same process
        return RUNNING
    now = _start_time(process.pid)
    return RUNNING if now is None or now == process.started else ENDED


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 checks existence and permission, and sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


def _start_time(pid: int) -> str | None:
    """'<boot id>:<start ticks>' on Linux; psutil's creation time elsewhere, when it is installed."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        # the command name (field 2) may hold spaces and parentheses: fields after the last ")"
        fields = stat.read_text().rpartition(")")[2].split()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{fields[19]}"  # field 22, starttime
    except (OSError, IndexError):
        pass
    try:
        import psutil
    except ImportError:  # no way to tell a start time here: liveness falls back to the pid
        return None
    try:
        return f"created:{psutil.Process(pid).create_time():.3f}"
    except psutil.Error:
        return None
