"""`%%train` and `%nbtrain`: thin parsers over the Pipeline's verbs.

A user's mistake (a bad option, an unknown pipeline, a verb out of order, a locked test set) is a
one-line UsageError in the notebook; the same mistake through the Python API raises the
NbtrainError subclass. Errors in the user's own cell code keep their traceback.
"""

from __future__ import annotations

import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.display import display

from nbtrain.errors import NbtrainError
from nbtrain.jupyter import options

SUBCOMMANDS = {
    "status": "%nbtrain status [PIPE]: stages done, guards, split sizes, runs, test-lock state",
    "runs": "%nbtrain runs [PIPE]: every run of this dataset and split, best first",
    "test": "%nbtrain test [PIPE] final [--run NAME] [--reuse-reason TEXT]: the final test, once",
    "doctor": "%nbtrain doctor [PIPE] [--run NAME]: the diagnoses of a run (default: the latest)",
    "lr_find": "%nbtrain lr_find [PIPE]: sweep the learning rate on a copy of the model, suggest one",
    "tensorboard": "%nbtrain tensorboard [PIPE]: TensorBoard for the pipeline's runs, inline",
    "panel": "%nbtrain panel [PIPE]: a form over the pipeline (buttons, hyperparameters, runs, test)",
}
CONFIRM = "final"


@magics_class
class NbtrainMagics(Magics):
    @line_cell_magic
    def train(self, line: str, cell: str | None = None):
        """%%train [PIPE] [--option value ...]: fit a model; --help lists the options.

        The line form, %train [PIPE] [--option value ...], trains the default model (IPython refuses
        a cell magic with an empty body)."""
        name, keywords, wants_help = options.parse(line)
        if wants_help:
            print(options.usage())
            return None
        pipe = self._pipeline(name)
        defined = self._run_cell_body(cell) if cell else {}
        for name, keyword in options.CELL_NAMES.items():
            if name in defined and keyword in keywords:
                raise UsageError(f"%%train: {keyword} is given twice, as {name} in the cell and as --{keyword}; "
                                 "keep one.")
            if name in defined:
                keywords[keyword] = defined[name]
        model = keywords.pop("model", None)
        text = f"%%train {line}\n{cell}" if cell else f"%train {line}"
        self._call(pipe.fit, model, cell_text=text, **keywords)
        # the view left the run's summary in the output; the Run itself is pipe.last_run

    @line_magic
    def nbtrain(self, line: str):
        """%nbtrain SUBCOMMAND [PIPE] ...: status, runs, test, doctor, tensorboard, panel."""
        words = shlex.split(line)
        if not words or words[0] not in SUBCOMMANDS:
            raise UsageError("%nbtrain needs a subcommand:\n  " + "\n  ".join(SUBCOMMANDS.values()))
        command, rest = words[0], words[1:]
        flags = _flags(rest)
        names = [w for w in rest if w != CONFIRM]
        pipe = self._pipeline(names[0] if names else None)
        if command == "test":
            if CONFIRM not in rest:
                raise UsageError(f"The test split can be evaluated once, and that look is final. To go ahead, "
                                 f"type: %nbtrain test {' '.join(rest + [CONFIRM])}")
            return self._call(pipe.test, flags.get("run"), reuse_reason=flags.get("reuse_reason"))
        return getattr(self, f"_{command}")(pipe, flags)

    def _status(self, pipe, flags):
        return pipe.status()

    def _runs(self, pipe, flags):
        return self._call(lambda: pipe.runs)

    def _doctor(self, pipe, flags):
        return self._call(pipe.diagnose, flags.get("run"))

    def _lr_find(self, pipe, flags):
        return self._call(pipe.lr_find)

    def _tensorboard(self, pipe, flags):
        from nbtrain.jupyter.tensorboard import show
        show(pipe.workdir / "runs")

    def _panel(self, pipe, flags):
        from nbtrain.jupyter.panel import Panel
        display(Panel(pipe).box)

    def _pipeline(self, name: str | None):
        from nbtrain.pipeline import Pipeline
        namespace = self.shell.user_ns
        if name is not None:
            if name.startswith("-"):
                raise UsageError(f"{name} is an option, not a pipeline; put the pipeline's name first.")
            if not isinstance(namespace.get(name), Pipeline):
                found = type(namespace[name]).__name__ if name in namespace else "nothing"
                raise UsageError(f"{name!r} is not a Pipeline in this notebook (it is {found}).")
            return namespace[name]
        pipelines = [k for k, v in namespace.items() if isinstance(v, Pipeline) and not k.startswith("_")]
        if len(pipelines) != 1:
            which = f"there are {len(pipelines)}: {', '.join(pipelines)}" if pipelines else "there is none"
            raise UsageError(f"Name the Pipeline to use ({which}), e.g. %%train pipe --epochs 20.")
        return namespace[pipelines[0]]

    def _run_cell_body(self, cell: str) -> dict:
        """Run the cell in the user's namespace; return the names it assigned."""
        namespace = self.shell.user_ns
        before = {k: id(v) for k, v in namespace.items()}
        code = self.shell.transform_cell(cell)
        exec(compile(code, "<%%train cell>", "exec"), namespace)  # noqa: S102 - the user's own cell
        return {k: v for k, v in namespace.items() if k in options.CELL_NAMES and before.get(k) != id(v)}

    @staticmethod
    def _call(verb, *args, **kwargs):
        try:
            return verb(*args, **kwargs)
        except NbtrainError as exc:
            raise UsageError(f"{type(exc).__name__}: {exc}") from None


def _flags(words: list[str]) -> dict:
    """--run NAME, --reuse-reason TEXT: removed from `words`, returned by key."""
    flags = {}
    for flag in ("--run", "--reuse-reason"):
        if flag in words:
            at = words.index(flag)
            if at + 1 >= len(words):
                raise UsageError(f"{flag} needs a value.")
            flags[flag[2:].replace("-", "_")] = words[at + 1]
            del words[at:at + 2]
    return flags
