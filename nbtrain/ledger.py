"""The ledger: a SQLite file in the work folder that remembers datasets, splits and test evaluations.

The "test set is evaluated once" rule has to outlive the Python objects that enforce it: a user can
re-run a cell, restart the kernel, build a new ``Pipeline`` on the same data or re-split with another
seed. So the lock lives on disk, and it is keyed by row fingerprints (uint64 content hashes), not by
object identity or split ids: the same rows are the same test rows whatever split produced them.

Two processes may use one ledger at once (two notebooks on one work folder, a training loop in a
thread), so every write is a ``BEGIN IMMEDIATE`` transaction on a short-lived connection in WAL mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nbtrain.errors import ConfigError, DataError, TestSetLockedError

SCHEMA_VERSION = 3

_APP = "nbtrain"
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Long enough for another process to finish a large evaluation; short enough to surface a stuck one.
_BUSY_TIMEOUT_S = 30.0
_WHAT_TO_DO = (
    "nbtrain will not overwrite a file it does not recognise. Move or rename the file, "
    "or choose another workdir= for the Pipeline; nbtrain then starts a new ledger there."
)

# _MIGRATIONS[v] takes a ledger from schema version v to v + 1 (version 0 is an empty file), so
# len(_MIGRATIONS) == SCHEMA_VERSION. Each statement runs inside one transaction: never use
# executescript here, it commits on its own. A later version appends (runs, epochs...), never edits.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE datasets (id TEXT PRIMARY KEY, target TEXT NOT NULL, n_rows INTEGER NOT NULL,"
        " columns TEXT NOT NULL, recorded_at TEXT NOT NULL)",
        "CREATE TABLE splits (id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL, method TEXT NOT NULL,"
        " ratios TEXT NOT NULL, seed INTEGER, sizes TEXT NOT NULL, random_split_reason TEXT,"
        " recorded_at TEXT NOT NULL)",
        # ids grow under the write lock, so id order is evaluation order even if the clock jumps.
        "CREATE TABLE test_evaluations (id INTEGER PRIMARY KEY, dataset_id TEXT NOT NULL,"
        " split_id TEXT NOT NULL, run_name TEXT NOT NULL, evaluated_at TEXT NOT NULL,"
        " n_rows INTEGER NOT NULL, reuse_reason TEXT, overlaps TEXT NOT NULL)",
        # row_hash holds the uint64 fingerprint's bits as a signed 64-bit INTEGER (SQLite has no u64).
        "CREATE TABLE test_rows (evaluation_id INTEGER NOT NULL REFERENCES test_evaluations(id),"
        " row_hash INTEGER NOT NULL)",
        "CREATE INDEX test_rows_by_hash ON test_rows (row_hash, evaluation_id)",
    ),
    (  # 1 -> 2: the run log. A run's name is unique in its work folder; a resumed run replaces its rows.
        "CREATE TABLE runs (name TEXT PRIMARY KEY, dataset_id TEXT NOT NULL, split_id TEXT NOT NULL,"
        " kind TEXT NOT NULL, model TEXT NOT NULL, parameters INTEGER, config TEXT NOT NULL,"
        " monitor TEXT NOT NULL, mode TEXT NOT NULL, best_epoch INTEGER, best_value REAL,"
        " best_metrics TEXT NOT NULL, stop_reason TEXT, wall_seconds REAL, samples_per_s REAL,"
        " cell_text TEXT, recorded_at TEXT NOT NULL)",
        "CREATE INDEX runs_by_split ON runs (dataset_id, split_id)",
        "CREATE TABLE epochs (run_name TEXT NOT NULL, epoch INTEGER NOT NULL, train_loss REAL,"
        " val_loss REAL, lr REAL, metrics TEXT NOT NULL, PRIMARY KEY (run_name, epoch))",
    ),
    (  # 2 -> 3: the training doctor's diagnoses of each run (a JSON list of {code, severity, evidence, fix})
        "ALTER TABLE runs ADD COLUMN diagnoses TEXT NOT NULL DEFAULT '[]'",
    ),
)


@dataclass(frozen=True)
class TestEvaluation:
    """One evaluation of a test split, as the ledger recorded it."""

    __test__ = False  # not a pytest test class, despite the name

    id: int
    dataset_id: str
    split_id: str
    run_name: str
    evaluated_at: datetime
    n_rows: int
    reuse_reason: str | None
    overlaps: tuple[int, ...]  # ids of earlier evaluations whose rows this one shares

    @property
    def reused(self) -> bool:
        """True when these rows were seen by an earlier evaluation: the estimate is optimistic."""
        return bool(self.overlaps)


class Ledger:
    """The SQLite store ``<workdir>/ledger.sqlite``. Holds no connection between calls."""

    FILENAME = "ledger.sqlite"

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        """Open ``<workdir>/ledger.sqlite``, creating the folder and the ledger if needed."""
        workdir = Path(workdir)
        if workdir.exists() and not workdir.is_dir():
            raise DataError(
                f"workdir {str(workdir)!r} exists but is a file, not a folder. "
                "Choose another workdir= for the Pipeline."
            )
        workdir.mkdir(parents=True, exist_ok=True)
        self._path = workdir / self.FILENAME
        _open_or_create(self._path)

    @property
    def path(self) -> Path:
        """Where the ledger file lives (moving it elsewhere moves the test lock with it)."""
        return self._path

    def __repr__(self) -> str:
        return f"Ledger({str(self._path)!r})"

    def record_dataset(self, dataset_id: str, *, target: str, n_rows: int, columns: list[str]) -> None:
        """Remember a dataset. Recording the same id again keeps the first record."""
        with self._write() as conn:
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
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO splits VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)

    def evaluated_row_hashes(self) -> np.ndarray:
        """Every row fingerprint ever evaluated on a test split, any dataset (sorted, unique, uint64).

        A re-split uses it to warn when rows that were once test rows land in train.
        """
        with self._read() as conn:
            rows = conn.execute("SELECT DISTINCT row_hash FROM test_rows").fetchall()
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
        """Take the test lock for these rows, or raise ``TestSetLockedError`` if any were seen before.

        Check and insert happen in one ``BEGIN IMMEDIATE`` transaction, so two processes racing on
        the same rows cannot both pass. A refused evaluation records nothing.
        """
        sql_hashes = _to_sql_hashes(row_hashes)
        reason = reuse_reason.strip() if reuse_reason is not None else ""
        with self._write() as conn:
            _load_asked_rows(conn, sql_hashes)
            overlaps = _overlapping_evaluations(conn)
            if overlaps and not reason:
                earliest_id, n_shared = overlaps[0]
                earliest = _fetch_evaluation(conn, earliest_id)
                raise TestSetLockedError(_locked_message(earliest, n_shared, len(sql_hashes), len(overlaps)))
            evaluation = _insert_evaluation(
                conn,
                dataset_id=dataset_id,
                split_id=split_id,
                run_name=run_name,
                n_rows=len(sql_hashes),
                reuse_reason=reason or None,
                overlaps=tuple(eid for eid, _ in overlaps),
            )
        return evaluation

    def cancel_test_evaluation(self, evaluation_id: int) -> None:
        """Release an evaluation whose numbers were never produced (it failed before any was shown)."""
        with self._write() as conn:
            conn.execute("DELETE FROM test_rows WHERE evaluation_id = ?", (evaluation_id,))
            conn.execute("DELETE FROM test_evaluations WHERE id = ?", (evaluation_id,))

    def record_run(self, run: dict, epochs: list[dict]) -> None:
        """Store a run (the keys of the runs table) and its per-epoch history, replacing an earlier
        record of the same name (a resumed run)."""
        columns = list(_RUN_COLUMNS)
        run = {"diagnoses": [], **run}  # a run recorded without the doctor has none
        row = [json.dumps(run[c], default=str) if c in _JSON_COLUMNS else run.get(c) for c in columns]
        epoch_rows = [(run["name"], int(e["epoch"]), e.get("train_loss"), e.get("val_loss"), e.get("lr"),
                       json.dumps({k: v for k, v in e.items() if k.startswith("val_") and k != "val_loss"}))
                      for e in epochs]
        with self._write() as conn:
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
        with self._read() as conn:
            rows = conn.execute(query + " ORDER BY recorded_at", params).fetchall()
        names = [*_RUN_COLUMNS, "recorded_at"]
        return [{n: json.loads(v) if n in _JSON_COLUMNS else v for n, v in zip(names, row)} for row in rows]

    def run_names(self) -> set[str]:
        """The name of every run recorded, any dataset: a new run never takes one (names are the key)."""
        with self._read() as conn:
            return {r[0] for r in conn.execute("SELECT name FROM runs")}

    def epochs(self, run_name: str) -> list[dict]:
        """A run's per-epoch history: epoch, train_loss, val_loss, lr and the validation metrics."""
        with self._read() as conn:
            rows = conn.execute("SELECT epoch, train_loss, val_loss, lr, metrics FROM epochs WHERE run_name = ?"
                                " ORDER BY epoch", (run_name,)).fetchall()
        return [{"epoch": e, "train_loss": t, "val_loss": v, "lr": lr, **json.loads(m)} for e, t, v, lr, m in rows]

    def test_evaluations(self, dataset_id: str | None = None) -> list[TestEvaluation]:
        """Every recorded test evaluation, oldest first; only one dataset's when ``dataset_id`` is given."""
        query = f"SELECT {_EVALUATION_COLUMNS} FROM test_evaluations"
        params: tuple[str, ...] = ()
        if dataset_id is not None:
            query += " WHERE dataset_id = ?"
            params = (dataset_id,)
        with self._read() as conn:
            rows = conn.execute(query + " ORDER BY id", params).fetchall()
        return [_evaluation_from_row(row) for row in rows]

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with _connection(self._path, create=False) as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front so check-then-insert is atomic."""
        with _connection(self._path, create=False) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")


# --- connections and corruption ---------------------------------------------------------------


@contextlib.contextmanager
def _connection(path: Path, *, create: bool) -> Iterator[sqlite3.Connection]:
    """A short-lived connection, closed on exit (``with sqlite3.connect()`` alone does not close).

    After initialisation the file must already exist (mode=rw): if it vanished, recreating an empty
    ledger would silently drop the test lock.
    """
    uri = path.resolve().as_uri() + ("?mode=rwc" if create else "?mode=rw")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise DataError(
            f"The ledger {str(path)!r} cannot be opened ({exc}). Was it moved or deleted? "
            "Put it back, or choose another workdir= (the test lock then starts empty)."
        ) from exc
    with contextlib.closing(conn):
        conn.execute("PRAGMA temp_store = MEMORY")
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                raise _corrupt_error(path, exc) from exc
            raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back unless SQLite already did (after SQLITE_FULL, say): a second error would hide the first."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_CORRUPT and SQLITE_NOTADB arrive as plain DatabaseError; locks and I/O are subclasses."""
    name = getattr(exc, "sqlite_errorname", None)  # Python >= 3.11
    if name is not None:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return type(exc) is sqlite3.DatabaseError


