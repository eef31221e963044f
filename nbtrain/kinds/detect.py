"""Recognising a column's kind from a sample of its values (for kind="auto")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SAMPLE = 200
TEXT_MIN_WORDS = 5  # median words per value: more reads as prose, fewer as labels or codes


def is_image_column(column: pd.Series) -> bool:
    """Paths with an image suffix, or 2-D/3-D arrays, in (a sample of) the column's values."""
    values = column.dropna().head(SAMPLE)
    # pandas >= 3 stores text as its own string dtype, not object: paths may come in either
    if values.empty or not (column.dtype == object or pd.api.types.is_string_dtype(column)):
        return False
    if all(isinstance(v, np.ndarray) and v.ndim in (2, 3) for v in values):
        return True
    return all(isinstance(v, (str, Path)) and str(v).lower().endswith(IMAGE_SUFFIXES) for v in values)


def is_text_column(column: pd.Series) -> bool:
    values = column.dropna().head(SAMPLE)
    if values.empty or not all(isinstance(v, str) for v in values):
        return False
    return float(values.str.split().str.len().median()) > TEXT_MIN_WORDS
