"""`%%train` options: fit's keywords with dashes, parsed from the magic's line.

Values are read as Python literals where they are one (3, 1e-3, 0.1, none, true), otherwise as
text ("cosine"), so every keyword takes the same syntax: `--lr 3e-4 --patience none`. fit() checks
the values themselves (a wrong one is a one-line error before anything is shown).
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex

from IPython.core.error import UsageError

from nbtrain.errors import NbtrainError
from nbtrain.training.fit import DEFAULTS

# names a %%train cell may define -> the fit keyword each becomes (what the cell leaves out: defaults)
CELL_NAMES = {"model": "model", "loss": "loss", "optimizer": "optimizer", "scheduler": "schedule"}


# Pipeline.fit's own keywords (beyond the training engine's)
PIPELINE_FIT_DEFAULTS = {"auto_fix": False, "doctor": True, "tracker": None, "tracking_uri": None, "threshold": 0.5}

# what each option does, for --help (nbtrain.training.fit's table says why each default was chosen)
HELP = {
    "loss": "loss function; auto picks one by task (bce, focal, cross_entropy, weighted_cross_entropy, mse, mae, huber, "
             "bpr, lambdarank)",
    "optimizer": "adamw, adam or sgd (sgd: momentum 0.9, Nesterov)",
    "lr": "learning rate (%nbtrain lr_find suggests one)",
    "weight_decay": "AdamW's decoupled weight decay (never on biases and norm layers)",
    "batch_size": "rows per step",
    "epochs": "upper bound on epochs; early stopping usually ends the run first",
    "patience": "epochs without improvement of the monitored value before stopping; none: never stop early",
    "min_delta": "smallest change of the monitored value that counts as an improvement",
    "schedule": "learning-rate schedule: cosine, linear, plateau or none",
    "warmup": "linear warmup: steps (whole number) or a share of all steps (0 < share < 1)",
    "accumulate": "micro-batches per optimizer step (effective batch = batch size x accumulate)",
    "clip_grad": "maximum gradient norm; none: no clipping",
    "precision": "auto (bf16 autocast on a GPU that supports it), fp32 or bf16",
    "device": "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps",
    "devices": "processes training together (DDP via torchrun): a number, or all (every GPU); batch size stays global",
    "seed": "random seed of initialisation and batch order; none: the pipeline's seed",
    "name": "the run's name; none: <model class>-<n>",
    "monitor": "validation value that selects the best epoch: val_loss or val_<metric>, e.g. val_f1",
    "resume": "continue a run: a run folder or a checkpoint file",
    "auto_fix": "true: retry once with the training doctor's fix of its top finding",
    "doctor": "false: no training doctor (no diagnoses)",
    "tracker": "also log the run to an experiment tracker: mlflow",
    "tracking_uri": "where the tracker stores runs; none: in the work folder",
    "threshold": "how a classifier's labels are read from its probabilities: 0.5, another number, balanced or f1",
    "trials": "run a sweep of this many trials (default 10; a grid: all its points); see Sweeps below",
    "method": "the sweep's search: random, grid, optuna, or auto (a grid when every range is a list, else random)",
}

# A sweep: any option's value may be a range, and options that are not fit keywords (--dropout) name the
# model's hyperparameters, which the cell body reads as variables (nbtrain.jupyter.sweep_cell).
SWEEP_OPTIONS = {"trials": None, "method": "auto"}
SWEEP_HELP = ("Sweeps: a value a,b,c is a list of choices, low:high a uniform range, low:high:log a log-uniform "
              "one; --trials N or --method M makes the cell a sweep, so does a range or a `space = {...}` line in "
              "the body. Options that are not fit keywords (--dropout 0.1:0.5) are the model's: the body runs once "
              "per trial with every searched value bound as a variable.")


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


def keywords() -> dict:
    """Every keyword the magic takes, with its default: fit's, and a sweep's."""
    return {**DEFAULTS, **PIPELINE_FIT_DEFAULTS, **SWEEP_OPTIONS}


def option(keyword: str) -> str:
    return "--" + keyword.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a user's mistake: one line in the notebook, no traceback
        raise UsageError(f"%%train: {message}.{_did_you_mean(message)} See %%train --help.")


def _did_you_mean(message: str) -> str:
    """' Did you mean --batch-size?' for each unknown option close to a real one."""
    unknown = re.findall(r"(?<!\w)(--?[\w-]+)", message.partition("unrecognized arguments:")[2])
    known = [option(k) for k in keywords()]
    hints = []
    for word in unknown:
        match = difflib.get_close_matches(word.replace("_", "-"), known, n=1, cutoff=0.75)
        if match:
            hints.append(f" Did you mean {match[0]} (for {word})?" if len(unknown) > 1 else f" Did you mean {match[0]}?")
    return "".join(hints)


def parser() -> argparse.ArgumentParser:
    # argparse %-formats usage and help: %%%% prints as %%
    made = _Parser(prog="%%%%train", add_help=False, usage="%%%%train [PIPE] [--option value ...]",
                   description="Train a model on PIPE (the notebook's only Pipeline when left out). The cell "
                               f"body may define {', '.join(CELL_NAMES)}; what it leaves out takes the defaults. "
                               "A cell with no body trains the kind's default model.", epilog=SWEEP_HELP)
    made.add_argument("pipe", nargs="?", help="the Pipeline's variable name")
    made.add_argument("--help", "-h", action="store_true", help="show this help")
    for name, default in keywords().items():
        described = f"{HELP.get(name, 'a keyword of Pipeline.fit')} (default: {default!r})"
        made.add_argument(option(name), dest=name, type=literal, default=argparse.SUPPRESS,
                          metavar="VALUE", help=described.replace("%", "%%"))
    return made


def parse(line: str, body: str = "") -> tuple[str | None, dict, bool]:
    """(pipeline name or None, keywords given, whether help was asked for). In a sweep (see is_sweep) an
    option that is not a fit keyword is a model hyperparameter and comes back with the keywords."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%%train: cannot read the options ({exc}).") from exc
    made = parser()
    options, unknown = made.parse_known_args(words)
    options = vars(options)
    given = {k: v for k, v in options.items() if k not in ("pipe", "help")}
    if unknown:
        extra = _model_options(unknown)
        if extra is None or not is_sweep(given, extra, body):
            made.error(f"unrecognized arguments: {' '.join(unknown)}")
        given.update(extra)
    return options["pipe"], given, options["help"]


