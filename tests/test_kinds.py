"""Which Pipeline a user gets: the kind read from the data, or as given."""

import numpy as np
import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.kinds import infer_kind

REVIEWS = ["The soup was cold and the waiter never came back to our table",
           "Lovely fresh bread, friendly staff and a quiet room for a long talk",
           "Too salty for me, but the portions were generous and cheap enough"] * 20


def test_free_text_in_one_column_reads_as_text():
    frame = pd.DataFrame({"review": REVIEWS, "label": ["bad", "good", "good"] * 20})
    assert infer_kind(frame, "label") == "text"


def test_short_labels_are_not_text():
    frame = pd.DataFrame({"colour": ["dark red", "blue", "light green"] * 20, "label": [0, 1, 0] * 20})
    assert infer_kind(frame, "label") == "tabular"


def test_paths_of_images_or_pixel_arrays_read_as_images():
    paths = pd.DataFrame({"file": [f"img/{i}.png" for i in range(10)], "label": [0, 1] * 5})
    arrays = pd.DataFrame({"pixels": [np.zeros((8, 8), dtype=np.uint8)] * 10, "label": [0, 1] * 5})
    assert infer_kind(paths, "label") == "image" and infer_kind(arrays, "label") == "image"
    mixed = paths.assign(file=[*paths.file[:9], "notes.txt"])
    assert infer_kind(mixed, "label") == "tabular"


def test_a_table_with_a_time_column_stays_tabular_unless_asked():
    frame = pd.DataFrame({"when": pd.date_range("2024-01-01", periods=30), "x": range(30), "y": range(30)})
    assert infer_kind(frame, "y") == "tabular"


def test_the_pipeline_class_follows_kind_and_task(workdir):
    frame = pd.DataFrame({"review": REVIEWS, "label": ["bad", "good", "good"] * 20})
    assert type(nt.Pipeline(frame, "label", workdir=workdir)).__name__ == "TextPipeline"
    assert type(nt.Pipeline(frame, "label", kind="tabular", workdir=workdir)) is nt.Pipeline
    with pytest.raises(nt.ConfigError, match=r"kind='pictures' is not a data kind"):
        nt.Pipeline(frame, "label", kind="pictures", workdir=workdir)
