"""The ledger: a SQLite file in the work folder that remembers datasets, splits, runs and test evaluations.

The "test set is evaluated once" rule has to outlive the Python objects that enforce it: a user can
re-run a cell, restart the kernel, build a new ``Pipeline`` on the same data or re-split with another
seed. So the lock lives on disk, and it is keyed by row fingerprints (uint64 content hashes), not by
object identity or split ids: the same rows are the same test rows whatever split produced them. A
row may carry several keys (nbtrain.data.fingerprint.content_keys gives two): it is known by any.

An evaluation is recorded as started before any number is computed, and completed when its report
is returned. One left unfinished (a kernel killed inside test()) keeps its rows, so nothing is
evaluated twice by accident; it names the process that started it, and once that process has ended
it can be released: no number was ever shown.

Two processes may use one ledger at once (two notebooks on one work folder, a training loop in a
thread), so every write is a ``BEGIN IMMEDIATE`` transaction on a short-lived connection in WAL mode.
The file itself (schema, opening, SQLite's errors in words) is nbtrain.ledger_file's.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nbtrain import liveness
from nbtrain.errors import ConfigError, DataError, TestSetLockedError
from nbtrain.files import cause, io_error
from nbtrain.ledger_file import SCHEMA_VERSION, connection, corrupt_error, open_ledger, rollback

__all__ = ["Ledger", "TestEvaluation", "SCHEMA_VERSION", "describe_unfinished", "locked_message"]


@dataclass(frozen=True)
class TestEvaluation:
    """One evaluation of a test split, as the ledger recorded it."""

    __test__ = False  # not a pytest test class, despite the name

    id: int
    dataset_id: str
    split_id: str
    run_name: str
    evaluated_at: datetime  # when it started
    n_rows: int
    reuse_reason: str | None
    overlaps: tuple[int, ...]  # ids of earlier evaluations whose rows this one shares
    completed_at: datetime | None = None  # None: unfinished (its process may still run, or was killed)
    owner: liveness.ProcessId | None = None  # the process that started it
    released_at: datetime | None = None  # an unfinished evaluation whose rows were given back

    @property
    def reused(self) -> bool:
        """True when these rows were seen by an earlier evaluation: the estimate is optimistic."""
        return bool(self.overlaps)

    @property
    def finished(self) -> bool:
        return self.completed_at is not None

    def owner_state(self) -> str:
        """liveness.RUNNING, ENDED or UNKNOWN (started on another host)."""
        return liveness.state(self.owner) if self.owner is not None else liveness.ENDED


class Ledger:
    """The SQLite store ``<workdir>/ledger.sqlite``. Holds no connection between calls.

    A Ledger stays bound to the file it opened: if that file is deleted, emptied or replaced, every
    later call is a DataError rather than a fresh, empty test lock.
    """

    FILENAME = "ledger.sqlite"

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        """Open ``<workdir>/ledger.sqlite``, creating the folder and the ledger if needed. Where this
        process cannot write (a read-only folder or file system), an existing ledger opens for reading."""
        workdir = Path(workdir)
        if workdir.exists() and not workdir.is_dir():
            raise DataError(
                f"workdir {str(workdir)!r} exists but is a file, not a folder. "
                "Choose another workdir= for the Pipeline."
            )
        self._path = workdir / self.FILENAME
        self._id, self._blocked = open_ledger(self._path)

    @property
    def path(self) -> Path:
        """Where the ledger file lives (moving it elsewhere moves the test lock with it)."""
        return self._path

    @property
    def read_only(self) -> str | None:
        """Why this process can only read the ledger ("the file system is read-only"...), or None."""
        return cause(self._blocked)[0] if self._blocked is not None else None

    def __repr__(self) -> str:
        return f"Ledger({str(self._path)!r}{', read-only' if self._blocked else ''})"

    def record_dataset(self, dataset_id: str, *, target: str, n_rows: int, columns: list[str]) -> None:
        """Remember a dataset. Recording the same id again keeps the first record."""
        with self._write("recording the dataset") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO datasets VALUES (?, ?, ?, ?, ?)",
                (dataset_id, target, int(n_rows), json.dumps(list(columns)), _now().isoformat()),
            )

    def record_split(
        self,
        split_id: str,
        *,
        dataset_id: str,
        method: str,
        ratios: tuple[float, float, float],
        seed: int | None,
        sizes: dict[str, int],
        random_split_reason: str | None = None,
    ) -> None:
        """Remember a split (a random split of time data keeps its stated reason). Idempotent."""
        row = (
            split_id,
            dataset_id,
            method,
            json.dumps([float(r) for r in ratios]),
            None if seed is None else int(seed),
            json.dumps({str(k): int(v) for k, v in sizes.items()}),
            random_split_reason,
            _now().isoformat(),
        )
        with self._write("recording the split") as conn:
            conn.execute("INSERT OR IGNORE INTO splits VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)

    # ---- the test lock -------------------------------------------------------------------------

    def evaluated_row_hashes(self) -> np.ndarray:
        """Every row key of a completed test evaluation, any dataset (sorted, unique, uint64).

        A re-split uses it to warn when rows that were once test rows land in train; predict() to
        know which test rows are open. An unfinished evaluation showed no number: its rows are not here.
        """
        with self._read("reading the test evaluations") as conn:
            rows = conn.execute(
                "SELECT DISTINCT r.row_hash FROM test_rows AS r JOIN test_evaluations AS e"
                " ON e.id = r.evaluation_id WHERE e.completed_at IS NOT NULL"
            ).fetchall()
        # Sort after converting back: SQL would order the signed view, putting hashes >= 2**63 first.
        return np.sort(_from_sql_hashes([r[0] for r in rows]))

    def record_test_evaluation(
        self,
        *,
        dataset_id: str,
        split_id: str,
        row_hashes: np.ndarray,
        run_name: str,
        reuse_reason: str | None = None,
    ) -> TestEvaluation:
        """Take the test lock for these rows, or raise ``TestSetLockedError`` if any were seen before or
        are held by an unfinished evaluation. `row_hashes`: one key per row, or (rows, keys) where a row
        is known by any of its keys.

        The evaluation is recorded as started by this process: call complete_test_evaluation() once its
        numbers are ready, or cancel_test_evaluation() if they never will be. Check and insert happen in
        one ``BEGIN IMMEDIATE`` transaction, so two processes racing on the same rows cannot both pass.
        A refused evaluation records nothing.
        """
        keys = _to_sql_keys(row_hashes)
        n_rows = keys[-1][0] + 1
        reason = reuse_reason.strip() if reuse_reason is not None else ""
        with self._write("recording the test evaluation") as conn:
            _load_asked_rows(conn, keys)
            overlaps = _overlapping_evaluations(conn)
            if overlaps and not reason:
                raise TestSetLockedError(_refusal(conn, overlaps, n_rows, self._path))
            evaluation = _insert_evaluation(
                conn,
                dataset_id=dataset_id,
                split_id=split_id,
                run_name=run_name,
                n_rows=n_rows,
                reuse_reason=reason or None,
                overlaps=tuple(eid for eid, _ in overlaps),
            )
        return evaluation

    def complete_test_evaluation(self, evaluation_id: int) -> TestEvaluation:
        """Mark an evaluation as done: its numbers are about to be shown."""
        with self._write("recording the end of the test evaluation") as conn:
            conn.execute("UPDATE test_evaluations SET completed_at = ?, released_at = NULL WHERE id = ?",
                         (_now().isoformat(), evaluation_id))
            return _fetch_evaluation(conn, evaluation_id, self._path)

    def cancel_test_evaluation(self, evaluation_id: int) -> None:
        """Forget an evaluation whose numbers were never produced (it failed before any was shown)."""
        with self._write("cancelling the test evaluation") as conn:
            conn.execute("DELETE FROM test_rows WHERE evaluation_id = ?", (evaluation_id,))
            conn.execute("DELETE FROM test_evaluations WHERE id = ?", (evaluation_id,))

    def test_evaluations(self, dataset_id: str | None = None, *, rows: np.ndarray | None = None,
                         unfinished: bool = False) -> list[TestEvaluation]:
        """Completed test evaluations, oldest first: of one dataset when `dataset_id` is given, of any
        that shares a row with `rows` (row keys, as for record_test_evaluation) when those are given.
        `unfinished=True`: the unfinished, unreleased ones instead."""
        where = ["e.completed_at IS NULL AND e.released_at IS NULL" if unfinished else "e.completed_at IS NOT NULL"]
        params: list = []
        if dataset_id is not None:
            where.append("e.dataset_id = ?")
            params.append(dataset_id)
        with self._read("reading the test evaluations") as conn:
            if rows is not None:
                _load_asked_rows(conn, _to_sql_keys(rows))
                where.append("e.id IN (SELECT r.evaluation_id FROM asked AS a JOIN test_rows AS r"
                             " ON r.row_hash = a.row_hash)")
            found = conn.execute(f"SELECT {_EVALUATION_COLUMNS} FROM test_evaluations AS e"
                                 f" WHERE {' AND '.join(where)} ORDER BY e.id", params).fetchall()
            return [_evaluation_from_row(row, self._path) for row in found]

    def release_unfinished(self, rows: np.ndarray, *, other_hosts: bool = False) -> list[TestEvaluation]:
        """Give back the rows of unfinished evaluations that share a row with `rows` and whose process has
        ended (with `other_hosts`, also those started on another host, whose state cannot be seen from
        here). Returns the evaluations released; one whose process still runs is kept."""
        with self._write("releasing an unfinished test evaluation") as conn:
            _load_asked_rows(conn, _to_sql_keys(rows))
            found = conn.execute(
                f"SELECT {_EVALUATION_COLUMNS} FROM test_evaluations AS e WHERE e.completed_at IS NULL"
                " AND e.released_at IS NULL AND e.id IN (SELECT r.evaluation_id FROM asked AS a"
                " JOIN test_rows AS r ON r.row_hash = a.row_hash) ORDER BY e.id").fetchall()
            unfinished = [_evaluation_from_row(row, self._path) for row in found]
            allowed = (liveness.ENDED, liveness.UNKNOWN) if other_hosts else (liveness.ENDED,)
            released = [e for e in unfinished if e.owner_state() in allowed]
            now = _now().isoformat()
            conn.executemany("UPDATE test_evaluations SET released_at = ? WHERE id = ?",
                             [(now, e.id) for e in released])
            return [_fetch_evaluation(conn, e.id, self._path) for e in released]

    # ---- the run log ---------------------------------------------------------------------------

    def record_run(self, run: dict, epochs: list[dict]) -> None:
        """Store a run (the keys of the runs table) and its per-epoch history, replacing an earlier
        record of the same name (a resumed run)."""
        columns = list(_RUN_COLUMNS)
        run = {"diagnoses": [], **run}  # a run recorded without the doctor has none
        row = [json.dumps(run[c], default=str) if c in _JSON_COLUMNS else run.get(c) for c in columns]
        epoch_rows = [(run["name"], int(e["epoch"]), e.get("train_loss"), e.get("val_loss"), e.get("lr"),
                       json.dumps({k: v for k, v in e.items() if k.startswith("val_") and k != "val_loss"}))
                      for e in epochs]
        with self._write(f"recording run {run['name']!r}") as conn:
            conn.execute("DELETE FROM epochs WHERE run_name = ?", (run["name"],))
            conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(columns)}, recorded_at) VALUES "
                         f"({', '.join('?' * len(columns))}, ?)", (*row, _now().isoformat()))
            conn.executemany("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?)", epoch_rows)

    def runs(self, dataset_id: str, split_id: str | None = None) -> list[dict]:
        """The runs of a dataset (and split), oldest first, JSON columns decoded."""
        query = f"SELECT {', '.join(_RUN_COLUMNS)}, recorded_at FROM runs WHERE dataset_id = ?"
        params: tuple = (dataset_id,)
        if split_id is not None:
            query, params = query + " AND split_id = ?", (dataset_id, split_id)
        with self._read("reading the runs") as conn:
            rows = conn.execute(query + " ORDER BY recorded_at", params).fetchall()
        names = [*_RUN_COLUMNS, "recorded_at"]
        return [{n: _json(v, self._path) if n in _JSON_COLUMNS else v for n, v in zip(names, row)} for row in rows]

    def run_names(self) -> set[str]:
        """The name of every run recorded, any dataset: a new run never takes one (names are the key)."""
        with self._read("reading the run names") as conn:
            return {r[0] for r in conn.execute("SELECT name FROM runs")}

    def epochs(self, run_name: str) -> list[dict]:
        """A run's per-epoch history: epoch, train_loss, val_loss, lr and the validation metrics."""
        with self._read("reading the run's epochs") as conn:
            rows = conn.execute("SELECT epoch, train_loss, val_loss, lr, metrics FROM epochs WHERE run_name = ?"
                                " ORDER BY epoch", (run_name,)).fetchall()
        return [{"epoch": e, "train_loss": t, "val_loss": v, "lr": lr, **_json(m, self._path)}
                for e, t, v, lr, m in rows]

    # ---- connections ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self, doing: str) -> Iterator[sqlite3.Connection]:
        with connection(self._path, doing=doing, read_only=self._blocked is not None,
                        expected_id=self._id) as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front so check-then-insert is atomic."""
        if self._blocked is not None:
            raise io_error(self._path, self._blocked, doing)
        with connection(self._path, doing=doing, expected_id=self._id) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                rollback(conn)
                raise
            conn.execute("COMMIT")


# --- row keys and evaluations ------------------------------------------------------------------


def _to_sql_keys(row_hashes: np.ndarray) -> list[tuple[int, int]]:
    """(row number, key) pairs, each uint64 key as the signed 64-bit int SQLite stores (same bits)."""
    arr = np.asarray(row_hashes)
    if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(
            f"row_hashes must be uint64 row keys, one per row (1-D) or several per row (rows, keys); "
            f"received dtype {arr.dtype} with shape {arr.shape}. Pass the keys of the test rows."
        )
    if arr.size == 0:
        raise ConfigError(
            "row_hashes is empty: there are no test rows to evaluate. Check that split() produced "
            "a test split with rows."
        )
    keys = arr.astype(np.uint64).reshape(len(arr), -1).view(np.int64)
    rows = np.repeat(np.arange(len(keys)), keys.shape[1])
    return list(zip(rows.tolist(), keys.ravel().tolist()))


def _from_sql_hashes(values: Sequence[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).view(np.uint64)


def _load_asked_rows(conn: sqlite3.Connection, keys: list[tuple[int, int]]) -> None:
    """Put the rows to evaluate in a temp table so the overlap check is one indexed join."""
    conn.execute("CREATE TEMP TABLE asked (row_no INTEGER NOT NULL, row_hash INTEGER NOT NULL)")
    conn.executemany("INSERT INTO asked VALUES (?, ?)", keys)


def _overlapping_evaluations(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    """(evaluation id, how many asked rows it holds), earliest first, released evaluations left out.
    Duplicate asked rows count each time, so the message's "k of the n rows you asked" adds up."""
    return conn.execute(
        "SELECT r.evaluation_id, COUNT(DISTINCT a.row_no) FROM asked AS a JOIN test_rows AS r"
        " ON r.row_hash = a.row_hash JOIN test_evaluations AS e ON e.id = r.evaluation_id"
        " WHERE e.released_at IS NULL GROUP BY r.evaluation_id ORDER BY r.evaluation_id"
    ).fetchall()


