"""What this kernel lets a running cell do with a widget click, checked by feature, not by version.

A click on Stop reaches the kernel as a comm message, and a kernel reads no message while a cell
blocks. Two ways around that were checked against real kernels (tests/test_kernels.py):

- "await": ipykernel 7.4+ dispatches comm messages while an async cell awaits (its
  `dispatch_shell(..., concurrent=...)`), and still holds the next cells back. `%%train` becomes an
  async cell there (nbtrain.jupyter.cells) and trains on a worker thread (nbtrain.training.worker).
- "poll": ipykernel 6 has `do_one_iteration`, which jupyter-ui-poll calls between steps of a
  blocking cell (ipykernel 7.1 removed it; 7.0 breaks it differently).

Elsewhere (ipykernel 7.0-7.3, or a plain `pipe.fit(...)` call on 7.4+) no click is read until the
cell ends, and the view says so: Kernel > Interrupt stops the run the same way.
"""

from __future__ import annotations

import inspect

INTERRUPT = "Kernel > Interrupt does the same: the run ends after its current step, best weights kept."


def _kernel():
    from IPython import get_ipython
    return getattr(get_ipython(), "kernel", None)


def version() -> str:
    try:
        import ipykernel
    except ImportError:
        return "?"
    return ipykernel.__version__


def reads_comms_while_awaiting() -> bool:
    """ipykernel 7.4+: comm messages are dispatched while an async cell awaits."""
    dispatch = getattr(_kernel(), "dispatch_shell", None)
    try:
        return dispatch is not None and "concurrent" in inspect.signature(dispatch).parameters
    except (TypeError, ValueError):
        return False


def can_await_cells() -> bool:
    """Whether a %%train cell may become an async cell here: a kernel that reads clicks while it
    awaits, and a shell that runs top-level await on its own asyncio loop."""
    from IPython import get_ipython
    shell = get_ipython()
    if shell is None or not getattr(shell, "autoawait", False) or not reads_comms_while_awaiting():
        return False
    from IPython.core.interactiveshell import _asyncio_runner
    return shell.loop_runner is _asyncio_runner


def can_poll() -> bool:
    """ipykernel 6: a blocking cell can read widget events through jupyter-ui-poll. (7.0 still has
    do_one_iteration, but its shell messages arrive on another thread, which that does not read.)"""
    if not hasattr(_kernel(), "do_one_iteration") or not version().startswith("6."):
        return False
    try:
        import jupyter_ui_poll  # noqa: F401
    except ImportError:
        return False
    return True


def stop_mechanism(on_worker: bool) -> tuple[str | None, str]:
    """("await" | "poll" | None, why): how a click on Stop reaches a run that starts now."""
    if on_worker:
        if reads_comms_while_awaiting():
            return "await", ""
        return None, (f"ipykernel {version()} reads no click while a cell awaits (7.4 and later do); "
                      f"a plain pipe.fit(...) or %%train reads them on ipykernel 6.")
    if can_poll():
        return "poll", ""
    if reads_comms_while_awaiting():
        return None, ("A plain pipe.fit(...) call blocks the kernel until the run ends; a %%train cell, or "
                      "run = await pipe.fit_async(...), keeps Stop working.")
    return None, (f"ipykernel {version()} reads no click while a cell runs (6.x and 7.4+ do: "
                  "pip install -U ipykernel).")
