"""One rank's side of a run on several processes: its share of every batch, and the decisions all ranks agree on.

The loop (nbtrain.training.loop) asks `Ranks` five things, always at the same step on every rank, so the
collective calls pair up and no rank waits for one that left:

- `trim(order, batch_size)`: every rank draws the same seeded permutation; a last batch too small to give
  every rank a row (two rows for a model with batch norm, which needs two) sits this epoch out, as one
  process drops a last batch of one row.
- `mine(rows)`: this rank's rows of a batch, rows[rank::world]. `batch_size` is global: each step the
  ranks together train on exactly the rows one process would, and DistributedDataParallel averages the
  gradients, so the steps, the schedule and the learning rate are those of one process (lr is not scaled).
- `agree(total, state)`: the running loss summed over the ranks (a NaN on any rank stops all) and the stop
  file, read by every rank and agreed by the same all-reduce: a Stop or Interrupt in the notebook ends every
  rank after the same step.
- `once(compute)`: validation, computed on rank 0 and sent to every rank.
- `settle(state)`: rank 0's callbacks (best checkpoint, early stopping) decided; every rank takes its decision.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

STOP_FILE = "stop"                     # written in the run's folder by the notebook; holds the stop reason
STOP_REASONS = ("stopped", "interrupted")


class Ranks:
    """This process's place in the group: rank, world size, and the run folder's stop file."""

    def __init__(self, rank: int, world: int, stop_file: Path, least_rows: int = 2):
        self.rank, self.world, self.stop_file = rank, world, Path(stop_file)
        self.least_rows = least_rows  # per rank in any batch: 2 where batch norm trains (RankEngine.wrap says)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def trim(self, order: torch.Tensor, batch_size: int) -> torch.Tensor:
        left = len(order) % batch_size
        return order[:len(order) - left] if 0 < left < self.least_rows * self.world and len(order) > left else order

    def mine(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[self.rank::self.world]

    def agree(self, total: torch.Tensor, state) -> float:
        asked = self._asked()
        flags = [float(asked == reason) for reason in STOP_REASONS]
        agreed = torch.tensor([float(total), *flags], dtype=torch.float64, device=total.device)
        dist.all_reduce(agreed)
        for reason, flag in zip(STOP_REASONS, agreed[1:].tolist()):
            if flag > 0:
                state.request_stop(reason)
        return float(agreed[0])

    def sum(self, total: torch.Tensor) -> float:
        summed = total.detach().to(torch.float64).clone()
        dist.all_reduce(summed)
        return float(summed)

    def once(self, compute):
        box = [compute() if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def settle(self, state) -> None:
        box = [(state.stop, state.stop_reason, state.best, state.best_epoch) if self.main else None]
        dist.broadcast_object_list(box, src=0)
        state.stop, state.stop_reason, state.best, state.best_epoch = box[0]

    def _asked(self) -> str | None:
        """The reason in the stop file, when the notebook wrote one (an unreadable reason reads as a Stop)."""
        try:
            reason = self.stop_file.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError:
            return "stopped"
        return reason if reason in STOP_REASONS else "stopped"


def from_environment(stop_file: Path) -> Ranks:
    """The Ranks of a process started by torchrun (RANK and WORLD_SIZE are in its environment)."""
    return Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), stop_file)
