"""Kernel > Interrupt (SIGINT) while nbtrain trains: the first one is a graceful stop, the second a hard one.

- The first SIGINT of a run sets the run's stop flag (`RunState.request_stop("interrupted")`), exactly
  what a Stop button does: the loop ends after its current step, the best weights come back, the run
  is logged and fit returns normally (no traceback in the notebook, the pipeline stays usable).
- A second SIGINT in the same run raises KeyboardInterrupt at once, for a step that takes too long.
  The end of the run (restoring the best weights, the ledger row) still happens before it propagates.
- Writing a file (a checkpoint, the ledger) is never cut in half: inside `deferred_interrupts()` a
  SIGINT waits until the block ends (a KeyboardInterrupt inside torch.save leaves "enforce fail").

Python runs signal handlers in the main thread only, and only the main thread may install one; a run
on another thread keeps Python's default handling and is stopped with `request_stop` (a UI's Stop button).
Never sys.exit: a notebook user interrupts a run to keep working in the same kernel.
"""

from __future__ import annotations

import contextlib
import signal
import threading


def _can_handle() -> bool:
    """Only the main thread may install a handler; and a SIGINT that is ignored (a background job) or
    handled outside Python (getsignal() is None) is left as it is."""
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGINT)
    return current is not None and current is not signal.SIG_IGN


class GracefulInterrupt:
    """While installed (a `with` block), SIGINT stops `watch`ed runs as the module docstring says.

    One object may span several runs (fit and the retry of auto_fix): `watch(state)` starts counting
    afresh for a new run. `interrupted` tells whether any SIGINT arrived while installed.
    """

    def __init__(self, state=None):
        self.state, self.count, self.interrupted = state, 0, False
        self._previous, self._depth = None, 0

    def watch(self, state) -> None:
        """Route SIGINTs to this run from now on; the next one is its first."""
        self.state, self.count = state, 0

    @property
    def hard(self) -> bool:
        """Whether a second SIGINT asked this run to stop at once."""
        return self.count >= 2

    def __enter__(self) -> GracefulInterrupt:
        # re-entrant: fit installs it, and so may the verb around fit (Pipeline.fit with auto_fix)
        if self._depth == 0 and _can_handle():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        self.count += 1
        self.interrupted = True
        if self.count == 1 and self.state is not None:
            self.state.request_stop("interrupted")
            return
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupts():
    """Hold SIGINT back until the block ends, then deliver it to the handler that was in place (a
    KeyboardInterrupt, or a graceful stop). If the block raises, its exception wins and held
    interrupts are dropped: the run is ending anyway. A no-op off the main thread
    and where SIGINT is ignored."""
    if not _can_handle():
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGINT, previous)
        raise
    signal.signal(signal.SIGINT, previous)
    for _ in held:
        signal.raise_signal(signal.SIGINT)  # runs the restored handler now (CPython checks signals at once)
