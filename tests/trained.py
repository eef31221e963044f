"""Small trained pipelines for the tests of predict, save/load, export and MLflow."""

import numpy as np

import nbtrain as nt

from conftest import make_frame


def trained(workdir, frame=None, target="label", baseline=False, model=None, **fit):
    """A pipeline on `frame` (default: conftest.make_frame) with a 2-epoch network run, and the frame."""
    frame = make_frame() if frame is None else frame
    pipe = nt.Pipeline(frame, target=target, workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    pipe.fit(model, **{"epochs": 2, "view": None, "doctor": False, **fit})
    if baseline:
        pipe.baseline()
    return pipe, frame


def sealed_rows(pipe):
    """Index labels of the pipeline's test rows (reached through private state, as only tests may)."""
    return pipe._frame.index[pipe._split.positions["test"]]


def with_many_labels(n=600, seed=0):
    """make_frame plus a 40-level label column, which the preprocessing encodes as embedding codes."""
    frame = make_frame(n=n, seed=seed)
    frame.insert(2, "city", np.random.default_rng(seed).choice([f"city{i:02d}" for i in range(40)], size=n))
    return frame
