"""The ledger's SQLite file: its schema and migrations, opening it (read-write, or read-only where the
folder cannot be written), knowing it is still the same file, and SQLite's errors in words.

Every problem a user can meet with the file becomes a DataError that names the path, the cause and
what to do: a full disk, a read-only folder, a file that is damaged, foreign, newer, deleted or
emptied while a pipeline used it. Nothing is written before the file is known to be empty or an
nbtrain ledger, so a foreign file is left byte-for-byte as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from nbtrain.errors import DataError
from nbtrain.files import io_error

SCHEMA_VERSION = 4

_APP = "nbtrain"
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Long enough for another process to finish a large evaluation; short enough to surface a stuck one.
BUSY_TIMEOUT_S = 30.0
_WHAT_TO_DO = (
    "nbtrain will not overwrite a file it does not recognise. Move or rename the file, "
    "or choose another workdir= for the Pipeline; nbtrain then starts a new ledger there."
)
_START_OVER = (
    "It held the test lock, so nbtrain will not start an empty ledger in its place without you: put the "
    "file back (from a backup), or, to start over knowingly, build a new Pipeline (its ledger starts empty "
    "and forgets every test evaluation recorded here)."
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
    (  # 3 -> 4: an evaluation is started, then completed when its report is returned; a process killed
        # in between leaves it unfinished, with its owner (pid, host, start time) to tell whether that
        # process still runs, and it may be released. Earlier versions recorded only looks that they
        # took as done: they stay completed. The ledger gets an id, so a pipeline notices a replaced file.
        "ALTER TABLE test_evaluations ADD COLUMN completed_at TEXT",
        "UPDATE test_evaluations SET completed_at = evaluated_at",
        "ALTER TABLE test_evaluations ADD COLUMN owner TEXT",
        "ALTER TABLE test_evaluations ADD COLUMN released_at TEXT",
        "INSERT OR IGNORE INTO meta VALUES ('ledger_id', lower(hex(randomblob(16))))",
    ),
)


# --- opening ---------------------------------------------------------------------------------------


def open_ledger(path: Path) -> tuple[str, OSError | None]:
    """Open (creating or migrating where the folder can be written) the ledger at `path`.

    Returns (the ledger's id, why this process cannot write it, or None). A ledger that exists in a
    place this process cannot write is opened for reading; one that does not exist there is an error.
    """
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder, not a ledger file. " + _WHAT_TO_DO)
    blocked = write_block(path)
    if blocked is not None and not path.exists():
        raise io_error(path, blocked, "creating the ledger")
    _check_header(path)
    if blocked is not None:
        return _open_read_only(path), blocked
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(path.parent, exc, "creating the work folder") from exc
    with connection(path, create=True, doing="opening the ledger") as conn:
        version = _validated_version(conn, path)
        if version > 0:
            _check_integrity(conn, path)
        if version < SCHEMA_VERSION:
            _ensure_wal(conn)
            _migrate(conn, path)
        return ledger_id(conn, path), None


def write_block(path: Path) -> OSError | None:
    """Why this process cannot write the ledger (a read-only file system, no permission), or None."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    folder = existing if existing != path else path.parent
    if os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK)):
        return None
    code = errno.EROFS if _read_only_fs(existing) else errno.EACCES
    return OSError(code, os.strerror(code), str(path))


def _read_only_fs(path: Path) -> bool:
    statvfs = getattr(os, "statvfs", None)  # not on Windows
    return statvfs is not None and bool(statvfs(path).f_flag & os.ST_RDONLY)


def _open_read_only(path: Path) -> str:
    with connection(path, read_only=True, doing="reading the ledger") as conn:
        version = _validated_version(conn, path)
        if version < SCHEMA_VERSION:
            found = "empty" if version == 0 else f"written by an older nbtrain (ledger schema version {version})"
            raise DataError(f"The ledger {str(path)!r} is {found}, and it cannot be brought up to date where it is: "
                            "this process cannot write there. Copy the work folder somewhere writable and pass "
                            "that copy as workdir=.")
        _check_integrity(conn, path)
        return ledger_id(conn, path)


def _check_header(path: Path) -> None:
    """Reject what SQLite would open anyway or misread: files that are not SQLite."""
    if not path.exists():
        return
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise io_error(path, exc, "reading the ledger") from exc
    if head and head != _SQLITE_MAGIC:  # a 0-byte file is a fresh SQLite database
        raise DataError(
            f"{str(path)!r} exists but is not a SQLite database (it starts with {head!r}), "
            "so it is not an nbtrain ledger. " + _WHAT_TO_DO
        )


# --- connections -----------------------------------------------------------------------------------