def _insert_evaluation(conn: sqlite3.Connection, *, dataset_id: str, split_id: str, run_name: str, n_rows: int,
                       reuse_reason: str | None, overlaps: tuple[int, ...]) -> TestEvaluation:
    evaluated_at, owner = _now(), liveness.this_process()
    cursor = conn.execute(
        "INSERT INTO test_evaluations (dataset_id, split_id, run_name, evaluated_at, n_rows, reuse_reason,"
        " overlaps, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (dataset_id, split_id, run_name, evaluated_at.isoformat(), n_rows, reuse_reason,
         json.dumps(list(overlaps)), json.dumps(owner.to_dict())),
    )
    evaluation_id = cursor.lastrowid
    # One stored row per distinct key: duplicates add nothing to the lock.
    conn.execute("INSERT INTO test_rows SELECT DISTINCT ?, row_hash FROM asked", (evaluation_id,))
    return TestEvaluation(id=evaluation_id, dataset_id=dataset_id, split_id=split_id, run_name=run_name,
                          evaluated_at=evaluated_at, n_rows=n_rows, reuse_reason=reuse_reason, overlaps=overlaps,
                          owner=owner)


_RUN_COLUMNS = ("name", "dataset_id", "split_id", "kind", "model", "parameters", "config", "monitor", "mode",
                "best_epoch", "best_value", "best_metrics", "stop_reason", "wall_seconds", "samples_per_s",
                "cell_text", "diagnoses")
