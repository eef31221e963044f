"""Fixes written as the `%%train` line to run next.

The magic's options are fit's keywords with dashes for underscores (`--weight-decay 0.1`). When the
run came from a `%%train` cell, its own first line is kept and only the changed options are replaced
or added, so the line is the user's, ready to paste; otherwise the line starts from the keywords the
run was given through the Python API.
"""

from __future__ import annotations

import shlex

# not %%train options (objects, or what the cell body defines); a loss or optimizer given as a name is kept
_NOT_OPTIONS = ("model", "callbacks", "state", "resume", "view", "cell_text", "auto_fix", "doctor")


def format_value(value) -> str:
    """A keyword's value as %%train reads it back: 1e-4 rather than 0.0001, none, true, bare words."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            mantissa, exponent = f"{value:.2e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:.4g}"
    return str(value)


def train_line(changes: dict, given: dict | None = None, cell_text: str | None = None) -> str:
    """The %%train line that applies `changes` to a run given `given` (or started by `cell_text`)."""
    first = (cell_text or "").lstrip().splitlines()[0] if (cell_text or "").strip() else ""
    if first.startswith("%%train"):
        words = shlex.split(first)[1:]
    else:
        words = [word for key, value in (given or {}).items() if key not in _NOT_OPTIONS
                 and isinstance(value, (int, float, str, bool, type(None)))
                 for word in (_option(key), format_value(value))]
    for key, value in changes.items():
        option = _option(key)
        if option in words:
            at = words.index(option)
            if at + 1 < len(words) and not words[at + 1].startswith("--"):
                words[at + 1] = format_value(value)
            else:
                words.insert(at + 1, format_value(value))
        else:
            words += [option, format_value(value)]
    return shlex.join(["%%train", *words])


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")
