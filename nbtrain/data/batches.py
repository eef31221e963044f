"""The protocol between split data and the training loop, and its tabular implementation.

A split's batches offer: `len()` units (rows, windows, queries) that the loop permutes each epoch;
`device`; `take(rows)` -> (inputs, y_fit) for one batch; `load(chunks)` -> those batches for a whole
epoch, in order (a source may prefetch them with DataLoader workers); `evaluation_batches(n)`
walking the split in order; `y`, the targets the metrics read. A model is called as model(*inputs).

The loop calls loss_fn(model(*inputs), y_fit). For task "ranking", y_fit is a float tensor of shape
(rows, 2): column 0 the row's relevance (a grade >= 0; implicit feedback: 1 observed, 0 a sampled
negative), column 1 the number of its group (query or user), as a float; a unit is a whole group,
and the ranking losses compare rows only within a group (nbtrain.training.ranking). The ranking
sources are in nbtrain.kinds.ranking.data; their evaluation batches pass the groups to the metrics as
extra={"indexes": ...}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


class EvaluationBatch(NamedTuple):
    """A run of consecutive units of a split, for validation and prediction."""

    inputs: tuple           # model(*inputs)
    y_fit: torch.Tensor     # what the loss compares against
    y: torch.Tensor         # what the metrics compare against
    units: int              # how many units (rows, windows, queries) it holds: the loss is weighted by it
    extra: dict             # further keywords for the metrics (ranking: the query of each row, `indexes`)


@dataclass
class Batches:
    """One tabular split on the device: float features, embedding codes, targets (scaled for regression)."""

    X: torch.Tensor
    codes: torch.Tensor
    y: torch.Tensor         # what the metrics compare against (class ids, or values in data units)
    y_fit: torch.Tensor     # what the loss compares against (standardised values for regression)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.y.device

    def inputs(self, rows) -> tuple:
        return (self.X[rows],) if self.codes.shape[1] == 0 else (self.X[rows], self.codes[rows])

    def take(self, rows: torch.Tensor) -> tuple:
        """(inputs, y_fit) of these rows."""
        return self.inputs(rows), self.y_fit[rows]

    def load(self, chunks):
        """The epoch's batches, in order: here an index into tensors already on the device."""
        return (self.take(rows) for rows in chunks)

    def evaluation_batches(self, batch_rows: int):
        for start in range(0, len(self), batch_rows):
            part = slice(start, start + batch_rows)
            yield EvaluationBatch(self.inputs(part), self.y_fit[part], self.y[part], len(self.y[part]), {})
