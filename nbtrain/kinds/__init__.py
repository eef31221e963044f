"""Data kinds beyond tables: one package per kind (image, text, timeseries, ranking) holds all of its
code: its data source (data.py), its Pipeline subclass (pipeline.py), its bundle format (bundle.py)
and its default models (models.py), on top of the shared core (nbtrain.data, nbtrain.training,
nbtrain.pipeline). nbtrain.Pipeline(...) picks the class from `kind` and `task` through _CLASSES,
importing a kind's package only then: adding a kind is adding a folder and a line there.
This module imports no Pipeline: nbtrain.pipeline imports it, and a kind's package by name.
"""

from __future__ import annotations

import importlib

import pandas as pd

# kind (or task, for ranking) -> "module:class" of its Pipeline; tabular is the base class itself
_CLASSES = {
    "image": "nbtrain.kinds.image.pipeline:ImagePipeline",
    "text": "nbtrain.kinds.text.pipeline:TextPipeline",
    "timeseries": "nbtrain.kinds.timeseries.pipeline:TimeSeriesPipeline",
    "ranking": "nbtrain.kinds.ranking.pipeline:RankingPipeline",
}
# the base Pipeline's constructors of a kind's data (Pipeline.from_folder, Pipeline.from_interactions)
_MAKERS = {
    "from_folder": "nbtrain.kinds.image.pipeline:from_folder",
    "from_interactions": "nbtrain.kinds.ranking.interactions:InteractionPipeline",
}


def pipeline_class(kind: str, task):
    """The Pipeline subclass of a kind (task "ranking": ranking's), or None for tables (the base class).
    nbtrain.pipeline imports this module, never the other way: a kind's module is imported by name."""
    key = "ranking" if task == "ranking" else kind
    return None if key == "tabular" else _named(_CLASSES[key])


def maker(name: str):
    """The function or class behind Pipeline.<name> (a kind's own way in: a folder of images, interactions)."""
    return _named(_MAKERS[name])


def _named(where: str):
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)


def infer_kind(data, target) -> str:
    """"image" for a column of image paths or pixel arrays, "text" for one column of free text, else
    "tabular". Time series are never guessed: a table with a time column is often plain tabular data
    split by time; pass kind="timeseries" to forecast it."""
    if not isinstance(data, pd.DataFrame) or not data.columns.is_unique:
        return "tabular"  # the Pipeline's own checks then say what is wrong with the data
    features = [c for c in data.columns if c != target]
    from nbtrain.kinds import detect
    if any(detect.is_image_column(data[c]) for c in features):
        return "image"
    if len(features) == 1 and detect.is_text_column(data[features[0]]):
        return "text"
    return "tabular"
