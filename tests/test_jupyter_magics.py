"""%%train and %nbtrain through a real IPython shell (IPython's own test shell, no notebook)."""

import re

import pytest
from IPython.core.error import UsageError
from IPython import get_ipython
from IPython.testing.globalipapp import start_ipython

from nbtrain.ledger import Ledger

from conftest import make_frame


@pytest.fixture
def ip(workdir):
    start_ipython()  # one test shell per process: started once, then reused
    shell = get_ipython()
    shell.reset(new_session=False)
    shell.run_line_magic("load_ext", "nbtrain")
    shell.user_ns.update({"df": make_frame(400), "WORKDIR": str(workdir)})
    yield shell
    shell.reset(new_session=False)


def run(ip, code):
    result = ip.run_cell(code)
    return result


def usage_error(result) -> str:
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    return str(result.error_in_exec)


def ready(ip, name="pipe"):
    assert run(ip, f"import nbtrain as nt\n{name} = nt.Pipeline(df, target='label', workdir=WORKDIR)\n"
                   f"{name}.clean(); {name}.split(); {name}.preprocess()").success


def test_loading_twice_is_harmless_and_unloading_removes_the_magics(ip):
    ip.run_line_magic("load_ext", "nbtrain")
    ip.run_line_magic("reload_ext", "nbtrain")
    assert "train" in ip.magics_manager.magics["cell"] and "nbtrain" in ip.magics_manager.magics["line"]
    ip.run_line_magic("unload_ext", "nbtrain")
    assert "train" not in ip.magics_manager.magics["cell"]
    ip.run_line_magic("load_ext", "nbtrain")


def test_help_lists_every_option_with_its_default(ip, capsys):
    assert run(ip, "%train --help").success
    out = capsys.readouterr().out
    for option in ("--lr VALUE", "default: 0.001", "--batch-size", "default: 256", "--schedule", "--resume"):
        assert option in out


def test_help_says_what_each_option_does_under_the_cell_magics_name(ip, capsys):
    from nbtrain.jupyter.options import HELP, keywords
    assert run(ip, "%%train --help\nmodel = None\n").success
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: %%train [PIPE] [--option value ...]")
    assert "learning rate" in out and "epochs without improvement" in out and "cosine, linear, plateau or none" in out
    assert set(keywords()) <= set(HELP), "every %%train option needs a line of help"
    assert "model" not in ip.user_ns or ip.user_ns["model"] is not None  # --help runs nothing of the cell


def test_train_runs_fit_with_the_cells_model_and_stores_the_cell(ip, workdir, capsys):
    ready(ip)
    cell = "%%train pipe --epochs 3 --lr 3e-3 --batch-size 64\nmodel = nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(32,))\n"
    assert run(ip, cell).success
    last = ip.user_ns["pipe"].last_run
    assert last.config["model_config"]["hidden"] == [32] and last.config["lr"] == 3e-3
    assert last.config["batch_size"] == 64 and len(last.history) == 3
    assert "epoch 3/3" in capsys.readouterr().out  # the text view outside a notebook
    stored = Ledger(workdir).runs(ip.user_ns["pipe"].fingerprint)[-1]["cell_text"]
    assert stored.startswith("%%train pipe --epochs 3") and "hidden=(32,)" in stored


def test_the_pipeline_can_be_left_out_when_there_is_one(ip):
    ready(ip)
    assert run(ip, "%train --epochs 2").success  # the line form trains the default model
    assert ip.user_ns["pipe"].last_run.config["epochs"] == 2
    ready(ip, "other")
    message = usage_error(run(ip, "%train --epochs 2"))
    assert "there are 2: pipe, other" in message


def test_mistakes_are_one_line_usage_errors(ip):
    ready(ip)
    assert "unrecognized arguments: --learning-rate" in usage_error(run(ip, "%train pipe --learning-rate 1"))
    assert "'nope' is not a Pipeline in this notebook (it is nothing)" in usage_error(run(ip, "%train nope"))
    assert "'df' is not a Pipeline in this notebook (it is DataFrame)" in usage_error(run(ip, "%train df"))
    assert usage_error(run(ip, "%train pipe --epochs 0")).startswith("ConfigError: epochs must be")
    both = "%%train pipe --loss focal\nloss = 'cross_entropy'\n"
    assert "loss is given twice" in usage_error(run(ip, both))
    fresh = "import nbtrain as nt\nraw = nt.Pipeline(df, target='label', workdir=WORKDIR)\n"
    assert run(ip, fresh).success
    assert "StageError: fit() comes after preprocess()" in usage_error(run(ip, "%train raw"))


def test_errors_in_the_users_own_code_keep_their_traceback(ip):
    ready(ip)
    result = run(ip, "%%train pipe --epochs 1\nmodel = undefined_name\n")
    assert isinstance(result.error_in_exec, NameError)


def test_an_error_in_the_cell_body_shows_the_users_line_not_nbtrains(ip, capsys):
    ready(ip)
    result = run(ip, "%%train pipe --epochs 1\nwidth = 32\nmodel = nt.models.MLP(pipe.n_inputs, undefined_name)\n")
    assert isinstance(result.error_in_exec, NameError)
    shown = capsys.readouterr()
    shown = shown.out + shown.err
    assert re.search(r"----> 3 +model = nt.models.MLP\(pipe.n_inputs, undefined_name\)", shown)
    assert "nbtrain/jupyter" not in shown and "Could not get source" not in shown


