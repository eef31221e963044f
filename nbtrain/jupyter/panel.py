"""The panel: a form over one Pipeline. Every button calls the same verb a cell would, and the
Train button shows the equivalent %%train cell, so the notebook can be rebuilt from what was clicked."""

from __future__ import annotations

import html

import ipywidgets as widgets
from IPython.display import display

from nbtrain.errors import NbtrainError
from nbtrain.models.tabular import MLP

VERBS = ("clean", "split", "preprocess", "baseline")


class Panel:
    def __init__(self, pipe):
        self.pipe = pipe
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.verb_buttons = [widgets.Button(description=verb) for verb in VERBS]
        for button in self.verb_buttons:
            button.on_click(self._run_verb)
        # start from the kind's own recipe (text: a transformer's lr and linear decay), else the table's
        start = {"lr": 1e-3, "epochs": 50, "batch_size": 256, "schedule": "cosine", "patience": 10,
                 **pipe._fit_defaults()}
        self.lr = widgets.FloatLogSlider(value=start["lr"], base=10, min=-6, max=0, step=0.1, description="lr",
                                         readout_format=".0e")
        self.epochs = widgets.BoundedIntText(value=start["epochs"], min=1, max=10_000, description="epochs")
        sizes = sorted({16, 32, 64, 128, 256, 512, 1024, 4096, start["batch_size"]})
        self.batch_size = widgets.Dropdown(options=sizes, value=start["batch_size"], description="batch size")
        self.optimizer = widgets.Dropdown(options=["adamw", "adam", "sgd"], description="optimizer")
        self.schedule = widgets.Dropdown(options=["cosine", "linear", "plateau", "none"], value=start["schedule"],
                                         description="schedule")
        self.patience = widgets.BoundedIntText(value=start["patience"] or 10, min=1, max=1000, description="patience")
        self.dropout = widgets.FloatSlider(value=0.2, min=0.0, max=0.7, step=0.05, description="dropout")
        self.train_button = widgets.Button(description="Train", button_style="primary", icon="play")
        self.train_button.on_click(self._train)
        self.cell = widgets.HTML()
        self.runs = widgets.Output()
        self.test_button = widgets.Button(description="Test…", button_style="danger")
        self.test_button.on_click(self._ask_test)
        self.confirm = widgets.Button(description="Yes: evaluate the test split once", button_style="danger",
                                      layout=widgets.Layout(display="none", width="auto"))
        self.confirm.on_click(self._test)
        self.lock = widgets.HTML()
        controls = [self.lr, self.epochs, self.batch_size, self.optimizer, self.schedule, self.patience, self.dropout]
        self.box = widgets.VBox([
            self.summary, widgets.HBox(self.verb_buttons),
            widgets.HTML("<b>Hyperparameters</b>"), widgets.GridBox(controls, layout=widgets.Layout(
                grid_template_columns="repeat(2, 360px)")),
            widgets.HBox([self.train_button]), self.cell, widgets.HTML("<b>Runs</b>"), self.runs,
            widgets.HBox([self.test_button, self.confirm]), self.lock, self.output])
        self.refresh()

    def refresh(self) -> None:
        pipe = self.pipe
        self.summary.value = (f"<b>{html.escape(repr(pipe))}</b><br>task {pipe.task}: "
                              f"{html.escape(pipe.task_reason)}")
        self.runs.clear_output()
        if pipe.stage not in ("raw", "cleaned"):
            with self.runs:
                display(pipe.runs)
        evaluations = pipe.ledger.test_evaluations(pipe.fingerprint)
        self.lock.value = ("Test split: sealed, never evaluated." if not evaluations else
                           f"Test split already evaluated {len(evaluations)} time(s), first at "
                           f"{evaluations[0].evaluated_at:%Y-%m-%d %H:%M UTC} (run {evaluations[0].run_name!r}).")

    def settings(self) -> dict:
        return {"lr": self.lr.value, "epochs": self.epochs.value, "batch_size": self.batch_size.value,
                "optimizer": self.optimizer.value, "schedule": self.schedule.value, "patience": self.patience.value}

    def train_cell(self) -> str:
        """The %%train cell that does what the Train button does."""
        options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.settings().items())
        if self.pipe.kind != "tabular":  # images, text, series, interactions: the kind's own default model
            return f"%train {options}"
        return (f"%%train {options}\nmodel = nt.models.MLP(pipe.n_inputs, pipe.n_outputs, "
                f"cardinalities=pipe.cardinalities, dropout={self.dropout.value})")

    def _run_verb(self, button) -> None:
        self._show(getattr(self.pipe, button.description))

    def _train(self, _button) -> None:
        pipe = self.pipe
        self.cell.value = f"Equivalent cell:<pre>{html.escape(self.train_cell())}</pre>"

        def train():
            model = MLP(pipe.n_inputs, pipe.n_outputs, cardinalities=pipe.cardinalities,
                        dropout=self.dropout.value) if pipe.kind == "tabular" else None
            return pipe.fit(model, cell_text=self.train_cell(), **self.settings())
        self._show(train)

    def _ask_test(self, _button) -> None:
        self.confirm.layout.display = "inline-flex"

    def _test(self, _button) -> None:
        self.confirm.layout.display = "none"
        self._show(self.pipe.test)

    def _show(self, action) -> None:
        """Run a verb; its report (or its error, in one line) goes to the panel's output area. While a
        run of this pipeline trains (a click is read during a run: nbtrain.jupyter.kernel), nothing
        may change the data under it: the click is refused."""
        self.output.clear_output()
        with self.output:
            if getattr(self.pipe, "_active", None) is not None:
                display(widgets.HTML("<b style='color:#b00'>A run of this pipeline is training</b>: wait for it to "
                                     "end, or stop it (its Stop button or Kernel > Interrupt), then click again."))
                return
            try:
                display(action())
            except NbtrainError as exc:
                display(widgets.HTML(f"<b style='color:#b00'>{type(exc).__name__}</b>: {html.escape(str(exc))}"))
        self.refresh()