def _corrupt_error(path: Path, detail: object) -> DataError:
    return DataError(
        f"{str(path)!r} is a SQLite file but it is damaged or truncated (SQLite says: {detail}). "
        + _WHAT_TO_DO
    )


# --- opening, validation and migrations -------------------------------------------------------


def _open_or_create(path: Path) -> None:
    """Open the ledger at ``path``, creating or migrating it; refuse any file that is not ours.

    Nothing is written before the file is known to be empty or an nbtrain ledger, so a foreign
    file is left byte-for-byte as it was.
    """
    _check_header(path)
    with _connection(path, create=True) as conn:
        version = _validated_version(conn, path)
        if version > 0:
            _check_integrity(conn, path)
        if version < SCHEMA_VERSION:
            _ensure_wal(conn)
            _migrate(conn, path)


def _check_header(path: Path) -> None:
    """Reject what SQLite would open anyway or misread: folders and files that are not SQLite."""
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder, not a ledger file. " + _WHAT_TO_DO)
    if not path.exists():
        return
    with path.open("rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head and head != _SQLITE_MAGIC:  # a 0-byte file is a fresh SQLite database
        raise DataError(
            f"{str(path)!r} exists but is not a SQLite database (it starts with {head!r}), "
            "so it is not an nbtrain ledger. " + _WHAT_TO_DO
        )


def _validated_version(conn: sqlite3.Connection, path: Path) -> int:
    """The ledger's schema version (0 for an empty database), or DataError if it is not ours."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    if "meta" not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise DataError(
            f"{str(path)!r} is a SQLite database with other tables ({shown}) and no nbtrain "
            "marker, so it is not an nbtrain ledger. " + _WHAT_TO_DO
        )
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("app") != _APP:
        raise DataError(
            f"{str(path)!r} is a SQLite database with a meta table that is not nbtrain's "
            f"(app = {meta.get('app')!r}), so it is not an nbtrain ledger. " + _WHAT_TO_DO
        )
    try:
        version = int(meta["schema_version"])
    except (KeyError, ValueError) as exc:
        raise _corrupt_error(path, f"schema_version is {meta.get('schema_version')!r}") from exc
    if version > SCHEMA_VERSION:
        raise DataError(
            f"The ledger {str(path)!r} was written by a newer nbtrain (ledger schema version "
            f"{version}; this nbtrain reads up to {SCHEMA_VERSION}). Upgrade nbtrain "
            "(pip install -U nbtrain), or choose another workdir= to start a separate ledger."
        )
    return version


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """A truncated file can still show an intact first page; quick_check reads every page once."""
    problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise _corrupt_error(path, "; ".join(problems))


def _ensure_wal(conn: sqlite3.Connection) -> None:
    """WAL lets readers run beside a writer. The mode is stored in the file, so this runs once per
    ledger. Switching needs the file to itself, and SQLite may answer "database is locked" at once,
    without its busy handler, while another process is creating the same ledger: so retry, within
    the same time budget as any write."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction, re-reading the version under the
    write lock: another process may have created or migrated the ledger since we looked."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _validated_version(conn, path)
        for statements in _MIGRATIONS[version:SCHEMA_VERSION]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('app', ?)", (_APP,))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except BaseException:
        _rollback(conn)
        raise
    conn.execute("COMMIT")


# --- row hashes and evaluations ----------------------------------------------------------------


def _to_sql_hashes(row_hashes: np.ndarray) -> list[int]:
    """uint64 fingerprints as the signed 64-bit ints SQLite stores (same bits, reinterpreted)."""
    arr = np.asarray(row_hashes)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(
            f"row_hashes must be a 1-D array of uint64 row fingerprints; received dtype "
            f"{arr.dtype} with shape {arr.shape}. Pass the fingerprints of the test rows."
        )
    if arr.size == 0:
        raise ConfigError(
            "row_hashes is empty: there are no test rows to evaluate. Check that split() produced "
            "a test split with rows."
        )
    return arr.astype(np.uint64).view(np.int64).tolist()


def _from_sql_hashes(values: Sequence[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).view(np.uint64)


def _load_asked_rows(conn: sqlite3.Connection, sql_hashes: list[int]) -> None:
    """Put the rows to evaluate in a temp table so the overlap check is one indexed join."""
    conn.execute("CREATE TEMP TABLE asked (row_hash INTEGER NOT NULL)")
    conn.executemany("INSERT INTO asked VALUES (?)", ((h,) for h in sql_hashes))


def _overlapping_evaluations(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    """(evaluation id, how many asked rows it holds), earliest first. Duplicate asked rows count
    each time, so the message's "k of the n rows you asked" adds up."""
    return conn.execute(
        "SELECT r.evaluation_id, COUNT(*) FROM asked AS a JOIN test_rows AS r"
        " ON r.row_hash = a.row_hash GROUP BY r.evaluation_id ORDER BY r.evaluation_id"
    ).fetchall()


def _insert_evaluation(
    conn: sqlite3.Connection,
    *,
    dataset_id: str,
    split_id: str,
    run_name: str,
    n_rows: int,
    reuse_reason: str | None,
    overlaps: tuple[int, ...],
) -> TestEvaluation:
    evaluated_at = _now()
    cursor = conn.execute(
        "INSERT INTO test_evaluations (dataset_id, split_id, run_name, evaluated_at, n_rows,"
        " reuse_reason, overlaps) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (dataset_id, split_id, run_name, evaluated_at.isoformat(), n_rows, reuse_reason,
         json.dumps(list(overlaps))),
    )
    evaluation_id = cursor.lastrowid
    # One stored row per distinct fingerprint: duplicates add nothing to the lock.
    conn.execute("INSERT INTO test_rows SELECT DISTINCT ?, row_hash FROM asked", (evaluation_id,))
    return TestEvaluation(
        id=evaluation_id,
        dataset_id=dataset_id,
        split_id=split_id,
        run_name=run_name,
        evaluated_at=evaluated_at,
        n_rows=n_rows,
        reuse_reason=reuse_reason,
        overlaps=overlaps,
    )


_RUN_COLUMNS = ("name", "dataset_id", "split_id", "kind", "model", "parameters", "config", "monitor", "mode",
                "best_epoch", "best_value", "best_metrics", "stop_reason", "wall_seconds", "samples_per_s",
                "cell_text", "diagnoses")
_JSON_COLUMNS = ("config", "best_metrics", "diagnoses")
_EVALUATION_COLUMNS = "id, dataset_id, split_id, run_name, evaluated_at, n_rows, reuse_reason, overlaps"


def _fetch_evaluation(conn: sqlite3.Connection, evaluation_id: int) -> TestEvaluation:
    row = conn.execute(
        f"SELECT {_EVALUATION_COLUMNS} FROM test_evaluations WHERE id = ?", (evaluation_id,)
    ).fetchone()
    return _evaluation_from_row(row)


def _evaluation_from_row(row: tuple) -> TestEvaluation:
    eid, dataset_id, split_id, run_name, evaluated_at, n_rows, reuse_reason, overlaps = row
    return TestEvaluation(
        id=eid,
        dataset_id=dataset_id,
        split_id=split_id,
        run_name=run_name,
        evaluated_at=datetime.fromisoformat(evaluated_at),
        n_rows=n_rows,
        reuse_reason=reuse_reason,
        overlaps=tuple(json.loads(overlaps)),
    )


def _locked_message(earliest: TestEvaluation, n_shared: int, n_asked: int, n_overlapping: int) -> str:
    dataset = earliest.dataset_id if len(earliest.dataset_id) <= 8 else earliest.dataset_id[:8] + "…"
    when = earliest.evaluated_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    others = ""
    if n_overlapping > 1:
        others = f" {n_overlapping - 1} other earlier evaluation(s) also share some of these rows."
    return (
        f'The test split of dataset {dataset} was already evaluated at {when} (run "{earliest.run_name}"); '
        f"{n_shared} of the {n_asked} rows you asked to evaluate were in it.{others} "
        "A second look makes it part of model selection. Keep using validation; "
        'pass reuse_reason="..." only if you accept an optimistic estimate.'
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)
