"""Content fingerprints of rows and datasets.

Rows are identified by what they contain, not by their position or index label, so the same rows
are recognised in a new Pipeline, after a kernel restart or in a shuffled copy of the data. That
is what lets the test lock in the ledger survive all of those.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

# 64-bit FNV prime: mixing column hashes by multiply-xor keeps the combined hash order-sensitive
# across columns, so (a=1, b=2) and (a=2, b=1) differ.
_PRIME = np.uint64(1099511628211)
_OFFSET = np.uint64(14695981039346656037)


def column_hashes(column: pd.Series) -> np.ndarray:
    """One uint64 per cell; equal cells (missing included) hash equal, whatever the row."""
    return pd.util.hash_pandas_object(column, index=False).to_numpy(dtype=np.uint64)


def combine(frame: pd.DataFrame, columns: list) -> np.ndarray:
    """Row hashes over `columns`, taken in name order so a reordered DataFrame hashes the same."""
    out = np.full(len(frame), _OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 wrap-around is the point of the mix
        for name in sorted(columns, key=str):
            out ^= column_hashes(frame[name])
            out *= _PRIME
    return out


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
