"""`%%train` cells as IPython runs them. An input transformer (IPython's cleanup stage, which comes
before its own magic handling) rewrites a cell that starts with `%%train`, or that is one `%train`
line, into plain Python with the same line numbers:

    %%train pipe --epochs 4      ->  <magics>.start_cell('pipe --epochs 4', '<the body>')
    model = MLP(...)             ->  model = MLP(...)
                                 ->  <magics>.end_cell()    or    await <magics>.end_cell_async()

Why: the options and the pipeline are checked before the body runs; the user's lines run as their
own cell, so an error in them shows their line, not nbtrain's frames; a cell with no body trains
the default model (IPython refuses an empty cell magic); and where the kernel reads clicks while a
cell awaits (ipykernel 7.4+, nbtrain.jupyter.kernel) the last line awaits, so the Stop button works.
`%%train --help` and cells IPython's own path must report (unreadable options) are left to the magic.
"""

from __future__ import annotations

import re

from IPython.core.error import UsageError

from nbtrain.jupyter import options
from nbtrain.jupyter.kernel import can_await_cells

FIRST_LINE = re.compile(r"(%%|%)train(?:\s+(.*))?$")
MAGICS = 'get_ipython().find_cell_magic("train").__self__'


def train_cells(lines: list[str]) -> list[str]:
    """The IPython cleanup transformer (a list of the cell's lines, each ending in a newline)."""
    found = FIRST_LINE.match(lines[0].rstrip("\r\n")) if lines else None
    if found is None:
        return lines
    percent, line = found.group(1), (found.group(2) or "").strip()
    body = lines[1:]
    if percent == "%" and "".join(body).strip():  # a line magic followed by more code: IPython's own handling
        return lines
    try:
        _, given, wants_help = options.parse(line, "".join(body))
    except UsageError:
        return lines  # the magic reports it, in one line
    if wants_help:
        return lines if percent == "%" else [f"get_ipython().run_line_magic('train', {line!r})\n"]
    if options.is_sweep(given, body="".join(body)):  # the body runs once per trial (nbtrain.jupyter.sweep_cell)
        call = f"await {MAGICS}.sweep_cell_async" if can_await_cells() else f"{MAGICS}.sweep_cell"
        return [f"{call}({line!r}, {''.join(body)!r})\n"]
    end = f"await {MAGICS}.end_cell_async()" if can_await_cells() else f"{MAGICS}.end_cell()"
    if body and not body[-1].endswith("\n"):
        body[-1] += "\n"
    return [f"{MAGICS}.start_cell({line!r}, {''.join(body)!r})\n", *body, end + "\n"]


def register(shell) -> None:
    if train_cells not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(train_cells)


def unregister(shell) -> None:
    while train_cells in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(train_cells)
