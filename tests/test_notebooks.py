"""The template notebooks, executed top to bottom by a real kernel (nbclient), offline."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nbtrain.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"


def with_parameters(path: Path, **values) -> nbformat.NotebookNode:
    """The notebook with its `parameters` cell overridden (papermill style)."""
    notebook = nbformat.read(path, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
    return notebook


def outputs(cell) -> list:
    return cell.get("outputs", [])


def text_of(cell) -> str:
    parts = []
    for out in outputs(cell):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_runs_top_to_bottom_offline(path, tmp_path):
    notebook = with_parameters(path, EPOCHS=5, WORKDIR=str(tmp_path / "runs"))
    NotebookClient(notebook, timeout=300, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [out for cell in notebook.cells for out in outputs(cell) if out["output_type"] == "error"]
    assert not errors, errors
    if path.name == "tabular.ipynb":
        check_tabular(notebook)
    if path.name == "ranking.ipynb":
        check_ranking(notebook)
    if path.name == "image.ipynb":
        check_image(notebook)
    if path.name == "timeseries.ipynb":
        check_timeseries(notebook)
    if path.name == "text.ipynb":
        check_text(notebook, tmp_path / "runs")


def check_tabular(notebook):
    code = [c for c in notebook.cells if c.cell_type == "code"]
    train = next(c for c in code if c.source.startswith("%%train"))
    kinds = [list(out.get("data", {})) for out in outputs(train)]
    # the live view was replaced in place by a static summary a saved notebook can show
    assert not any(WIDGET in k for k in kinds) and any("image/png" in k for k in kinds)
    assert "Run &#x27;mlp-1&#x27;: 5 epochs" in text_of(train) or "Run 'mlp-1': 5 epochs" in text_of(train)
    widget_state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    progress = [w for w in widget_state.values() if w["model_name"] == "IntProgressModel"]
    assert progress and progress[-1]["state"]["value"] == 5  # the epoch counter reached the end
    tensorboard = next(c for c in code if "tensorboard" in c.source)
    assert "<iframe" in text_of(tensorboard) or "tensorboard" in text_of(tensorboard).lower()
    test = next(c for c in code if c.source.startswith("%nbtrain test"))
    assert "Test report" in text_of(test) and "95% interval" in text_of(test)


def check_image(notebook):
    import html
    import re
    code = [c for c in notebook.cells if c.cell_type == "code"]
    shown = {c.source.splitlines()[0]: html.unescape(text_of(c)) for c in code if c.source}
    assert "Cleaning report (images)" in shown["pipe.clean()"]
    assert "Images (height x width): 8x8 to 8x8" in shown["pipe.clean()"]
    assert "Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])" in shown[next(
        k for k in shown if k.startswith("pipe.preprocess("))]
    train = shown[next(k for k in shown if k.startswith("%%train"))]
    assert re.search(r"Run 'visionmodel-1': [1-5] epochs", train)
    # the run says which weights it started from: here, honestly, none
    assert shown["print(pipe.last_run.notes[0])"].strip() == "Weights: none: random initialisation (pretrained=False)."
    test = shown["report = pipe.test()"]
    accuracy = float(re.search(r"Test accuracy ([0-9.]+) \(95% interval", test).group(1))
    assert accuracy > 0.5  # ten digits: chance is 0.1, so the network learned from the pixels
    predicted = shown[next(k for k in shown if k.startswith("pipe.predict("))]
    assert "probability_3" in predicted


def check_timeseries(notebook):
    import html
    import re
    code = [c for c in notebook.cells if c.cell_type == "code"]
    shown = {c.source.splitlines()[0]: html.unescape(text_of(c)) for c in code if c.source}
    assert "59 missing 'co2' values" in shown["pipe.clean()"] and "weekly (W-SAT)" in shown["pipe.clean()"]
    assert "Refused: A time series is split by time only" in shown["try:"]
    assert "Windows: train 1544, val 340, test 339" in shown[next(k for k in shown if k.startswith("pipe.preprocess("))]
    trains = [html.unescape(text_of(c)) for c in code if c.source.startswith("%%train")]
    assert len(trains) == 2 and all(re.search(r"Run '\w+forecaster-1': [1-5] epochs", t) for t in trains)
    runs = shown["%nbtrain runs"]
    # every network is compared with the naive forecasts, which sit in the same table
    assert "naive-last-" in runs and "naive-seasonal52-" in runs and "lstmforecaster-1" in runs
    assert "transformerforecaster-1" in runs and "val_smape" in runs
    test = shown["report = pipe.test()"]
    assert "Test report" in test and "95% interval" in test and re.search(r"smape\s+0\.0", test)
    assert "t+4" in shown["report.predictions.head()"] and "2002-01-05" in shown["pipe.predict(weekly)"]


def check_ranking(notebook):
    code = [c for c in notebook.cells if c.cell_type == "code"]
    splits = [text_of(c) for c in code if c.source.startswith("pipe.split(")]
    # the default time cut leaves most held-out users unknown: said, then the recorded last-fraction split
    assert "cold starts" in splits[0] and "Last fraction per user" in splits[1]
    assert "each ranking every item they have no train interaction with (full ranking" in \
        text_of(next(c for c in code if c.source.startswith("pipe.preprocess(")))
    baselines = " ".join(text_of(c) for c in code if "pipe.baseline(" in c.source)
    assert "Popularity" in baselines and "ItemKNN" in baselines and "EASE" in baselines
    notes = text_of(next(c for c in code if "last_run.notes" in c.source))
    runs = text_of(next(c for c in code if c.source.startswith("%nbtrain runs")))
    test = text_of(next(c for c in code if c.source.startswith("%nbtrain test")))
    assert "full ranking" in runs and "sampled" not in runs
    assert "Test report" in test and "Test ndcg@10" in test and "95% interval" in test and "Full ranking" in test
    # test() picks the best run on validation NDCG@10, and the note says whether the network beat the best baseline
    if "Beats the best classical baseline" in notes:
        assert "Run 'matrixfactorization-1'" in test
    else:
        assert "The best classical baseline 'baseline-" in notes and "Run 'baseline-" in test


def check_text(notebook, workdir):
    from nbtrain.ledger import Ledger
    code = [c for c in notebook.cells if c.cell_type == "code"]
    preprocess = next(c for c in code if c.source.startswith("pipe.preprocess("))
    assert "max_length 64: as given" in text_of(preprocess) and "Texts cut at max_length: train" in text_of(preprocess)
    assert "TF-IDF + LogisticRegression" in text_of(next(c for c in code if c.source == "pipe.baseline()"))
    train = next(c for c in code if c.source.startswith("%%train"))
    assert "textmodel-1" in text_of(train) and any("image/png" in out.get("data", {}) for out in outputs(train))
    refused = next(c for c in code if "add_tokens" in c.source)
    assert "LeakageError: Text must be tokenized with the model's own tokenizer" in text_of(refused)
    test = next(c for c in code if c.source.startswith("%nbtrain test"))
    assert "Test report" in text_of(test) and "95% interval" in text_of(test)
    predicted = next(c for c in code if "pipe.predict(" in c.source)
    assert "probability_other" in text_of(predicted) and "true score" in text_of(predicted)
    # the ledger: one evaluation of the test split, and one transformer run (the refused model never trained)
    ledger = Ledger(workdir)
    [evaluation] = ledger.test_evaluations()
    runs = ledger.runs(evaluation.dataset_id, evaluation.split_id)
    [transformer] = [r for r in runs if r["kind"] == "nn"]
    assert transformer["name"] == "textmodel-1" and transformer["best_epoch"] >= 1
    # it learned from the words: a model that knows only the class shares (64/36) scores a log loss of 0.65
    assert transformer["best_metrics"]["val_loss"] < 0.62


def test_nbtrain_run_reports_the_first_failing_cell(tmp_path, capsys):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                               nbformat.v4.new_code_cell("1 / 0"),
                                               nbformat.v4.new_code_cell("y = 2")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "broken.ipynb"
    nbformat.write(notebook, path)
    assert cli_main(["run", str(path), "--output", str(tmp_path / "out.ipynb")]) == 1
    err = capsys.readouterr().err
    assert "cell 2 of 3 failed ('1 / 0'): ZeroDivisionError: division by zero" in err
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    assert executed["cells"][2]["execution_count"] is None  # execution stopped at the failure
    notebook.cells[1].source = "z = 3"
    nbformat.write(notebook, path)
    assert cli_main(["run", str(path)]) == 0
    assert "all 3 cells ran" in capsys.readouterr().out
