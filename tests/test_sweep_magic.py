"""A sweep through %%train: in IPython's own test shell, and clicked to a stop in real kernels."""

import json

import pytest
from IPython.core.error import UsageError

from kernels import Kernel, errors, releases, text, updates, widget_models
from test_jupyter_magics import ip, ready  # noqa: F401 - ip is a fixture

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


@pytest.fixture
def shell(ip):
    """IPython's test shell (tests/test_jupyter_magics.py) with a prepared pipeline named pipe."""
    ready(ip)
    return ip


def test_a_sweep_cell_runs_its_body_once_per_trial_with_the_values_bound(shell):
    shell.user_ns["units"] = "mine"  # a notebook variable the sweep binds: put back afterwards
    cell = ("%%train pipe --lr 1e-3,1e-2 --units 8,16 --epochs 2 --method grid\n"
            "seen.append(units)\n"
            "model = nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(units,))\n")
    shell.user_ns["seen"] = []
    result = shell.run_cell(cell)
    assert result.success, result.error_in_exec
    report = shell.user_ns["pipe"].last_sweep
    assert sorted(shell.user_ns["seen"]) == [8, 8, 16, 16] and len(report.trials) == 4
    assert shell.user_ns["units"] == "mine"
    stored = {r["name"]: r for r in shell.user_ns["pipe"].ledger.runs(shell.user_ns["pipe"].fingerprint)}
    best = stored[report.best_run]
    assert best["config"]["model_config"]["hidden"] == [report.best_params["units"]]
    # the cell to copy: the line with the trial's lr, its model value assigned, then the body
    assert best["cell_text"] == report.best_line
    first, assigned, *body = report.best_line.splitlines()
    assert first.startswith("%%train pipe --epochs 2 --lr ") and "--method" not in first and "--units" not in first
    assert assigned == f"units = {report.best_params['units']}" and body[-1].startswith("model = nt.models.MLP(")


def test_a_space_line_in_the_cell_is_the_search_space(shell):
    cell = ("%%train pipe --trials 2 --epochs 1\n"
            "space = {'dropout': (0.1, 0.5), 'lr': nt.loguniform(1e-4, 1e-2)}\n"
            "model = nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(8,), dropout=dropout)\n")
    assert shell.run_cell(cell).success
    report = shell.user_ns["pipe"].last_sweep
    assert len(report.trials) == 2 and report.method == "random"
    assert all(0.1 <= d <= 0.5 for d in report.trials["dropout"]) and "dropout" not in shell.user_ns
    assert "space =" not in report.best_line and report.best_line.splitlines()[1].startswith("dropout = 0.")


def test_sweep_mistakes_are_one_line_usage_errors(shell):
    result = shell.run_cell("%%train pipe --dropout 0.2 --epochs 1\nmodel = None\n")
    assert isinstance(result.error_in_exec, UsageError) and "unrecognized arguments: --dropout 0.2" in str(
        result.error_in_exec)
    result = shell.run_cell("%%train pipe --dropout 0.1:0.5 --method grid\n")
    assert isinstance(result.error_in_exec, UsageError)
    assert "A grid needs values to list, and dropout is a range" in str(result.error_in_exec)
    result = shell.run_cell("%%train pipe --trials 3 --epochs 1\n")
    assert isinstance(result.error_in_exec, UsageError) and "a sweep needs something to search" in str(
        result.error_in_exec)


SETUP = """
from palmerpenguins import load_penguins
pipe = nt.Pipeline(load_penguins(), target="species", workdir=WORKDIR)
pipe.clean(); pipe.split(); pipe.preprocess()
"""
# long trials: the sweep must end by the click, not by the epoch limit
SWEEP = ("%%train pipe --lr 1e-3,2e-3,3e-3 --epochs 3000 --patience none --batch-size 4\n"
         "model = nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(64,))\n")
REPORT = """
s = pipe.last_sweep
print("REPORT", json.dumps({"stop_reason": s.stop_reason, "trials": len(s.trials), "planned": s.planned,
    "runs": [r["stop_reason"] for r in pipe.ledger.runs(pipe.fingerprint, pipe.split_id)],
    "tag": pipe.ledger.runs(pipe.fingerprint, pipe.split_id)[0]["config"]["sweep"]["id"] == s.sweep_id}))
"""


def clicks_reach_a_sweep(release) -> bool:
    """Where a %%train cell reads a click while it trains (nbtrain.jupyter.kernel): ipykernel 6 and 7.4+."""
    version = tuple(int(p) for p in release.version.split(".")[:2])
    return version < (7, 0) or version >= (7, 4)


@pytest.mark.slow
@pytest.mark.parametrize("release", [r for r in releases() if clicks_reach_a_sweep(r)], ids=lambda r: r.version)
def test_stop_in_a_real_kernel_ends_the_sweep_and_keeps_the_finished_trial(release, tmp_path):
    kernel = Kernel(release, tmp_path)
    try:
        setup = kernel.run(f"%load_ext nbtrain\nimport json, torch\nimport nbtrain as nt\ntorch.set_num_threads(1)\n"
                           f"WORKDIR = {str(tmp_path / 'runs')!r}\n{SETUP}")
        assert not errors(setup), text(setup)
        since = len(kernel.messages)
        cell = kernel.start(SWEEP)

        def second_epoch(message) -> bool:
            state = message["content"].get("data", {}).get("state", {}) if message["msg_type"] == "comm_msg" else {}
            return type(state.get("value")) is int and state["value"] >= 2  # the trial view's epoch counter

        kernel.wait(cell, timeout=300, until=second_epoch)
        [(button, _)] = [(c, s) for c, s in widget_models(kernel.messages[since:], "ButtonModel")
                         if s["description"] == "Stop"]
        kernel.click(button)
        messages = kernel.wait(cell, timeout=300)
        assert not errors(messages), text(messages)
        shown = text(kernel.messages[since:])
        assert "trial 1 of 3" in shown and "ended by Stop after 1 of 3 trials (the rest not started)" in shown
        assert any(u.get("description") == "Stopping…" for u in updates(kernel.messages[since:], button))
        out = kernel.run(REPORT)
        assert not errors(out), text(out)
        said = json.loads(text(out).split("REPORT", 1)[1])
        assert said == {"stop_reason": "stopped", "trials": 1, "planned": 3, "runs": ["stopped"], "tag": True}
    finally:
        kernel.close()
