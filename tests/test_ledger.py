"""The ledger keeps the test lock on disk: these tests re-run, restart and race it across processes."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

import numpy as np
import pytest

from nbtrain import ledger_file as ledger_module
from nbtrain.errors import ConfigError, DataError, TestSetLockedError
from nbtrain.ledger import SCHEMA_VERSION, Ledger, TestEvaluation

ROOT = Path(__file__).parents[1]  # the repository root, so `import nbtrain` works in a child process

# A child process that opens the ledger, optionally waits for a start signal, and evaluates rows.
_EVALUATE = """
import json, sys, time
from pathlib import Path
import numpy as np
from nbtrain.errors import TestSetLockedError
from nbtrain.ledger import Ledger

workdir, hashes_file, run_name, ready, go = sys.argv[1:6]
ledger = Ledger(workdir)
hashes = np.load(hashes_file)
if ready:
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.001)
try:
    evaluation = ledger.record_test_evaluation(
        dataset_id="d" * 16, split_id="child", row_hashes=hashes, run_name=run_name
    )
    ledger.complete_test_evaluation(evaluation.id)
except TestSetLockedError as exc:
    print(json.dumps({"outcome": "locked", "message": str(exc)}))
else:
    print(json.dumps({"outcome": "ok", "id": evaluation.id, "pid": evaluation.owner.pid}))
"""

# A child process that creates the ledger only once the start signal appears.
_CREATE = """
import sys, time
from pathlib import Path
from nbtrain.ledger import Ledger

