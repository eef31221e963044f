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
from nbtrain.jupyter import options, sweep_cell

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
    _pending = None  # the %%train cell whose body is running: (pipeline, fit keywords, cell text, names before)

    @line_cell_magic
    def train(self, line: str, cell: str | None = None):
        """%%train [PIPE] [--option value ...]: fit a model; --help lists the options.

        The cell body may define model, loss, optimizer, scheduler; a cell with no body, or the line
        form %train [PIPE] [--option value ...], trains the kind's default model."""
        _, given, wants_help = options.parse(line, cell or "")
        if wants_help:
            print(options.usage())
            return None
        if options.is_sweep(given, body=cell or ""):
            return self._sweep(line, cell or "")
        self._start(line, cell or "")  # IPython has expanded $names in the line already
        if cell:
            self._run_cell_body(cell)
        self.end_cell()
        # the view left the run's summary in the output; the Run itself is pipe.last_run

    def start_cell(self, line: str, body: str) -> None:
        """First line of a %%train cell (nbtrain.jupyter.cells): check the options and the pipeline
        before the body runs, and note the names the body may define. $name in the line is the
        notebook's variable, as in any magic."""
        self._start(self.shell.var_expand(line, depth=1), body)  # depth 1: the cell's own namespace

    def _start(self, line: str, body: str) -> None:
        name, keywords, _ = options.parse(line)
        pipe = self._pipeline(name)
        namespace = self.shell.user_ns
        text = f"%%train {line}\n{body}" if body.strip() else f"%%train {line}"
        self._pending = (pipe, keywords, text, {k: namespace[k] for k in options.CELL_NAMES if k in namespace})

    def end_cell(self) -> None:
        """Last line of a %%train cell: fit, with what the body defined."""
        pipe, model, keywords = self._fit_keywords()
        self._call(pipe.fit, model, **keywords)

    async def end_cell_async(self) -> None:
        """Last line of a %%train cell where the kernel reads clicks while a cell awaits (nbtrain.jupyter.kernel)."""
        pipe, model, keywords = self._fit_keywords()
        try:
            await pipe.fit_async(model, **keywords)
        except NbtrainError as exc:
            raise _usage_error(exc) from None

    def sweep_cell(self, line: str, body: str) -> None:
        """A %%train cell that is a sweep (nbtrain.jupyter.sweep_cell), as nbtrain.jupyter.cells rewrites it."""
        self._sweep(self.shell.var_expand(line, depth=1), body)

    async def sweep_cell_async(self, line: str, body: str) -> None:
        """The same where the kernel reads clicks while a cell awaits: the sweep trains on a worker thread."""
        from nbtrain.training.worker import run_on_worker
        pipe, arguments = self._sweep_plan(self.shell.var_expand(line, depth=1), body)
        with sweep_cell.Namespace(self.shell, arguments["space"]):
            try:
                report = await run_on_worker(lambda: pipe.sweep(**arguments), stop=pipe.request_stop)
            except NbtrainError as exc:
                raise _usage_error(exc) from None
        self._show_sweep(report)

    def _sweep(self, line: str, body: str) -> None:
        pipe, arguments = self._sweep_plan(line, body)
        with sweep_cell.Namespace(self.shell, arguments["space"]):  # the trial's values, bound for the body
            report = self._call(pipe.sweep, **arguments)
        self._show_sweep(report)

    def _sweep_plan(self, line: str, body: str) -> tuple:
        name, keywords, _ = options.parse(line, body)
        pipe = self._pipeline(name)
        return pipe, sweep_cell.plan(self.shell, name, keywords, body)

    @staticmethod
    def _show_sweep(report) -> None:
        """The notebook's sweep view shows the report itself; a terminal gets it here (also pipe.last_sweep)."""
        from nbtrain.training.progress import in_notebook
        if not in_notebook():
            display(report)

    def _fit_keywords(self) -> tuple:
        if self._pending is None:
            raise UsageError("%%train: end_cell() without start_cell(); run the whole %%train cell.")
        (pipe, keywords, text, before), self._pending = self._pending, None
        namespace = self.shell.user_ns
        defined = {k: namespace[k] for k in options.CELL_NAMES
                   if k in namespace and (k not in before or namespace[k] is not before[k])}
        for name, keyword in options.CELL_NAMES.items():
            if name in defined and keyword in keywords:
                raise UsageError(f"%%train: {keyword} is given twice, as {name} in the cell and as "
                                 f"{options.option(keyword)}; keep one.")
            if name in defined:
                keywords[keyword] = defined[name]
        return pipe, keywords.pop("model", None), {**keywords, "cell_text": text}

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

    def _run_cell_body(self, cell: str) -> None:
        """Run the cell body in the user's namespace (where IPython's own path reaches the magic: e.g.
        %%train under another cell magic). IPython's compiler cache names the code, so a traceback
        shows the user's lines."""
        code = self.shell.transform_cell(cell)
        try:
            filename = self.shell.compile.cache(code, self.shell.execution_count, raw_code=cell)
        except TypeError:  # IPython 7: no raw_code
            filename = self.shell.compile.cache(code, self.shell.execution_count)
        exec(compile(code, filename, "exec"), self.shell.user_ns)  # noqa: S102 - the user's own cell

    @staticmethod
    def _call(verb, *args, **kwargs):
        try:
            return verb(*args, **kwargs)
        except NbtrainError as exc:
            raise _usage_error(exc) from None


def _usage_error(exc: NbtrainError) -> UsageError:
    """A user's mistake in one line, in the magics' syntax (--reuse-reason "...", not reuse_reason="...")."""
    return UsageError(f"{type(exc).__name__}: {options.as_options(str(exc))}")


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
