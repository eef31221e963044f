"""Identifier-like columns: row numbers, case ids, keys. They name a row rather than describe it.

As a feature an identifier teaches nothing that carries over to new rows: a row number is
standard-scaled into a fake trend, a case id becomes an embedding with one code per case, learned
from two or three rows each (and, where rows of one case fall in train and test, a channel for the
test answers). Cleaning leaves such columns out by default, says why, and `clean(keep_identifiers=
[...])` puts one back. A column is identifier-like when it is

- labels, unique per row (at least `UNIQUE_SHARE` of the rows with a value hold their own value);
- whole numbers unique per row that run like a counter: consecutive (1..n, 0..n-1, 1001..) or
  in ascending row order;
- named like an identifier ("id", "user_id", "caseid", "CustomerID", "key", "uuid", "rownames")
  and labels or whole numbers with many rare values: over `ONEHOT_LEVELS` levels and at most
  `NAMED_MAX_ROWS_PER_VALUE` rows per value on average.

Decimal numbers are never identifiers: a measurement is unique per row by nature.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

UNIQUE_SHARE = 0.95
ONEHOT_LEVELS = 20
NAMED_MAX_ROWS_PER_VALUE = 5.0
# whole names or final words that name a record rather than describe it
_ID_WORDS = {"id", "ids", "uuid", "guid", "key", "idx", "index", "rownames", "rowname", "rownum", "rowid"}


def id_like_name(name) -> bool:
    """ "id", "user_id", "CustomerID", "caseId", "caseid", "row number" -> True; "paid", "valid" -> False."""
    text = str(name)
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", text)
    last = words[-1].lower() if words else ""
    if last in _ID_WORDS or text.lower().replace(" ", "_") in ("row_number", "row_num", "record_id"):
        return True
    # one lower-case word ending in "id" after a noun: "caseid", "userid" (not "paid", "valid", "humid")
    return bool(re.fullmatch(r"(case|user|customer|client|patient|person|subject|account|order|item|product|"
                             r"session|transaction|record|row|member|employee|student|house|loan|visit)id",
                             text.lower()))


def identifier_reason(column: pd.Series, kind: str) -> str | None:
    """Why `column` (cleaned, of cleaning's `kind`) looks like an identifier, or None."""
    present = column.dropna()
    if len(present) < 2 or kind not in ("numeric", "categorical"):
        return None
    distinct = present.nunique()
    unique = distinct >= UNIQUE_SHARE * len(present)
    whole = kind == "numeric" and _whole_numbers(present)
    if kind == "categorical" and unique:
        return f"labels unique per row ({distinct} distinct in {len(present)} rows): a value seen once teaches nothing"
    if whole and unique:
        values = present.to_numpy(dtype=float)
        if values.max() - values.min() + 1 <= len(present) / UNIQUE_SHARE:
            return (f"whole numbers {values.min():g}..{values.max():g}, one per row: a row number or counter, "
                    "not a measurement")
        if (np.diff(values) > 0).all():
            return "whole numbers unique per row, ascending in row order: a running number, not a measurement"
    if (kind == "categorical" or whole) and id_like_name(column.name) and distinct > ONEHOT_LEVELS \
            and len(present) / distinct <= NAMED_MAX_ROWS_PER_VALUE:
        return (f"named like an identifier, with {distinct} values of {len(present) / distinct:.1f} rows each on "
                "average: too few rows per value to learn from")
    return None


def _whole_numbers(values: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(values):
        return False
    numbers = values.to_numpy(dtype=float)
    return bool(np.all(numbers == np.round(numbers)))
