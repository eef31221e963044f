"""A `%%train` cell that is a sweep: its space from the line and the body, its body as the model's factory.

    %%train pipe --lr 1e-4:1e-2:log --dropout 0.1:0.5 --trials 12 --epochs 30
    model = nt.models.MLP(pipe.n_inputs, pipe.n_outputs, dropout=dropout)

The space: every option whose value is a range or a list of choices (nbtrain.jupyter.options.range_value),
and a top-level `space = {...}` line in the body (its entries win), in the Python form of
nbtrain.sweep_space. Options that are fit keywords go to every trial's fit; the others (--dropout) are the
model's. The rest of the body runs once per trial in the notebook's namespace, with every value of the
trial bound as a variable first, and the `model` it leaves is the trial's model (none: the default model).
After the sweep those variables are put back as they were. Each trial's cell in the ledger is the line
with the trial's values and the body with its model values assigned first: the best one is the cell to copy.
"""

from __future__ import annotations

import ast
import shlex

from IPython.core.error import UsageError

from nbtrain.doctor.fixes import format_value
from nbtrain.jupyter import options

NOT_FIT = ("trials", "method")


def plan(shell, name: str | None, keywords: dict, body: str) -> dict:
    """pipe.sweep's arguments for this cell (less the pipeline): space, trials, method, model, cell_text, fit keywords."""
    keywords = dict(keywords)
    settings = {k: keywords.pop(k) for k in NOT_FIT if k in keywords}
    space = {k: v for k, v in keywords.items() if options.range_value(v) is not None}
    fixed = {k: v for k, v in keywords.items() if k not in space}
    space = {k: options.range_value(v) for k, v in space.items()}
    fit_names = set(options.keywords())
    model_fixed = {k: v for k, v in fixed.items() if k not in fit_names}  # --units 64: a model value kept fixed
    fixed = {k: v for k, v in fixed.items() if k in fit_names}
    source = shell.transform_cell(body) if body.strip() else ""
    code, own_space = _split_body(shell, source)
    space = {**space, **model_fixed, **own_space}
    if not space:
        raise UsageError("%%train: a sweep needs something to search: a range (--lr 1e-4:1e-2:log, --dropout "
                         "0.1:0.5), a list (--lr 1e-4,3e-4,1e-3) or a `space = {...}` line in the cell.")
    line = shlex.join(["%%train", *([name] if name else []),
                       *[w for k, v in fixed.items() for w in (options.option(k), format_value(v))]])
    kept = "\n".join(ast.get_source_segment(source, node) or "" for node in code.body) if code else ""
    model = _factory(shell, code, source) if code else None
    return {"space": space, **settings, "model": model, "cell_text": f"{line}\n{kept}" if kept.strip() else line,
            **fixed}


def _split_body(shell, body: str):
    """(the body, as IPython transformed it, without its `space = ...` lines as an ast.Module, or None when
    nothing is left; the space they define, run in the notebook's namespace)."""
    try:
        tree = ast.parse(body)
    except SyntaxError as exc:
        raise UsageError(f"%%train: the cell body does not parse: {exc}") from None
    is_space = [isinstance(n, ast.Assign) and [getattr(t, "id", None) for t in n.targets] == ["space"]
                for n in tree.body]
    space = {}
    if any(is_space):
        defining = ast.Module(body=[n for n, s in zip(tree.body, is_space) if s], type_ignores=[])
        exec(compile(defining, _filename(shell, body), "exec"), shell.user_ns)  # noqa: S102 - the user's own line
        space = shell.user_ns["space"]
        if not isinstance(space, dict):
            raise UsageError(f"%%train: space must be a dict of name: range; the cell made a {type(space).__name__}.")
    rest = [n for n, s in zip(tree.body, is_space) if not s]
    return (ast.Module(body=rest, type_ignores=[]) if rest else None), space


def _filename(shell, body: str) -> str:
    """IPython's compiler cache names the code, so a traceback shows the user's lines."""
    try:
        return shell.compile.cache(body, shell.execution_count, raw_code=body)
    except TypeError:  # IPython 7: no raw_code
        return shell.compile.cache(body, shell.execution_count)


def _factory(shell, code: ast.Module, body: str):
    """The trial's model: the body run with the trial's values bound as variables; the `model` it leaves."""
    compiled = compile(code, _filename(shell, body), "exec")

    def build(**values):
        namespace = shell.user_ns
        namespace.pop("model", None)  # a body that defines no model trains the default one, not the last trial's
        namespace.update(values)
        exec(compiled, namespace)  # noqa: S102 - the user's own cell body
        return namespace.get("model")

    build.takes_all_values = True  # nbtrain.sweep.build_model: every value of the trial, not only the model's
    return build


class Namespace:
    """Puts the notebook's variables that a sweep binds back as they were, when the sweep ends."""

    def __init__(self, shell, names):
        self.shell, self.names = shell, list(names)

    def __enter__(self):
        self.before = {n: self.shell.user_ns[n] for n in self.names if n in self.shell.user_ns}
        return self

    def __exit__(self, *exc):
        for name in self.names:
            if name in self.before:
                self.shell.user_ns[name] = self.before[name]
            else:
                self.shell.user_ns.pop(name, None)
