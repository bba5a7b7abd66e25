"""Training and encoding beyond one process, with PyTorch's own engine: ``torchrun`` starts one process per
device and ``DistributedDataParallel`` averages the gradients (docs/architecture.md, "Beyond one process").

``Distributed.from_env`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins
the process group: ``nccl`` on CUDA, ``gloo`` on CPU. Without torchrun it is one process and every method
here is a no-op, so the single-process path never changes.

How work is split:

- training: the epoch's shuffled order is the same on every rank; each global step takes
  ``anchors x world`` images of it and every rank trains on its contiguous share (``shard_order``);
- encoding and feature extraction: batches are dealt round-robin (batch i to rank i mod world), so every
  batch is the one a single process would run, and the merged result is bit for bit the single-process one.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

WAIT_SECONDS = 4 * 3600  # how long ranks wait for rank 0's whole-set work (DistillHash's pairs) before failing


@dataclass(frozen=True)
class Distributed:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        """Join torchrun's process group (``gloo`` on CPU, ``nccl`` on CUDA) when ``WORLD_SIZE`` > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if not dist.is_initialized():
            if backend == "nccl":
                torch.cuda.set_device(local)
            dist.init_process_group(backend, timeout=timedelta(seconds=WAIT_SECONDS))
        return cls(rank, world, local, backend)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, device: str) -> str:
        """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
        return f"cuda:{self.local_rank}" if self.active and device == "cuda" else device

    def close(self) -> None:
        """Leave the process group, and free it now: a group still referenced (by a DDP model in a reference
        cycle) would otherwise be freed at interpreter exit, when its gloo threads can no longer take the GIL to
        drop their last tensors, and the process aborts ("terminate called without an active exception")."""
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
            gc.collect()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled between our own processes)."""
        if not self.active:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every rank: each rank's last training step updated its
        own; encoding must use one set."""
        if self.active:
            for b in module.buffers():
                dist.broadcast(b, src=0)

    def my_batches(self, n: int, batch: int) -> range:
        """The batch numbers (of ``ceil(n / batch)``) this rank handles: i with i mod world == rank."""
        return range(self.rank, -(-n // batch), self.world)

    def gather_batches(self, mine: list[np.ndarray]) -> list[np.ndarray]:
        """Every rank's batch results (``my_batches`` order), merged on every rank into batch order."""
        if not self.active:
            return mine
        parts: list[list[np.ndarray] | None] = [None] * self.world
        dist.all_gather_object(parts, mine)
        return merge_round_robin(parts)


def is_main_process() -> bool:
    """Whether this process prints and writes: rank 0 under torchrun, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def merge_round_robin(parts: list[list[Any]]) -> list[Any]:
    """Batch results dealt round-robin to ``len(parts)`` ranks back in batch order."""
    total = sum(len(p) for p in parts)
    return [parts[i % len(parts)][i // len(parts)] for i in range(total)]


def shard_order(order: np.ndarray, anchors: int, d: Distributed) -> tuple[np.ndarray, list[float]]:
    """This rank's part of an epoch's ``order`` and the weight of each of its steps.

    A global step takes ``anchors x world`` consecutive images of the order; each rank gets a contiguous
    share (np.array_split). A last step with fewer images than ranks is dropped, so every rank takes the
    same number of steps (DDP needs that). A step's weight, share x world / step size, makes the averaged
    gradients those of the mean over the whole step when the last step splits unevenly (1 otherwise).
    """
    if not d.active:
        return order, [1.0] * -(-len(order) // anchors)
    step = anchors * d.world
    mine, weights = [], []
    for a in range(0, len(order), step):
        chunk = order[a : a + step]
        if len(chunk) < d.world:
            break
        share = np.array_split(chunk, d.world)[d.rank]
        mine.append(share)
        weights.append(len(share) * d.world / len(chunk))
    return (np.concatenate(mine) if mine else order[:0]), weights
