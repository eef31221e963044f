"""nbtrain.files: atomic, durable writes that follow the umask and name the path and cause on failure."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from nbtrain.errors import DataError
from nbtrain.files import atomic_path, atomic_write, remove_stale_temps, umask


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 KiB tmpfs (root only): a full disk and a read-only file system, as users meet them."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or \
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert umask() == mask
        path = atomic_write(tmp_path / "a.bin", lambda out: out.write(b"x"), doing="writing a test file")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"x"
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def broken(out):
        out.write(b"half")
        raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError, match="the writer failed"):
        atomic_write(path, broken, doing="writing a test file")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_path_writer_can_check_its_file_before_it_replaces_the_old_one(tmp_path):
    path = tmp_path / "model.onnx"

    def write(temp: Path):
        assert temp.name.endswith(".tmp.onnx")  # the writer may read the format from the suffix
        temp.write_bytes(b"new")

    atomic_path(path, write, doing="writing an export", suffix=".onnx")
    assert path.read_bytes() == b"new"


def test_a_full_disk_is_a_data_error_naming_the_path_and_the_cause(small_disk):
    path = small_disk / "best.pt"
    with pytest.raises(DataError, match=r"best\.pt.*the disk is full.*free some space"):
        atomic_write(path, lambda out: out.write(os.urandom(256 * 1024)), doing="writing the checkpoint")
    assert list(small_disk.iterdir()) == []  # the temp file is gone too


def test_a_read_only_folder_is_a_data_error_naming_the_cause(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(DataError, match=r"writing the bundle.*read-only.*choose a writable workdir"):
        atomic_write(small_disk / "m.nbtrain", lambda out: out.write(b"x"), doing="writing the bundle")


def test_stale_temps_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".best.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".m.onnx.x1.tmp.onnx").write_bytes(b"half")
    (tmp_path / "best.pt").write_bytes(b"whole")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == [".best.pt.abc123.tmp", ".m.onnx.x1.tmp.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
