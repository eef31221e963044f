"""Content fingerprints of rows and datasets.

Rows are identified by what they contain, not by their position or index label, so the same rows
are recognised in a new Pipeline, after a kernel restart or in a shuffled copy of the data. That
is what lets the test lock in the ledger survive all of those.

The test lock goes further (content_keys): it keys rows as cleaning leaves them, with every cell in
one normal form, so that a copy of the data that differs only in ways a model cannot see (a float32
cast, 1e-12 noise, numbers stored as text, a renamed or reordered column, an added constant column)
is still the same rows.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from nbtrain.data.inputs import naive_times

# 64-bit FNV prime: mixing column hashes by multiply-xor keeps the combined hash order-sensitive
# across columns, so (a=1, b=2) and (a=2, b=1) differ.
_PRIME = np.uint64(1099511628211)
_OFFSET = np.uint64(14695981039346656037)


def column_hashes(column: pd.Series) -> np.ndarray:
    """One uint64 per cell; equal cells (missing included) hash equal, whatever the row."""
    return pd.util.hash_pandas_object(column, index=False).to_numpy(dtype=np.uint64)


def combine(frame: pd.DataFrame, columns: list) -> np.ndarray:
    """Row hashes over `columns`, taken in name order so a reordered DataFrame hashes the same."""
    return _chain([column_hashes(frame[name]) for name in sorted(columns, key=str)], len(frame), _OFFSET)


def _chain(hashes: list[np.ndarray], n_rows: int, start: np.uint64) -> np.ndarray:
    """Mix per-column hashes into one per row, in the order given."""
    out = np.full(n_rows, start, dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 wrap-around is the point of the mix
        for column in hashes:
            out ^= column
            out *= _PRIME
    return out


# --- the test lock's keys ---------------------------------------------------------------------------

# Starts the by-place key, so that it never equals a by-name key of other rows by construction.
_BY_PLACE = np.uint64(0x9E3779B97F4A7C15)


def content_keys(frame: pd.DataFrame, columns: list) -> np.ndarray:
    """Two uint64 keys per row over `columns` (rows, 2), cells in normal form (normal_cells).

    Key 0 takes the columns in name order: a reordered frame keys the same. Key 1 takes them in the
    order given, names unused: a frame with renamed columns keys the same. A row is known by either.
    """
    normal = {name: column_hashes(normal_cells(frame[name])) for name in columns}
    by_name = _chain([normal[name] for name in sorted(columns, key=str)], len(frame), _OFFSET)
    by_place = _chain([normal[name] for name in columns], len(frame), _OFFSET ^ _BY_PLACE)
    return np.column_stack([by_name, by_place])


def name_keys(frame: pd.DataFrame, columns: list) -> np.ndarray:
    """Key 0 of content_keys alone, for rows whose columns are matched by name (predict's new rows)."""
    return _chain([column_hashes(normal_cells(frame[name])) for name in sorted(columns, key=str)],
                  len(frame), _OFFSET)


def normal_cells(column: pd.Series) -> pd.Series:
    """A column in the one form the test lock compares.

    Numbers and booleans as float32: what a network reads, so a float32 copy, noise far below float32's
    precision (1e-9 relative), ints and 1.0/True all key the same. Dates as UTC microseconds. Anything
    else as text, so a category, its label and "3" for 3.0 key the same; missing cells key as missing.
    """
    if (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)) and \
            not pd.api.types.is_complex_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)
        return pd.Series(values + np.float32(0.0), index=column.index)  # -0.0 + 0.0 is 0.0
    if pd.api.types.is_datetime64_any_dtype(column):
        # microseconds: any unit of one instant agrees, and 9999-12-31 (a common "no end" date) still fits
        stamps = naive_times(column).to_numpy(dtype="datetime64[us]")
        return pd.Series(stamps.view(np.int64), index=column.index)  # NaT is the smallest int64
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    texts = np.array([label_text(value) for value in uniques] + [None], dtype=object)
    return pd.Series(texts[codes], index=column.index)  # code -1 picks the None at the end


def label_text(value) -> str:
    """A cell as the text a label would hold: 3.0 -> "3", 2.5 -> "2.5", "red" -> "red"."""
    if isinstance(value, str):
        return value
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def any_known(keys: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per row of `keys` (one key per row, or (rows, keys)): whether any of its keys is in `known`."""
    keys = np.asarray(keys)
    return np.isin(keys.reshape(len(keys), -1), known).any(axis=1)


def known_key(keys: np.ndarray, known: np.ndarray) -> np.ndarray:
    """One key per row: a key of the row that `known` holds, else its first key. Lets a check written
    for one key per row (is this row in `known`?) answer for rows known by several."""
    keys = np.asarray(keys).reshape(len(keys), -1)
    hit = np.isin(keys, known)
    return keys[np.arange(len(keys)), np.where(hit.any(axis=1), hit.argmax(axis=1), 0)]


def mix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Combine two row-hash arrays into one (e.g. the feature part and the target part)."""
    with np.errstate(over="ignore"):
        return (first ^ (second * _PRIME)) * _PRIME


def dataset_fingerprint(row_hashes: np.ndarray, columns: list) -> str:
    """A hex id for a dataset: its column names and the multiset of its rows, in any order."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(sorted(map(str, columns))).encode())
    digest.update(np.sort(row_hashes).tobytes())
    return digest.hexdigest()


def rows_fingerprint(parts: dict[str, np.ndarray]) -> str:
    """A short hex id for an assignment of rows to named parts (a split)."""
    digest = hashlib.sha256()
    for name in sorted(parts):
        digest.update(name.encode())
        digest.update(np.sort(parts[name]).tobytes())
    return digest.hexdigest()[:16]