_JSON_COLUMNS = ("config", "best_metrics", "diagnoses")
_EVALUATION_COLUMNS = ("e.id, e.dataset_id, e.split_id, e.run_name, e.evaluated_at, e.n_rows, e.reuse_reason,"
                       " e.overlaps, e.completed_at, e.owner, e.released_at")


def _fetch_evaluation(conn: sqlite3.Connection, evaluation_id: int, path: Path) -> TestEvaluation:
    row = conn.execute(
        f"SELECT {_EVALUATION_COLUMNS} FROM test_evaluations AS e WHERE e.id = ?", (evaluation_id,)
    ).fetchone()
    if row is None:
        raise DataError(f"Test evaluation {evaluation_id} is no longer in the ledger {str(path)!r}: someone removed "
                        "it while it ran. Check who else edits that file; the test lock cannot be trusted meanwhile.")
    return _evaluation_from_row(row, path)


def _evaluation_from_row(row: tuple, path: Path) -> TestEvaluation:
    """A stored evaluation; a row nbtrain could not have written (edited by hand, a damaged page) is a
    DataError that names the file, not a TypeError from deep inside."""
    eid, dataset_id, split_id, run_name, evaluated_at, n_rows, reuse_reason, overlaps, completed, owner, released = row
    try:
        return TestEvaluation(
            id=eid, dataset_id=dataset_id, split_id=split_id, run_name=run_name,
            evaluated_at=datetime.fromisoformat(evaluated_at), n_rows=n_rows, reuse_reason=reuse_reason,
            overlaps=tuple(json.loads(overlaps)),
            completed_at=datetime.fromisoformat(completed) if completed is not None else None,
            owner=liveness.ProcessId.from_dict(json.loads(owner)) if owner is not None else None,
            released_at=datetime.fromisoformat(released) if released is not None else None,
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise corrupt_error(path, f"test evaluation {eid} cannot be read ({exc})") from exc


def _json(text, path: Path):
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise corrupt_error(path, f"a stored value is not JSON ({exc})") from exc


def _refusal(conn: sqlite3.Connection, overlaps: list[tuple[int, int]], n_asked: int, path: Path) -> str:
    """Why the asked rows cannot be evaluated: the earliest completed evaluation that holds some, else
    the earliest unfinished one (running, ended or on another host)."""
    found = [(_fetch_evaluation(conn, eid, path), n) for eid, n in overlaps]
    done = [(e, n) for e, n in found if e.finished]
    if done:
        return locked_message(done[0][0], done[0][1], n_asked, len(found))
    unfinished, n_shared = found[0]
    return describe_unfinished(unfinished, f"{n_shared} of the {n_asked} rows you asked to evaluate are in it.")


def locked_message(earliest: TestEvaluation, n_shared: int, n_asked: int, n_overlapping: int) -> str:
    """The refusal of a second look at rows a completed evaluation saw."""
    others = ""
    if n_overlapping > 1:
        others = f" {n_overlapping - 1} other earlier evaluation(s) also share some of these rows."
    return (
        f"The test split of dataset {_short(earliest.dataset_id)} was already evaluated at "
        f'{_when(earliest.evaluated_at)} (run "{earliest.run_name}"); '
        f"{n_shared} of the {n_asked} rows you asked to evaluate were in it.{others} "
        "A second look makes it part of model selection. Keep using validation; "
        'pass reuse_reason="..." only if you accept an optimistic estimate.'
    )


def describe_unfinished(evaluation: TestEvaluation, shared: str = "") -> str:
    """An unfinished evaluation in words: who started it, whether that process still runs, what to do.
    `shared`: a sentence on the rows it holds, put after the first."""
    head = (f"An evaluation of the test split of dataset {_short(evaluation.dataset_id)} (run "
            f'"{evaluation.run_name}") started at {_when(evaluation.evaluated_at)} by {evaluation.owner} and has '
            f"not finished.{' ' + shared if shared else ''}")
    state = evaluation.owner_state()
    if state == liveness.ENDED:
        return (f"{head} That process ended before its test() returned, so no number was shown. Release the rows "
                "with pipe.release_unfinished_test(), then call pipe.test() again.")
    if state == liveness.UNKNOWN:
        return (f"{head} It ran on another host, whose processes cannot be seen from here (this is host "
                f"{liveness.this_process().host!r}). If that process has ended, release the rows with "
                "pipe.release_unfinished_test(other_hosts=True), then call pipe.test() again.")
    if evaluation.owner == liveness.this_process():
        return (f"{head} This very process started it and could not record its end (see the error test() "
                "raised). Restart the kernel; then pipe.release_unfinished_test() releases it.")
    return (f"{head} That process still runs: wait for its test() to return (if it fails, it gives the rows back "
            "itself). Evaluating the same rows at the same time would be a second look.")


def _short(dataset_id: str) -> str:
    return dataset_id if len(dataset_id) <= 8 else dataset_id[:8] + "…"


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _now() -> datetime:
    return datetime.now(timezone.utc)
