"""Training on a worker thread while the caller awaits it, so a notebook kernel stays free to read
widget messages (the training view's Stop button) between steps.

A kernel reads no message while a cell blocks. ipykernel 7.4 and later do dispatch comm messages
(a button click) while an async cell awaits, and still hold the next cells back until it ends. So
`await run_on_worker(work, stop=...)` runs `work` on a thread, in a copy of the caller's context
(ipykernel 7 keeps the cell's parent header in context variables: output lands in the cell that
started the run), and waits in short sleeps. Whatever touches widgets or the display is handed back
to the awaiting thread with `on_caller` and runs there between sleeps, so no widget message is
ever sent from the worker (ipykernel 7.0 broke on that).

Kernel > Interrupt sends SIGINT. The first one (or the kernel cancelling the awaiting task, which is
how ipykernel answers SIGINT in an async cell) calls `stop("interrupted")`: the run ends after its
current step, with its best weights, and is logged. A second raises KeyboardInterrupt at once; the
thread still ends at its next step, so its checkpoints and ledger row stay consistent.

No IPython here: any asyncio caller can use it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import signal
import threading

WAIT_SECONDS = 0.05  # how long the awaiting thread sleeps between looks: a click is read within this

_CALLER: contextvars.ContextVar = contextvars.ContextVar("nbtrain_worker_caller", default=None)


class _Caller:
    """The awaiting thread and the calls the worker left for it."""

    def __init__(self) -> None:
        self.thread = threading.current_thread()
        self.calls: queue.SimpleQueue = queue.SimpleQueue()

    def drain(self) -> None:
        while True:
            try:
                call = self.calls.get_nowait()
            except queue.Empty:
                return
            call()


def on_caller(function, *args) -> None:
    """Run `function(*args)` on the thread awaiting this worker; at once anywhere else."""
    caller = _CALLER.get()
    if caller is None or threading.current_thread() is caller.thread:
        function(*args)
    else:
        caller.calls.put(lambda: function(*args))


def on_worker() -> bool:
    """True on a thread started by run_on_worker (its caller is awaiting it)."""
    caller = _CALLER.get()
    return caller is not None and threading.current_thread() is not caller.thread


class _Interrupts:
    """SIGINT while awaiting: the first asks the run to stop, a second raises KeyboardInterrupt."""

    def __init__(self, stop) -> None:
        self.stop, self.count, self.previous = stop, 0, None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set a handler
            self.previous = signal.signal(signal.SIGINT, lambda _signum, _frame: self.hit())
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def hit(self) -> None:
        self.count += 1

    def check(self) -> None:
        if self.count >= 2:
            raise KeyboardInterrupt("interrupted twice: the run on the worker thread ends after its current step")
        if self.count == 1:  # again each time: the run may not have started when the signal came
            self.stop("interrupted")


async def run_on_worker(work, *, stop, wait_seconds: float = WAIT_SECONDS):
    """Await `work()` run on a worker thread; `stop(reason)` asks it to end early (see the module doc)."""
    caller = _Caller()
    token = _CALLER.set(caller)
    try:
        context = contextvars.copy_context()  # the worker sees this caller, and the cell's parent header
    finally:
        _CALLER.reset(token)
    done: concurrent.futures.Future = concurrent.futures.Future()

    def target() -> None:
        try:
            done.set_result(context.run(work))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting thread, which raises it
            done.set_exception(exc)

    with _Interrupts(stop) as interrupts:
        threading.Thread(target=target, name="nbtrain-fit", daemon=True).start()
        while not done.done():
            caller.drain()
            try:
                await asyncio.sleep(wait_seconds)
            except asyncio.CancelledError:  # ipykernel's SIGINT in an async cell: a first interrupt
                interrupts.hit()
            interrupts.check()
        caller.drain()
    return done.result()
