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
}


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
    """Every fit keyword the magic takes, with its default."""
    return {**DEFAULTS, **PIPELINE_FIT_DEFAULTS}


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
                               "A cell with no body trains the kind's default model.")
    made.add_argument("pipe", nargs="?", help="the Pipeline's variable name")
    made.add_argument("--help", "-h", action="store_true", help="show this help")
    for name, default in keywords().items():
        described = f"{HELP.get(name, 'a keyword of Pipeline.fit')} (default: {default!r})"
        made.add_argument(option(name), dest=name, type=literal, default=argparse.SUPPRESS,
                          metavar="VALUE", help=described.replace("%", "%%"))
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


def as_options(message: str) -> str:
    """A Python API message in the magics' own syntax: reuse_reason="..." -> --reuse-reason "...".
    A keyword inside a call written out in the message (pipe.test(run='x')) stays Python."""
    names = [*keywords(), "reuse_reason", "run"]
    return re.sub(r"(?<![\w.(,])(?<!, )(" + "|".join(names) + r")=", lambda m: option(m.group(1)) + " ", message)
