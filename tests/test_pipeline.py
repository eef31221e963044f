import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbtrain as nt
from nbtrain.errors import LeakageError, StageError, TestSetLockedError
from nbtrain.ledger import Ledger

from conftest import make_frame

ROOT = Path(__file__).resolve().parents[1]


def test_penguins_end_to_end(penguins, workdir, untouched):
    guard = untouched(penguins)
    pipe = nt.Pipeline(penguins, target="species", workdir=workdir)
    assert (pipe.task, pipe.kind, pipe.stage) == ("multiclass", "tabular", "raw")
    assert pipe.task_reason == "the target holds 3 distinct labels (not numbers)"
    cleaning = pipe.clean()
    assert cleaning.rows_out == 344 and cleaning.plans["sex"].strategy == "mode"
    split = pipe.split()
    assert split.sizes == {"train": 241, "val": 52, "test": 51}
    pipe.preprocess()
    assert pipe.stage == "preprocessed" and pipe.n_outputs == 3 and pipe.n_inputs == 10
    assert not np.isnan(pipe.train.X).any()
    guard.check()
    assert "stage='preprocessed'" in repr(pipe)


@pytest.mark.parametrize("verb, first", [("split", "clean"), ("n_inputs", "preprocess"), ("train", "preprocess")])
def test_verbs_out_of_order_name_the_verb_to_call(frame, workdir, verb, first):
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    with pytest.raises(StageError, match=rf"{verb}\(\) comes after {first}\(\); this pipeline is at stage 'raw'. "
                                         rf"Call pipe.{first}\(\) first."):
        attribute = getattr(pipe, verb)
        attribute() if callable(attribute) else None


@pytest.mark.parametrize("cleaned", [False, True])
def test_preprocessing_before_the_split_is_a_leak(frame, workdir, cleaned):
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    if cleaned:
        pipe.clean()
    expected = r"pipe.split\(\) first" if cleaned else r"call pipe.clean\(\), then pipe.split\(\) first"
    with pytest.raises(LeakageError, match=r"before split\(\) they would learn from the validation and test rows.*"
                                           + expected):
        pipe.preprocess()
    assert not hasattr(pipe, "preprocessor_")


def test_redoing_a_verb_discards_what_came_after(frame, workdir):
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    first_train = pipe.train.index
    pipe.split(seed=9)
    assert pipe.stage == "split"
    with pytest.raises(StageError):
        pipe.train
    pipe.preprocess()
    assert not pipe.train.index.equals(first_train)
    pipe.clean()
    assert pipe.stage == "cleaned" and not hasattr(pipe, "split_")


def test_the_test_split_is_not_reachable_through_the_public_api(frame, workdir):
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    test_labels = set(pipe._frame.index[pipe._split.positions["test"]])
    public = {}
    for name in dir(pipe):
        if not name.startswith("_"):
            try:
                public[name] = getattr(pipe, name)
            except nt.NbtrainError:  # e.g. last_run before any run: nothing to reach
                continue
    for name, value in public.items():
        index = getattr(value, "index", None)
        if index is not None and hasattr(index, "__iter__") and not callable(index):
            assert not test_labels & set(index), f"test rows reachable through pipe.{name}"
    assert len(pipe.train) + len(pipe.val) == 600 - len(test_labels)


def _test_rows(pipe):
    return pipe._lock_hash[pipe._split.positions["test"]]


def test_lock_follows_the_rows_across_pipelines_and_resplits(frame, workdir):
    """The lock is keyed by content: a new Pipeline on the same (shuffled) data, or a re-split with
    another seed that shares test rows, is refused; the ledger keeps the first evaluation only."""
    first = nt.Pipeline(frame, target="label", workdir=workdir)
    first.clean(), first.split(seed=0)
    ledger = Ledger(workdir)
    ledger.complete_test_evaluation(ledger.record_test_evaluation(
        dataset_id=first.fingerprint, split_id=first.split_id, row_hashes=_test_rows(first), run_name="mlp-1").id)
    again = nt.Pipeline(frame.sample(frac=1, random_state=3), target="label", workdir=workdir)
    again.clean()
    resplit = again.split(seed=1)
    assert resplit.split_id != first.split_id
    assert any("were in a test split that was already evaluated" in w for w in resplit.warnings)
    with pytest.raises(TestSetLockedError, match=r'already evaluated at .* \(run "mlp-1"\)'):
        Ledger(workdir).record_test_evaluation(dataset_id=again.fingerprint, split_id=again.split_id,
                                               row_hashes=_test_rows(again), run_name="mlp-2")
    assert len(Ledger(workdir).test_evaluations()) == 1