def test_a_cell_with_no_body_trains_the_default_model(ip):
    ready(ip)
    assert run(ip, "%%train pipe --epochs 2").success  # IPython itself refuses an empty cell magic
    assert ip.user_ns["pipe"].last_run.config["epochs"] == 2
    ip.user_ns["EPOCHS"] = 3
    assert run(ip, "%%train pipe --epochs $EPOCHS\n\n").success  # $name is the notebook's variable, as in any magic
    assert ip.user_ns["pipe"].last_run.config["epochs"] == 3


def test_a_misspelt_option_gets_the_right_one_suggested(ip):
    ready(ip)
    message = usage_error(run(ip, "%train pipe --batch_size 64"))
    assert "unrecognized arguments: --batch_size 64" in message and "Did you mean --batch-size?" in message
    assert "Did you mean --patience?" in usage_error(run(ip, "%train pipe --patients 3"))
    assert "Did you mean" not in usage_error(run(ip, "%train pipe --colour red"))


def test_a_wrong_value_is_one_line_naming_the_option(ip):
    ready(ip)
    assert usage_error(run(ip, "%%train pipe --epochs three\nmodel = None\n")) == (
        "ConfigError: epochs must be a whole number >= 1; received 'three'.")
    assert usage_error(run(ip, "%train pipe --lr abc")) == "ConfigError: lr must be a positive number; received 'abc'."


def test_the_final_test_needs_the_confirmation_word_and_happens_once(ip):
    ready(ip)
    assert run(ip, "%train pipe --epochs 2").success
    assert "type: %nbtrain test pipe final" in usage_error(run(ip, "%nbtrain test pipe"))
    result = run(ip, "report = %nbtrain test pipe final")
    assert result.success and ip.user_ns["report"].metrics["accuracy"] > 0
    refused = usage_error(run(ip, "%nbtrain test final"))
    assert "TestSetLockedError: The test split" in refused
    assert '--reuse-reason "..."' in refused and "reuse_reason" not in refused  # the magic's own syntax
    again = run(ip, "again = %nbtrain test final --reuse-reason 'checking the export'")
    assert again.success and ip.user_ns["again"].reused


def test_status_runs_and_doctor(ip):
    ready(ip)
    assert "doctor" in usage_error(run(ip, "%nbtrain"))
    assert run(ip, "%train pipe --epochs 2").success
    assert run(ip, "status = %nbtrain status\ntable = %nbtrain runs pipe\nfound = %nbtrain doctor").success
    assert ip.user_ns["status"].stage == "trained" and len(ip.user_ns["table"]) == 1
    assert "Test split: sealed" in repr(ip.user_ns["status"])
    assert run(ip, "sweep = %nbtrain lr_find pipe").success
    assert ip.user_ns["sweep"].line.startswith("%%train")
    assert "StageError" in usage_error(run(ip, "%nbtrain doctor --run mlp-99"))


def test_the_panel_builds_and_its_buttons_call_the_verbs(ip):
    from nbtrain.jupyter.panel import Panel
    ready(ip)
    panel = Panel(ip.user_ns["pipe"])
    panel.epochs.value, panel.lr.value = 2, 0.01
    panel.train_button.click()
    pipe = ip.user_ns["pipe"]
    assert pipe.last_run.config["epochs"] == 2 and pipe.last_run.config["lr"] == pytest.approx(0.01)
    assert "%%train --lr 0.01" in panel.cell.value and "--epochs 2" in panel.cell.value
    assert "sealed, never evaluated" in panel.lock.value
    panel.test_button.click()
    assert panel.confirm.layout.display == "inline-flex" and pipe.stage == "trained"
    panel.confirm.click()
    assert pipe.stage == "tested" and "already evaluated 1 time(s)" in panel.lock.value
    panel.confirm.click()  # a second look: the error is shown in the panel, nothing is evaluated
    assert len(pipe.ledger.test_evaluations(pipe.fingerprint)) == 1


def test_the_live_view_drops_a_diagnosis_that_no_longer_holds(ip):
    from nbtrain.doctor.diagnosis import Diagnosis
    from nbtrain.jupyter.view import TrainingView
    from nbtrain.training.callbacks import RunState
    view, state = TrainingView(100, "val_loss", lambda: None), RunState()
    view.on_fit_start(state)
    early = Diagnosis("underfitting", "warning", "both losses are within 10% of a constant predictor's.",
                      "a larger model")
    for epoch, found in ((1, [early]), (2, [early]), (3, [])):
        state.epoch = epoch
        state.history.append({"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch, "lr": 1e-3})
        state.diagnoses[:] = found
        view.on_epoch_end(state)
        assert ("underfitting" in view.diagnoses.value) == bool(found)
    assert "underfitting" not in view._html()  # nor in the copy for front ends without widgets


def test_the_panel_refuses_a_click_while_a_run_trains(ip, capsys):
    """A click is read during a run (jupyter-ui-poll on ipykernel 6, an awaiting cell on 7.4+): the
    panel must not re-split or retrain the pipeline under the running fit."""
    from nbtrain.jupyter.panel import Panel
    from nbtrain.training.callbacks import Callback
    ready(ip)
    pipe = ip.user_ns["pipe"]
    panel = Panel(pipe)
    split_before = pipe.split_id

    class ClickDuringTheRun(Callback):
        def on_epoch_end(self, state):
            if state.epoch == 1:
                panel.verb_buttons[VERB_SPLIT].click()
                panel.train_button.click()

    VERB_SPLIT = [b.description for b in panel.verb_buttons].index("split")
    run = pipe.fit(epochs=2, callbacks=[ClickDuringTheRun()], view=None)
    assert len(run.history) == 2 and pipe.split_id == split_before
    assert [r.name for r in pipe._runs() if r.kind == "nn"] == [run.name]  # the Train click started nothing
    assert "A run of this pipeline is training" in capsys.readouterr().out  # (a kernel shows it in the panel)
