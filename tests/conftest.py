import os

import numpy as np
import pandas as pd
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test trains on one torch thread (a test of thread counts sets its own). On a busy 2-core
    machine two threads wait for cores, and the doctor then rightly adds cpu_threads to a run whose
    findings a test lists exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """One intra-op torch thread. On a small shared CPU, threads beyond the free cores wait to be scheduled:
    convolutions and recurrent layers ran 6-30x slower with two, and a sleeping data source made compute
    look slow (the doctor's data_bound test). OpenMP and BLAS pools too: HistGradientBoosting's spinning
    OpenMP threads took a penguins baseline from 0.5 s to 111 s under load."""
    from threadpoolctl import threadpool_limits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def workdir(tmp_path):
    """Each test gets its own work folder, so ledgers never leak between tests."""
    return tmp_path / "runs"


@pytest.fixture
def penguins():
    from palmerpenguins import load_penguins
    return load_penguins()


def make_frame(n=600, seed=0, classes=("a", "b", "c")):
    """A small mixed-type classification table whose target depends on the features."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(loc=5, scale=2, size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    score = x1 + 0.3 * x2 + (color == "red") + rng.normal(scale=0.8, size=n)
    target = np.array(classes)[np.digitize(score, np.quantile(score, np.linspace(0, 1, len(classes) + 1)[1:-1]))]
    return pd.DataFrame({"x1": x1, "x2": x2, "color": color, "label": target})


@pytest.fixture
def frame():
    return make_frame()


class Untouched:
    """Asserts that a DataFrame is exactly as it was when this object was made."""

    def __init__(self, df):
        self.df, self.copy = df, df.copy(deep=True)
        self.columns, self.index, self.attrs = list(df.columns), df.index.copy(), dict(df.attrs)

    def check(self):
        pd.testing.assert_frame_equal(self.df, self.copy, check_exact=True)
        assert list(self.df.columns) == self.columns
        assert self.df.index.equals(self.index)
        assert self.df.attrs == self.attrs


@pytest.fixture
def untouched():
    return Untouched


@pytest.fixture
def tmpfs(tmp_path):
    """Real tmpfs file systems, as users meet a full disk or a read-only one (root only, else skip).

    tmpfs(size) mounts one and returns its folder; tmpfs.remount(folder, "ro") or "rw" switches it."""
    import shutil
    import subprocess
    import uuid

    mounts = []

    def mount(size: str = "64k"):
        folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        if os.geteuid() != 0 or not shutil.which("mount") or \
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]).returncode:
            pytest.skip("mounting a tmpfs needs root")
        mounts.append(folder)
        return folder

    def remount(folder, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)

    mount.remount = remount
    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)
