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