@contextlib.contextmanager
def connection(path: Path, *, doing: str, create: bool = False, read_only: bool = False,
               expected_id: str | None = None) -> Iterator[sqlite3.Connection]:
    """A short-lived connection, closed on exit (``with sqlite3.connect()`` alone does not close).

    After initialisation the file must already exist (mode=rw): if it vanished, recreating an empty
    ledger would silently drop the test lock. `expected_id`: the id the ledger had when it was opened;
    a file that lost it was emptied or replaced. SQLite's errors become DataErrors naming the cause.
    """
    conn = None
    try:
        conn = _connect_read_only(path) if read_only else _connect(path, "rwc" if create else "rw")
        conn.execute("PRAGMA temp_store = MEMORY")
        if expected_id is not None:
            _check_identity(conn, path, expected_id)
        yield conn
    except sqlite3.DatabaseError as exc:
        error = data_error(path, exc, doing)
        if error is None:  # a mistake in nbtrain's own SQL: its traceback says more than words would
            raise
        raise error from exc
    finally:
        if conn is not None:
            conn.close()


def _connect(path: Path, mode: str, immutable: bool = False) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + f"?mode={mode}" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection that can read. A WAL ledger needs its -shm file, which a read-only
    folder cannot hold unless a writer elsewhere keeps it; then the file is read as immutable (no
    one can change it there; changes still in an uncheckpointed -wal file are not seen)."""
    conn = _connect(path, "ro")
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if _error_name(exc) != "SQLITE_CANTOPEN":
            raise
    return _connect(path, "ro", immutable=True)


def ledger_id(conn: sqlite3.Connection, path: Path) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()
    if row is None:
        raise corrupt_error(path, "its meta table has no ledger_id")
    return row[0]


def _check_identity(conn: sqlite3.Connection, path: Path, expected_id: str) -> None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        row = None
    if row is None or row[0] != expected_id:
        what = "emptied (it has no tables now)" if row is None else "replaced by another ledger"
        raise DataError(f"The ledger {str(path)!r} was {what} while this pipeline used it. {_START_OVER}")


# --- SQLite's errors in words ----------------------------------------------------------------------


def data_error(path: Path, exc: sqlite3.DatabaseError, doing: str) -> DataError | None:
    """A DataError naming the path and the cause of a SQLite failure, or None for an error in SQL."""
    name = _error_name(exc)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return corrupt_error(path, exc)
    if name == "SQLITE_CANTOPEN" and not path.exists():
        return DataError(f"The ledger {str(path)!r} was moved or deleted while this pipeline used it. {_START_OVER}")
    if name.startswith(("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR")):
        return io_error(path, _os_cause(path, name, exc), doing)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return DataError(f"Could not finish {doing} at {str(path)!r}: another process kept the ledger locked for "
                         f"{BUSY_TIMEOUT_S:.0f} s (SQLite says: {exc}). Nothing was written; wait for the other "
                         "notebook or script sharing this work folder to finish, then try again.")
    return None


def _os_cause(path: Path, name: str, exc: sqlite3.DatabaseError) -> OSError:
    """The operating system's view of a SQLite I/O failure: full, read-only, no permission, or other."""
    folder = next(p for p in path.parents if p.exists())
    if name.startswith("SQLITE_FULL") or shutil.disk_usage(folder).free == 0:
        code = errno.ENOSPC
    elif _read_only_fs(folder):
        code = errno.EROFS
    elif name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
        code = errno.EACCES
    else:
        return OSError(f"the disk reported an I/O error (SQLite says: {exc})")
    return OSError(code, os.strerror(code), str(path))


def _error_name(exc: sqlite3.DatabaseError) -> str:
    """SQLite's result code name (Python >= 3.11 gives it; before, read from the message)."""
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        return name
    text = str(exc).lower()
    for words, code in (("malformed", "SQLITE_CORRUPT"), ("not a database", "SQLITE_NOTADB"),
                        ("disk is full", "SQLITE_FULL"), ("readonly", "SQLITE_READONLY"),
                        ("unable to open", "SQLITE_CANTOPEN"), ("disk i/o", "SQLITE_IOERR"),
                        ("locked", "SQLITE_BUSY")):
        if words in text:
            return code
    return "SQLITE_CORRUPT" if type(exc) is sqlite3.DatabaseError else "SQLITE_ERROR"


def corrupt_error(path: Path, detail: object) -> DataError:
    return DataError(
        f"{str(path)!r} is a SQLite file but it is damaged or truncated (SQLite says: {detail}). Move it away "
        f"(e.g. rename it to {path.name}.damaged) or choose another workdir=: nbtrain then starts a new, empty "
        "ledger, which knows none of the test evaluations recorded in this one, so keep the damaged file as the "
        f"record of what was evaluated (`sqlite3 {path.name} .recover` may rescue its rows). nbtrain will not "
        "overwrite it."
    )


# --- validation and migrations ---------------------------------------------------------------------


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
        raise corrupt_error(path, f"schema_version is {meta.get('schema_version')!r}") from exc
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
        raise corrupt_error(path, "; ".join(problems))


def _ensure_wal(conn: sqlite3.Connection) -> None:
    """WAL lets readers run beside a writer. The mode is stored in the file, so this runs once per
    ledger. Switching needs the file to itself, and SQLite may answer "database is locked" at once,
    without its busy handler, while another process is creating the same ledger: so retry, within
    the same time budget as any write."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
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
        rollback(conn)
        raise
    conn.execute("COMMIT")


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back unless SQLite already did (after SQLITE_FULL, say): a second error would hide the first."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