def _model_options(words: list[str]) -> dict | None:
    """--name value pairs (a sweep's model hyperparameters), or None when the words are not such pairs."""
    if len(words) % 2 or not all(w.startswith("--") and len(w) > 2 for w in words[::2]):
        return None
    return {w[2:].replace("-", "_"): literal(v) for w, v in zip(words[::2], words[1::2])}


def range_value(value):
    """An option's value as a sweep's space entry: "a,b,c" a choice, "low:high" a uniform range, "low:high:log"
    a log-uniform one (nbtrain.sweep_space); None when it is a plain value."""
    from nbtrain.sweep_space import Choice, Range
    if not isinstance(value, str):
        return None
    if "," in value:
        return Choice(tuple(literal(part.strip()) for part in value.split(",") if part.strip()))
    parts = value.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        return None
    low, high = literal(parts[0]), literal(parts[1])
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        return None
    try:
        return Range(low, high, log=len(parts) == 3, integer=all(isinstance(v, int) for v in (low, high)))
    except NbtrainError as exc:
        raise UsageError(f"%%train: {value}: {exc}") from None


def is_sweep(given: dict, extra: dict | None = None, body: str = "") -> bool:
    """Is this %%train cell a sweep: --trials or --method, a range among its values, or a `space =` line?"""
    values = {**given, **(extra or {})}
    return (any(k in values for k in SWEEP_OPTIONS) or any(range_value(v) is not None for v in values.values())
            or bool(re.search(r"^space\s*=", body, flags=re.MULTILINE)))


def usage() -> str:
    return parser().format_help()


def as_options(message: str) -> str:
    """A Python API message in the magics' own syntax: reuse_reason="..." -> --reuse-reason "...".
    A keyword inside a call written out in the message (pipe.test(run='x')) stays Python."""
    names = [*keywords(), "reuse_reason", "run"]
    return re.sub(r"(?<![\w.(,])(?<!, )(" + "|".join(names) + r")=", lambda m: option(m.group(1)) + " ", message)