workdir, ready, go, name = sys.argv[1:5]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.001)
Ledger(workdir).record_dataset(name, target="y", n_rows=1, columns=["x", "y"])
print("created")
"""


def _hashes(start: int, stop: int) -> np.ndarray:
    return np.arange(start, stop, dtype=np.uint64)


def _evaluate(ledger: Ledger, hashes: np.ndarray, run_name: str = "mlp-1", **kwargs) -> TestEvaluation:
    """A whole evaluation: started, then completed (its numbers were shown)."""
    kwargs.setdefault("dataset_id", "3f2a9c1e55d0b7a4")
    kwargs.setdefault("split_id", "split-a")
    started = ledger.record_test_evaluation(row_hashes=hashes, run_name=run_name, **kwargs)
    return ledger.complete_test_evaluation(started.id)


def _refusal(ledger: Ledger, hashes: np.ndarray) -> TestSetLockedError:
    with pytest.raises(TestSetLockedError) as caught:
        _evaluate(ledger, hashes, run_name="probe")
    return caught.value


def _child_args(
    tmp_path: Path, hashes: np.ndarray, run_name: str, ready: str = "", go: str = ""
) -> list[str]:
    """The command for a child that evaluates ``hashes`` in ``tmp_path/runs``."""
    hashes_file = tmp_path / f"{run_name}.npy"
    np.save(hashes_file, hashes)
    workdir = str(tmp_path / "runs")
    return [sys.executable, "-c", _EVALUATE, workdir, str(hashes_file), run_name, ready, go]


def _run_child(tmp_path: Path, hashes: np.ndarray, run_name: str) -> dict:
    done = subprocess.run(
        _child_args(tmp_path, hashes, run_name), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _start_together(commands: list[list[str]], readies: list[Path], go: Path) -> list[str]:
    """Start the children, wait until each is ready, then release them at the same moment."""
    children = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in commands
    ]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in readies):
        assert time.monotonic() < deadline, "children never became ready"
        assert all(c.poll() is None for c in children), [c.communicate() for c in children]
        time.sleep(0.005)
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(out)
    return outputs


def _raw(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(path))


# --- the test lock in one process --------------------------------------------------------------


def test_second_overlapping_evaluation_is_refused_with_the_designed_message(tmp_path):
    ledger = Ledger(tmp_path)
    first = _evaluate(ledger, _hashes(0, 412), run_name="mlp-2")

    pinned = (
        r'The test split of dataset 3f2a9c1e… was already evaluated at \d{4}-\d\d-\d\d \d\d:\d\d UTC '
        r'\(run "mlp-2"\); 412 of the 412 rows you asked to evaluate were in it\. A second look makes '
        r'it part of model selection\. Keep using validation; pass reuse_reason="\.\.\." only if you '
        r"accept an optimistic estimate\."
    )
    with pytest.raises(TestSetLockedError, match=pinned):
        _evaluate(ledger, _hashes(0, 412), run_name="mlp-3", split_id="split-b")

    assert ledger.test_evaluations() == [first]
    assert first.evaluated_at.strftime("%Y-%m-%d %H:%M UTC") in str(_refusal(ledger, _hashes(0, 1)))


def test_disjoint_rows_are_allowed_and_a_partial_overlap_is_refused(tmp_path):
    ledger = Ledger(tmp_path)
    _evaluate(ledger, _hashes(0, 100), run_name="first")
    second = _evaluate(ledger, _hashes(100, 200), run_name="second")
    assert not second.reused and second.overlaps == ()

    # A re-split with another seed: mostly new rows, three of them from the first test split.
    resplit = np.concatenate([_hashes(1000, 1097), np.array([5, 6, 7], dtype=np.uint64)])
    with pytest.raises(TestSetLockedError, match=r'\(run "first"\); 3 of the 100 rows .*reuse_reason'):
        _evaluate(ledger, resplit, run_name="third")
    assert [e.run_name for e in ledger.test_evaluations()] == ["first", "second"]
    assert not np.isin(_hashes(1000, 1097), ledger.evaluated_row_hashes()).any()


def test_same_rows_under_another_dataset_id_are_still_locked(tmp_path):
    ledger = Ledger(tmp_path)
    _evaluate(ledger, _hashes(0, 10), dataset_id="aaaaaaaaaaaaaaaa")
    with pytest.raises(TestSetLockedError, match="dataset aaaaaaaa…"):
        _evaluate(ledger, _hashes(0, 10), dataset_id="bbbbbbbbbbbbbbbb")


def test_message_names_the_earliest_of_several_overlapping_evaluations(tmp_path):
    ledger = Ledger(tmp_path)
    _evaluate(ledger, _hashes(0, 10), run_name="oldest")
    _evaluate(ledger, _hashes(10, 20), run_name="newer")
    with pytest.raises(TestSetLockedError, match=r'\(run "oldest"\); 2 of the 4 rows.* 1 other earlier'):
        _evaluate(ledger, np.array([8, 9, 10, 11], dtype=np.uint64), run_name="probe")


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_blank_reuse_reason_does_not_unlock(tmp_path, reason):
    ledger = Ledger(tmp_path)
    _evaluate(ledger, _hashes(0, 10))
    with pytest.raises(TestSetLockedError):
        _evaluate(ledger, _hashes(0, 10), run_name="again", reuse_reason=reason)
    assert len(ledger.test_evaluations()) == 1


def test_reuse_reason_records_an_optimistic_evaluation(tmp_path):
    ledger = Ledger(tmp_path)
    first = _evaluate(ledger, _hashes(0, 50), run_name="mlp-1")
    second = _evaluate(ledger, _hashes(25, 75), run_name="mlp-2", reuse_reason="final model for the paper")

    assert second.reused and second.overlaps == (first.id,)
    assert not first.reused
    assert second.reuse_reason == "final model for the paper"
    assert second.n_rows == 50
    assert ledger.test_evaluations() == [first, second]
    assert Ledger(tmp_path).test_evaluations()[1].reused  # read back from disk, not from memory


def test_evaluations_read_back_fully_and_filter_by_dataset(tmp_path):
    ledger = Ledger(tmp_path)
    a = _evaluate(ledger, _hashes(0, 3), dataset_id="A", split_id="sa", run_name="ra")
    b = _evaluate(ledger, _hashes(3, 6), dataset_id="B", split_id="sb", run_name="rb")

    reread = Ledger(tmp_path).test_evaluations()
    assert reread == [a, b]
    assert reread[0].evaluated_at.tzinfo is not None
    assert reread[0].evaluated_at.utcoffset() == timezone.utc.utcoffset(None)
    assert Ledger(tmp_path).test_evaluations("B") == [b]
    assert Ledger(tmp_path).test_evaluations("nope") == []


def test_row_hashes_round_trip_exactly_including_the_top_bit(tmp_path):
    ledger = Ledger(tmp_path)
    values = np.array([0, 1, 2**62, 2**63 - 1, 2**63, 2**63 + 12345, 2**64 - 1], dtype=np.uint64)
    _evaluate(ledger, values[::-1].copy())

    stored = Ledger(tmp_path).evaluated_row_hashes()
    assert stored.dtype == np.uint64
    np.testing.assert_array_equal(stored, values)
    # The lock matches on the same bits, not on a value that lost precision on the way.
    with pytest.raises(TestSetLockedError, match="1 of the 1 rows"):
        _evaluate(ledger, np.array([2**64 - 1], dtype=np.uint64), run_name="probe")
    _evaluate(ledger, np.array([2**64 - 2], dtype=np.uint64), run_name="neighbour")


def test_evaluated_row_hashes_is_empty_and_uint64_on_a_new_ledger(tmp_path):
    stored = Ledger(tmp_path).evaluated_row_hashes()
    assert stored.dtype == np.uint64 and stored.shape == (0,)


def test_one_hundred_thousand_hashes_record_and_check(tmp_path):
    ledger = Ledger(tmp_path)
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64 - 1, size=100_000, dtype=np.uint64, endpoint=True)
    first = _evaluate(ledger, hashes)
    assert first.n_rows == 100_000

    np.testing.assert_array_equal(ledger.evaluated_row_hashes(), np.unique(hashes))
    with pytest.raises(TestSetLockedError, match="100000 of the 100000 rows"):
        _evaluate(ledger, rng.permutation(hashes), run_name="again")


@pytest.mark.parametrize(
    "hashes",
    [np.array([], dtype=np.uint64), np.array([0.5, 1.5]), np.zeros((2, 2, 2), dtype=np.uint64)],
    ids=["empty", "float", "3-d"],
)
def test_unusable_row_hashes_are_a_config_error_and_record_nothing(tmp_path, hashes):
    ledger = Ledger(tmp_path)
    with pytest.raises(ConfigError, match="row_hashes"):
        _evaluate(ledger, hashes)
    assert ledger.test_evaluations() == []


def test_datasets_and_splits_are_recorded_once(tmp_path):
    ledger = Ledger(tmp_path)
    for _ in range(2):
        ledger.record_dataset("ds1", target="y", n_rows=10, columns=["x", "y"])
        ledger.record_split(
            "sp1", dataset_id="ds1", method="random", ratios=(0.7, 0.15, 0.15), seed=3,
            sizes={"train": 7, "val": 2, "test": 1}, random_split_reason="no real order",
        )
    with _raw(ledger.path) as conn:
        datasets = conn.execute("SELECT id, target, n_rows, columns FROM datasets").fetchall()
        splits = conn.execute("SELECT id, ratios, seed, sizes, random_split_reason FROM splits").fetchall()
    assert datasets == [("ds1", "y", 10, '["x", "y"]')]
    assert len(splits) == 1
    sid, ratios, seed, sizes, reason = splits[0]
    assert (sid, json.loads(ratios), seed, json.loads(sizes), reason) == (
        "sp1", [0.7, 0.15, 0.15], 3, {"train": 7, "val": 2, "test": 1}, "no real order",
    )


# --- across processes ----------------------------------------------------------------------------


def test_an_evaluation_in_another_process_locks_this_one(tmp_path):
    """The kernel-restart case: the lock was taken by a process that no longer exists."""
    child = _run_child(tmp_path, _hashes(0, 300), "child-run")
    assert child["outcome"] == "ok"

    ledger = Ledger(tmp_path / "runs")
    with pytest.raises(TestSetLockedError, match='run "child-run".*300 of the 300 rows'):
        _evaluate(ledger, _hashes(0, 300), run_name="parent-run")
    assert [e.run_name for e in ledger.test_evaluations()] == ["child-run"]


def test_an_evaluation_in_this_process_locks_another(tmp_path):
    ledger = Ledger(tmp_path / "runs")
    _evaluate(ledger, _hashes(0, 300), run_name="parent-run")

    child = _run_child(tmp_path, _hashes(299, 310), "child-run")
    assert child["outcome"] == "locked"
    assert 'run "parent-run"' in child["message"] and "1 of the 11 rows" in child["message"]
    assert len(ledger.test_evaluations()) == 1


@pytest.mark.parametrize("round_", range(2))  # one round could miss the overlap; two rarely do
def test_two_processes_racing_on_the_same_rows_exactly_one_wins(tmp_path, round_):
    Ledger(tmp_path / "runs")  # the race is over the lock, not over creating the file
    hashes = _hashes(0, 50_000)  # a long enough critical section for the two to meet in it
    go = tmp_path / "go"
    readies = [tmp_path / f"ready-{i}" for i in range(2)]
    commands = [_child_args(tmp_path, hashes, f"racer-{i}", str(readies[i]), str(go)) for i in range(2)]

    outcomes = [json.loads(out)["outcome"] for out in _start_together(commands, readies, go)]

    assert sorted(outcomes) == ["locked", "ok"]
    evaluations = Ledger(tmp_path / "runs").test_evaluations()
    assert len(evaluations) == 1
    assert evaluations[0].run_name == f"racer-{outcomes.index('ok')}"


def test_two_processes_creating_a_fresh_ledger_at_once_both_succeed(tmp_path):
    workdir = tmp_path / "fresh" / "runs"  # neither the folder nor the file exists yet
    go = tmp_path / "go"
    readies = [tmp_path / f"ready-{i}" for i in range(2)]
    commands = [
        [sys.executable, "-c", _CREATE, str(workdir), str(readies[i]), str(go), f"ds{i}"] for i in range(2)
    ]

    outputs = _start_together(commands, readies, go)

    assert [o.strip() for o in outputs] == ["created"] * 2
    with _raw(workdir / Ledger.FILENAME) as conn:
        meta = conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        datasets = conn.execute("SELECT id FROM datasets ORDER BY id").fetchall()
    assert meta[0] == ("app", "nbtrain") and meta[2] == ("schema_version", str(SCHEMA_VERSION))
    assert meta[1][0] == "ledger_id" and len(meta[1][1]) == 32  # one id, however many processes raced
    assert datasets == [("ds0",), ("ds1",)]


# --- files that are not ours, damaged, or newer -------------------------------------------------


def _text_file(path: Path) -> None:
    path.write_text("name,score\nada,3\n")


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(8192))


def _unrelated_sqlite(path: Path) -> None:
    with _raw(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers VALUES (1, 'ada')")
        conn.commit()


def _someone_elses_meta(path: Path) -> None:
    with _raw(path) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('app', 'mlflow')")
        conn.commit()


def _big_ledger(path: Path) -> None:
    ledger = Ledger(path.parent)
    _evaluate(ledger, np.random.default_rng(2).integers(0, 2**63, size=30_000, dtype=np.uint64))
    assert not Path(str(path) + "-wal").exists()  # everything is in the main file now


def _truncated_ledger(path: Path) -> None:
    _big_ledger(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _overwritten_ledger(path: Path) -> None:
    _big_ledger(path)
    page = 4096
    middle = (path.stat().st_size // page // 2) * page
    with path.open("r+b") as f:
        f.seek(middle)
        f.write(np.random.default_rng(3).bytes(3 * page))


def _newer_ledger(path: Path) -> None:
    Ledger(path.parent)
    with _raw(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
        conn.commit()


@pytest.mark.parametrize(
    ("make", "found"),
    [
        (_text_file, "is not a SQLite database"),
        (_random_bytes, "is not a SQLite database"),
        (_unrelated_sqlite, r"other tables \(customers\) and no nbtrain marker"),
        (_someone_elses_meta, "meta table that is not nbtrain's"),
        (_truncated_ledger, "damaged or truncated"),
        (_overwritten_ledger, "damaged or truncated"),
        (_newer_ledger, "written by a newer nbtrain.*Upgrade nbtrain"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:] or None,
)
def test_a_file_that_is_not_a_usable_ledger_is_refused_and_left_unchanged(tmp_path, make, found):
    path = tmp_path / Ledger.FILENAME
    make(path)
    before = path.read_bytes()
    files_before = sorted(os.listdir(tmp_path))

    with pytest.raises(DataError, match=found) as caught:
        Ledger(tmp_path)

    message = str(caught.value)
    assert str(path) in message
    assert "workdir=" in message
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == files_before


def test_an_empty_file_is_initialised(tmp_path):
    (tmp_path / Ledger.FILENAME).touch()
    ledger = Ledger(tmp_path)
    _evaluate(ledger, _hashes(0, 3))
    assert len(Ledger(tmp_path).test_evaluations()) == 1


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(DataError, match="is a file, not a folder"):
        Ledger(tmp_path / "runs")


def test_a_ledger_deleted_after_opening_is_not_silently_recreated(tmp_path):
    ledger = Ledger(tmp_path)
    _evaluate(ledger, _hashes(0, 3))
    ledger.path.unlink()
    with pytest.raises(DataError, match="moved or deleted"):
        _evaluate(ledger, _hashes(0, 3), run_name="after-delete")
    assert not ledger.path.exists()


# --- schema versions ---------------------------------------------------------------------------------


def test_a_new_ledger_is_marked_versioned_and_in_wal_mode(tmp_path):
    assert len(ledger_module._MIGRATIONS) == SCHEMA_VERSION
    ledger = Ledger(tmp_path / "a" / "b")
    assert ledger.path == tmp_path / "a" / "b" / "ledger.sqlite"
    with _raw(ledger.path) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert meta.pop("ledger_id") != Ledger(tmp_path / "c").__dict__["_id"]  # each ledger its own id
    assert meta == {"app": "nbtrain", "schema_version": str(SCHEMA_VERSION)}
    assert journal == "wal"


def test_an_older_ledger_is_migrated_and_keeps_its_lock(tmp_path, monkeypatch):
    _evaluate(Ledger(tmp_path), _hashes(0, 10), run_name="before-upgrade")
    monkeypatch.setattr(ledger_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(
        ledger_module, "_MIGRATIONS", ledger_module._MIGRATIONS + (("CREATE TABLE future (name TEXT)",),)
    )

    ledger = Ledger(tmp_path)

    with _raw(ledger.path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        conn.execute("SELECT name FROM future").fetchall()  # the new table exists
    assert version == str(SCHEMA_VERSION + 1)
    with pytest.raises(TestSetLockedError, match="before-upgrade"):
        _evaluate(ledger, _hashes(0, 10), run_name="after-upgrade")


def test_a_failing_migration_leaves_the_ledger_at_its_old_version(tmp_path, monkeypatch):
    Ledger(tmp_path)
    monkeypatch.setattr(ledger_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    broken = ("CREATE TABLE future (name TEXT)", "THIS IS NOT SQL")
    monkeypatch.setattr(ledger_module, "_MIGRATIONS", ledger_module._MIGRATIONS + (broken,))

    with pytest.raises(sqlite3.OperationalError):
        Ledger(tmp_path)

    with _raw(tmp_path / Ledger.FILENAME) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert version == str(SCHEMA_VERSION)
    assert "future" not in tables


def _old_ledger(path: Path, version: int, hashes: np.ndarray, run_name: str) -> None:
    """A ledger as nbtrain wrote it at schema `version`, with one test evaluation of `hashes`."""
    with _raw(path) as conn:
        for statements in ledger_module._MIGRATIONS[:version]:
            for statement in statements:
                conn.execute(statement)
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [("app", "nbtrain"), ("schema_version", str(version))])
        conn.execute("INSERT INTO test_evaluations VALUES (1, 'd', 's', ?, '2026-01-02T03:04:05+00:00', ?, NULL,"
                     " '[]')", (run_name, len(hashes)))
        conn.executemany("INSERT INTO test_rows VALUES (1, ?)", [(h,) for h in hashes.view(np.int64).tolist()])
        conn.commit()


@pytest.mark.parametrize("version", [1, 3])
def test_an_older_ledger_gains_the_new_tables_and_keeps_its_lock(tmp_path, version):
    _old_ledger(tmp_path / Ledger.FILENAME, version, _hashes(0, 10), "made-by-old")
    ledger = Ledger(tmp_path)
    run = {"name": "mlp-1", "dataset_id": "d", "split_id": "s", "kind": "nn", "model": "MLP", "parameters": 10,
           "config": {"lr": 0.001}, "monitor": "val_loss", "mode": "min", "best_epoch": 2, "best_value": 0.5,
           "best_metrics": {"val_accuracy": 0.9}, "stop_reason": "patience", "wall_seconds": 1.0,
           "samples_per_s": 100.0, "cell_text": None}
    ledger.record_run(run, [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.7, "lr": 1e-3, "val_accuracy": 0.8}])
    stored = ledger.runs("d")[0]
    assert stored["config"] == {"lr": 0.001} and stored["best_metrics"] == {"val_accuracy": 0.9}
    assert ledger.epochs("mlp-1") == [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.7, "lr": 1e-3,
                                       "val_accuracy": 0.8}]
    # An evaluation recorded before evaluations could be unfinished counts as a completed look.
    (old,) = ledger.test_evaluations()
    assert old.finished and old.completed_at == old.evaluated_at and old.owner is None
    with pytest.raises(TestSetLockedError, match='already evaluated at 2026-01-02 03:04 UTC.*"made-by-old"'):
        _evaluate(ledger, _hashes(0, 10), run_name="after-upgrade")


def test_a_cancelled_evaluation_releases_its_rows(tmp_path):
    ledger = Ledger(tmp_path)
    evaluation = _evaluate(ledger, _hashes(0, 10), run_name="crashed")
    ledger.cancel_test_evaluation(evaluation.id)
    assert ledger.test_evaluations() == [] and len(ledger.evaluated_row_hashes()) == 0
    _evaluate(ledger, _hashes(0, 10), run_name="retried")


# --- started, completed, unfinished, released --------------------------------------------------


def test_an_unfinished_evaluation_holds_its_rows_but_opens_none(tmp_path):
    ledger = Ledger(tmp_path)
    started = ledger.record_test_evaluation(dataset_id="d", split_id="s", row_hashes=_hashes(0, 10), run_name="a")
    assert not started.finished and started.owner.pid == os.getpid()
    assert ledger.test_evaluations() == [] and len(ledger.evaluated_row_hashes()) == 0  # no number was shown
    assert [e.id for e in ledger.test_evaluations(unfinished=True)] == [started.id]
    with pytest.raises(TestSetLockedError, match=r"This very process started it and could not record its end"):
        _evaluate(ledger, _hashes(5, 15), run_name="b")
    assert ledger.release_unfinished(_hashes(0, 10)) == []  # this process still runs: kept

    done = ledger.complete_test_evaluation(started.id)
    assert done.finished and ledger.test_evaluations() == [done]
    np.testing.assert_array_equal(ledger.evaluated_row_hashes(), _hashes(0, 10))


def test_rows_known_by_several_keys_match_on_any(tmp_path):
    ledger = Ledger(tmp_path)
    keys = np.column_stack([_hashes(0, 5), _hashes(100, 105)])  # (rows, 2): by name, by place
    first = _evaluate(ledger, keys)
    assert first.n_rows == 5
    renamed = np.column_stack([_hashes(50, 55), _hashes(100, 105)])  # the second key alone still matches
    with pytest.raises(TestSetLockedError, match="5 of the 5 rows"):
        _evaluate(ledger, renamed, run_name="renamed")
    assert [e.id for e in ledger.test_evaluations(rows=renamed)] == [first.id]
    assert ledger.test_evaluations(rows=_hashes(500, 505)) == []


def test_a_released_evaluation_no_longer_locks_its_rows(tmp_path):
    child = _run_child(tmp_path, _hashes(0, 10), "finished-child")  # a completed look, in another process
    assert child["outcome"] == "ok"
    ledger = Ledger(tmp_path / "runs")
    started = ledger.record_test_evaluation(dataset_id="d", split_id="s", row_hashes=_hashes(20, 30), run_name="x")
    with _raw(ledger.path) as conn:  # as a kernel killed in its test() leaves it: its process is gone
        conn.execute("UPDATE test_evaluations SET owner = ? WHERE id = ?",
                     (json.dumps({"pid": child["pid"], "host": started.owner.host, "started": "gone"}), started.id))
        conn.commit()
    assert ledger.release_unfinished(_hashes(0, 10)) == []  # the completed look is never released
    (released,) = ledger.release_unfinished(_hashes(25, 26))
    assert released.id == started.id and released.released_at is not None
    fresh = _evaluate(ledger, _hashes(20, 30), run_name="after-release")
    assert not fresh.reused
    with pytest.raises(TestSetLockedError, match='run "finished-child"'):
        _evaluate(ledger, _hashes(0, 10), run_name="again")
