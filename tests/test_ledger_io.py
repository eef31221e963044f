"""The ledger on disks as users meet them: read-only, full, with a damaged page or rows edited by hand.
Each problem is a DataError that names the path and the cause (real tmpfs mounts, really corrupted pages)."""

import errno
import sqlite3
from pathlib import Path

import pytest
from palmerpenguins import load_penguins

import nbtrain as nt
from nbtrain.errors import DataError
from nbtrain.ledger import Ledger

pytestmark = pytest.mark.usefixtures("one_thread")  # baselines train here: one thread each on a shared CPU


def _pipeline(workdir, **options):
    pipe = nt.Pipeline(load_penguins(), target="species", workdir=workdir, **options)
    pipe.clean(), pipe.split()
    return pipe


def _fill(folder: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as out:  # unbuffered: the error comes from write(), not from close()
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_ledger_in_a_read_only_folder_can_still_be_read(tmpfs):
    disk = tmpfs("4m")
    pipe = _pipeline(disk / "runs")
    run = pipe.baseline()
    pipe.test()
    tmpfs.remount(disk, "ro")

    again = nt.Pipeline(load_penguins(), target="species", workdir=disk / "runs")
    again.clean()
    report = again.split()
    assert any("can only be read (the file system is read-only): this split is not recorded in it" in w
               for w in report.warnings)
    assert again.runs.index.tolist() == [run.name]
    status = repr(again.status())
    assert f"Test split evaluated at" in status and f"(run {run.name!r})" in status
    assert "can only be read (the file system is read-only)" in status
    with pytest.raises(DataError, match=rf"Could not finish recording run '{run.name}' at '.*ledger.sqlite': the file "
                                        r"system is read-only\. Nothing was half-written there; choose a writable "
                                        r"workdir="):
        again.baseline()


def test_a_new_ledger_cannot_be_made_in_a_read_only_folder(tmpfs):
    disk = tmpfs("1m")
    tmpfs.remount(disk, "ro")
    pipe = nt.Pipeline(load_penguins(), target="species", workdir=disk / "runs")
    pipe.clean()
    with pytest.raises(DataError, match=r"Could not finish creating the ledger at '.*runs/ledger.sqlite': the file "
                                        r"system is read-only"):
        pipe.split()


def test_a_full_disk_is_named_and_the_ledger_survives_it(tmpfs):
    disk = tmpfs("2m")
    pipe = _pipeline(disk / "runs")
    filler = _fill(disk)
    with pytest.raises(DataError, match=r"Could not finish recording run 'baseline-sklearn-[0-9a-f]{6}' at "
                                        r"'.*ledger.sqlite': the disk is full\. Nothing was half-written there; free "
                                        r"some space"):
        pipe.baseline()
    filler.unlink()
    run = pipe.baseline()  # space again: the same ledger takes the run
    assert pipe.runs.index.tolist() == [run.name]
    with sqlite3.connect(disk / "runs" / "ledger.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_ledger_cannot_be_created_on_a_full_disk(tmpfs):
    disk = tmpfs("1m")
    (disk / "runs").mkdir()
    _fill(disk)
    pipe = nt.Pipeline(load_penguins(), target="species", workdir=disk / "runs")
    pipe.clean()
    with pytest.raises(DataError, match=r"Could not finish opening the ledger at '.*ledger.sqlite': the disk is full"):
        pipe.split()


def _corrupt_table(path: Path, table: str) -> None:
    """Overwrite the first page of `table`'s b-tree with garbage, as a bad sector or a stray write would."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    with open(path, "r+b") as out:
        out.seek((root - 1) * page_size)
        out.write(bytes(range(256)) * (page_size // 256))


def test_a_corrupt_page_is_a_data_error_that_says_what_to_do(tmp_path):
    pipe = _pipeline(tmp_path / "runs")
    pipe.baseline()
    path = tmp_path / "runs" / "ledger.sqlite"
    _corrupt_table(path, "runs")
    pinned = (r"'.*ledger.sqlite' is a SQLite file but it is damaged or truncated \(SQLite says: .*\)\. Move it away "
              r"\(e\.g\. rename it to ledger\.sqlite\.damaged\) or choose another workdir=: nbtrain then starts a new, "
              r"empty ledger")
    with pytest.raises(DataError, match=pinned):
        pipe.runs  # the pipeline's own ledger, opened before the damage
    with pytest.raises(DataError, match=pinned):
        Ledger(tmp_path / "runs")  # a fresh look: the integrity check at opening


@pytest.mark.parametrize(("table", "column", "value"), [
    ("test_evaluations", "evaluated_at", 12345),
    ("test_evaluations", "overlaps", "not json"),
    ("runs", "config", b"\xff\xfe"),
])
def test_rows_edited_by_hand_are_a_data_error_naming_the_ledger(tmp_path, table, column, value):
    pipe = _pipeline(tmp_path / "runs")
    pipe.baseline()
    pipe.test()
    with sqlite3.connect(tmp_path / "runs" / "ledger.sqlite") as conn:
        conn.execute(f"UPDATE {table} SET {column} = ?", (value,))
    with pytest.raises(DataError, match=r"'.*ledger.sqlite' is a SQLite file but it is damaged or truncated"):
        pipe.status() if table == "test_evaluations" else pipe.runs
