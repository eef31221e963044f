"""Real Jupyter kernels of more than one ipykernel release, for the kernel and browser tests.

The project's own environment gives one ipykernel (constraints.txt pins the newest 7.x). Others are
installed beside it, without their dependencies, into `.kernels/ipykernel-<version>/` at the project
root (`make kernels`; `make test` runs it), and a kernel of that release is this Python with that
folder first on PYTHONPATH. Each becomes a kernelspec in a folder the test chooses, as a front end
would see it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SIDE = ROOT / ".kernels"


@dataclass(frozen=True)
class KernelRelease:
    version: str
    folder: Path | None  # None: the environment's own ipykernel

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def name(self) -> str:
        return "nbtrain-ipykernel-" + self.version.replace(".", "-")

    def env(self) -> dict:
        paths = [str(self.folder)] if self.folder else []
        paths += [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        return {"PYTHONPATH": os.pathsep.join(paths)}

    def write_spec(self, kernels_dir: Path) -> str:
        """A kernelspec for this release under kernels_dir; returns its name."""
        folder = kernels_dir / self.name
        folder.mkdir(parents=True, exist_ok=True)
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"Python (ipykernel {self.version})", "language": "python", "env": self.env()}
        (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
        return self.name


def releases() -> list[KernelRelease]:
    """The environment's ipykernel, then every release under .kernels/, oldest first."""
    found = [KernelRelease(metadata.version("ipykernel"), None)]
    for folder in sorted(SIDE.glob("ipykernel-*")) if SIDE.is_dir() else []:
        versions = [d.name.removesuffix(".dist-info").split("-", 1)[1] for d in folder.glob("ipykernel-*.dist-info")]
        if versions:
            found.append(KernelRelease(versions[0], folder))
    return sorted(found, key=lambda r: Version(r.version))


def newest(major: int) -> KernelRelease | None:
    matching = [r for r in releases() if r.major == major]
    return matching[-1] if matching else None


class Kernel:
    """A started kernel of one release and its client; `run` waits for a cell, `start` does not."""

    def __init__(self, release: KernelRelease, cwd: Path):
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager
        self.release = release
        specs = cwd / "kernelspecs"
        self.manager = KernelManager(kernel_name=release.write_spec(specs),
                                     kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
        self.manager.start_kernel(cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)
        self.messages: list = []  # every iopub message seen so far
        self.running: set = set()  # cells started and not seen to finish

    @property
    def pid(self) -> int:
        return self.manager.provisioner.process.pid

    def start(self, code: str) -> str:
        cell = self.client.execute(code)
        self.running.add(cell)
        return cell

    def settle(self) -> None:
        """End whatever a failed test left running (Kernel > Interrupt), so the next test starts idle."""
        for cell in list(self.running):
            self.interrupt()
            self.wait(cell, timeout=120)

    def run(self, code: str, timeout: float = 600) -> list:
        """Run a cell; its iopub messages once the kernel is idle again."""
        return self.wait(self.start(code), timeout)

    def wait(self, msg_id: str, timeout: float = 600, until=None) -> list:
        """Messages of cell `msg_id` until it is done (or until `until(message)` is true)."""
        deadline = time.monotonic() + timeout
        mine = []
        while time.monotonic() < deadline:
            try:
                message = self.client.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            self.messages.append(message)
            if message["parent_header"].get("msg_id") == msg_id:
                mine.append(message)
                if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                    self.running.discard(msg_id)
                    return mine
            if until is not None and until(message):
                return mine
        raise TimeoutError(f"the cell did not finish within {timeout} s: {code_of(mine)}")

    def click(self, comm_id: str) -> None:
        """What the ipywidgets front end sends when a Button is clicked."""
        message = self.client.session.msg("comm_msg", {"comm_id": comm_id, "data": {
            "method": "custom", "content": {"event": "click"}}})
        self.client.shell_channel.send(message)

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()  # SIGINT, as Kernel > Interrupt sends it

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def code_of(messages: list) -> str:
    return "; ".join(m["msg_type"] for m in messages[-5:])


def text(messages: list) -> str:
    """Everything a person would read in the cell's output: streams, displays, errors."""
    parts = []
    for message in messages:
        content = message["content"]
        if message["msg_type"] == "stream":
            parts.append(content["text"])
        elif message["msg_type"] in ("display_data", "update_display_data", "execute_result"):
            parts.append(content["data"].get("text/plain", ""))
        elif message["msg_type"] == "error":
            parts.append("\n".join(content["traceback"]))
    return "\n".join(parts)


def errors(messages: list) -> list:
    return [m["content"] for m in messages if m["msg_type"] == "error"]


def problems(messages: list) -> list[str]:
    """What a person would take for a failure: tracebacks, and error lines on stderr (where IPython
    prints a UsageError, in one line)."""
    found = [re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(e["traceback"])) or e["evalue"] for e in errors(messages)]
    return found + [m["content"]["text"] for m in messages if m["msg_type"] == "stream"
                    and m["content"]["name"] == "stderr" and re.search(r"Error|Traceback", m["content"]["text"])]


def widget_models(messages: list, name: str) -> list:
    """(comm_id, state) of each widget model of class `name` (e.g. "ButtonModel") the kernel opened."""
    return [(m["content"]["comm_id"], m["content"]["data"]["state"]) for m in messages
            if m["msg_type"] == "comm_open" and m["content"].get("data", {}).get("state", {}).get("_model_name") == name]


def updates(messages: list, comm_id: str) -> list:
    """The state updates the kernel sent for one widget model."""
    return [m["content"]["data"]["state"] for m in messages if m["msg_type"] == "comm_msg"
            and m["content"]["comm_id"] == comm_id and m["content"]["data"].get("method") == "update"]
