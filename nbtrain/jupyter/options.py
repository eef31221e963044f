"""`%%train` options: fit's keywords with dashes, parsed from the magic's line.

Values are read as Python literals where they are one (3, 1e-3, 0.1, none, true), otherwise as
text ("cosine"), so every keyword takes the same syntax: `--lr 3e-4 --patience none`.
"""

from __future__ import annotations

import argparse
import shlex

from IPython.core.error import UsageError

from nbtrain.training.fit import DEFAULTS

# names a %%train cell may define -> the fit keyword each becomes (what the cell leaves out: defaults)
CELL_NAMES = {"model": "model", "loss": "loss", "optimizer": "optimizer", "scheduler": "schedule"}


# Pipeline.fit's own keywords (beyond the training engine's)
PIPELINE_FIT_DEFAULTS = {"auto_fix": False, "doctor": True, "tracker": None, "tracking_uri": None, "threshold": 0.5}


def literal(text: str):
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a user's mistake: one line in the notebook, no traceback
        raise UsageError(f"%%train: {message}. See %%train --help.")


def parser() -> argparse.ArgumentParser:
    made = _Parser(prog="%%train", add_help=False, usage="%%train [PIPE] [--option value ...]",
                   description="Train a model on PIPE (the notebook's only Pipeline when left out). The cell "
                               f"body may define {', '.join(CELL_NAMES)}; what it leaves out takes the defaults.")
    made.add_argument("pipe", nargs="?", help="the Pipeline's variable name")
    made.add_argument("--help", "-h", action="store_true", help="show this help")
    for name, default in {**DEFAULTS, **PIPELINE_FIT_DEFAULTS}.items():
        made.add_argument("--" + name.replace("_", "-"), dest=name, type=literal, default=argparse.SUPPRESS,
                          metavar="VALUE", help=f"default: {default!r}")
    return made


def parse(line: str) -> tuple[str | None, dict, bool]:
    """(pipeline name or None, fit keywords given, whether help was asked for)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%%train: cannot read the options ({exc}).") from exc
    options = vars(parser().parse_args(words))
    return options.pop("pipe"), {k: v for k, v in options.items() if k != "help"}, options["help"]


def usage() -> str:
    return parser().format_help()