def test_lock_survives_a_new_process(frame, workdir, tmp_path):
    """A kernel restart: another interpreter builds the same pipeline and evaluates the test split."""
    data = tmp_path / "data.pkl"
    frame.to_pickle(data)
    script = (f"import pandas as pd, nbtrain as nt\nfrom nbtrain.ledger import Ledger\n"
              f"pipe = nt.Pipeline(pd.read_pickle({str(data)!r}), target='label', workdir={str(workdir)!r})\n"
              "pipe.clean(); pipe.split()\n"
              "ledger = Ledger(pipe.workdir)\n"
              "ledger.complete_test_evaluation(ledger.record_test_evaluation(dataset_id=pipe.fingerprint,"
              " split_id=pipe.split_id, row_hashes=pipe._lock_hash[pipe._split.positions['test']],"
              " run_name='before-restart').id)\n")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    pipe.clean(), pipe.split()
    with pytest.raises(TestSetLockedError, match=r'run "before-restart"'):
        Ledger(workdir).record_test_evaluation(dataset_id=pipe.fingerprint, split_id=pipe.split_id,
                                               row_hashes=_test_rows(pipe), run_name="after-restart")


def test_reports_render_as_text_and_html(penguins, workdir):
    pipe = nt.Pipeline(penguins, target="species", workdir=workdir)
    for report in (pipe.clean(), pipe.split(), pipe.preprocess()):
        text, page = repr(report), report._repr_html_()
        assert text.splitlines()[0] == report.title and report.title in page
        assert page.startswith('<div class="nbtrain-report">') and "<table" in page


def test_core_imports_without_ipython():
    """The core is plain Python: importing it must not need IPython or ipywidgets."""
    script = ("import sys\nsys.modules['IPython'] = None\nsys.modules['ipywidgets'] = None\n"
              "import nbtrain, nbtrain.pipeline, nbtrain.ledger, nbtrain.data.preprocess\n"
              "assert 'IPython' not in {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)


def test_task_inference_says_why(workdir):
    df = make_frame(300)
    cases = {
        "label": ("multiclass", "3 distinct labels"),
        "flag": ("binary", "exactly 2 distinct values (False, True)"),
        "rating": ("multiclass", "5 distinct whole numbers; pass task='regression'"),
        "amount": ("regression", "non-integer numbers"),
        "count": ("regression", "300 distinct numbers"),
    }
    df = df.assign(flag=df.x1 > 0, rating=np.arange(300) % 5 + 1, amount=df.x2, count=np.arange(300))
    for target, (task, why) in cases.items():
        pipe = nt.Pipeline(df.drop(columns=[c for c in cases if c != target]), target=target, workdir=workdir)
        assert pipe.task == task and why in pipe.task_reason
    forced = nt.Pipeline(df.drop(columns=["label", "flag", "amount", "count"]), target="rating",
                         task="regression", workdir=workdir)
    assert forced.task == "regression" and "requested" in forced.task_reason
    with pytest.raises(nt.ConfigError, match=r"task='binary' needs a target with 2 distinct values; 'label' has 3"):
        nt.Pipeline(df, target="label", task="binary", workdir=workdir)
    with pytest.raises(nt.ConfigError, match=r"task='regression' needs a numeric target"):
        nt.Pipeline(df, target="label", task="regression", workdir=workdir)
    with pytest.raises(nt.ConfigError, match=r"task='ranking' orders the rows of each query: pass group_col="):
        nt.Pipeline(df, target="label", task="ranking", workdir=workdir)
    with pytest.raises(nt.ConfigError, match=r"task='ranking' needs a numeric relevance target"):
        nt.Pipeline(df.assign(query=np.arange(300) % 30), target="label", task="ranking", group_col="query",
                    workdir=workdir)
    ranked = nt.Pipeline(df.drop(columns=["label", "flag", "amount", "count"]).assign(query=np.arange(300) % 30),
                         target="rating", task="ranking", group_col="query", workdir=workdir)
    assert ranked.task == "ranking" and "5 relevance levels from 1 to 5" in ranked.task_reason
