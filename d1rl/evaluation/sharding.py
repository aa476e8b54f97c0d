"""Splitting items over processes, and the few collective operations evaluation needs.

d1's ``CustomDistributedSampler`` gives rank r the items r, r+W, r+2W, ... without padding: PyTorch's
``DistributedSampler`` would repeat items to make shards equal and so count them twice. We keep d1's split (so a
per-rank record file lines up with d1's per-rank outputs) and its no-padding property.

:class:`ProcessContext` is a thin view of Accelerate's ``PartialState`` (rank, world size, device, barrier).
Evaluation needs no model wrapping (no DDP: each rank runs its own forward passes) and no collective transfer of
results: ranks "gather" through their record files in the shared output directory, which the main process reads
after the final barrier (that is also what makes resume work with any number of processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Items ``rank, rank + W, rank + 2W, ...`` of ``items``: every item on exactly one rank, none repeated."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return list(items[rank::world_size])


@dataclass
class ProcessContext:
    """Rank/world/device plus a barrier; built from Accelerate, or by hand in tests."""

    rank: int = 0
    world_size: int = 1
    device: Any = "cpu"
    barrier: Callable[[], None] = lambda: None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_accelerate(cls, cpu: bool | None = None) -> "ProcessContext":
        """The current process group as Accelerate sees it (a single process when not launched).

        ``cpu`` None = CPU when ``ACCELERATE_USE_CPU`` is set or no GPU exists. Unlike ``Accelerator``,
        ``PartialState`` does not read that variable itself, and without ``cpu=True`` it ignores a multi-process
        CPU launch (every rank would believe it is alone and evaluate everything).
        """
        import torch
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        if cpu is None:
            cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
        state = PartialState(cpu=cpu)
        launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if launched > 1 and state.num_processes != launched:
            # Every rank would evaluate every item and append to the same record file.
            raise RuntimeError(
                f"launched with WORLD_SIZE={launched} but Accelerate formed a group of {state.num_processes} "
                f"(distributed type {state.distributed_type}); on CPU launch with ACCELERATE_USE_CPU=true "
                "accelerate launch --multi_gpu ..."
            )

        return cls(
            rank=state.process_index,
            world_size=state.num_processes,
            device=state.device,
            barrier=state.wait_for_everyone,
        )
