"""Deterministic data order and keyed random streams, independent of world size and resumable by position.

Why our own order instead of a shuffled ``DataLoader``: exact resume needs the data position to be two integers
(epoch, step in epoch), and "2 processes = 1 process with the same global batch" needs the rows of a global batch
to be the same whatever the number of processes. So each epoch has one permutation (a function of seed and epoch),
each optimizer step takes the next ``global_batch`` rows of it, and inside a step micro-batch ``m`` of rank ``r`` is
the ``r``-th slice of the ``m``-th chunk. Rows left over at the end of an epoch (fewer than a global batch) are
skipped that epoch (they land elsewhere in the next permutation); HF's Trainer likewise counts
``len(dataloader) // grad_accum`` optimizer steps per epoch.

Random streams (SFT noise, ...) come from :func:`keyed_generator`: a ``torch.Generator`` seeded by a hash of a
tuple of keys, e.g. ``(seed, "sft-noise", epoch, row_index)`` — never a global re-seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from a tuple of ints/strings (blake2b; stable across processes, platforms and runs)."""
    text = "\x1f".join(f"{type(k).__name__}:{k}" for k in keys)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keyed_generator(*keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` of ``keys``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(*keys))
    return gen


@dataclass
class DataPosition:
    """Where the next optimizer step starts: epoch and optimizer step inside that epoch."""

    epoch: int = 0
    step_in_epoch: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch}

    @classmethod
    def from_dict(cls, data: dict) -> "DataPosition":
        return cls(epoch=int(data["epoch"]), step_in_epoch=int(data["step_in_epoch"]))


class GlobalBatchSchedule:
    """Which dataset rows rank ``rank`` reads for every micro-batch of every optimizer step.

    Args:
        num_rows: size of the dataset.
        per_device_batch: rows per micro-batch per process.
        world_size: number of processes.
        rank: this process.
        grad_accum: micro-batches per optimizer step.
        seed: seed of the per-epoch permutation.
        shuffle: False = rows in dataset order every epoch.
    """

    def __init__(
        self,
        num_rows: int,
        per_device_batch: int,
        world_size: int,
        rank: int,
        grad_accum: int,
        seed: int,
        shuffle: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_rows = num_rows
        self.per_device_batch = per_device_batch
        self.world_size = world_size
        self.rank = rank
        self.grad_accum = grad_accum
        self.seed = seed
        self.shuffle = shuffle
        self.global_batch = per_device_batch * world_size * grad_accum
        self.steps_per_epoch = num_rows // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the training set has {num_rows} rows, fewer than one global batch of {self.global_batch} "
                f"(per_device_train_batch_size {per_device_batch} x {world_size} processes x "
                f"gradient_accumulation_steps {grad_accum})"
            )
        self._order_epoch: int | None = None
        self._order: list[int] = []

    def order(self, epoch: int) -> list[int]:
        """The row order of ``epoch`` (cached for the current epoch)."""
        if self._order_epoch != epoch:
            if self.shuffle:
                gen = keyed_generator(self.seed, "data-order", epoch)
                self._order = torch.randperm(self.num_rows, generator=gen).tolist()
            else:
                self._order = list(range(self.num_rows))
            self._order_epoch = epoch
        return self._order

    def global_rows(self, position: DataPosition) -> list[int]:
        """All rows of the optimizer step at ``position`` (every rank, every micro-batch), in order."""
        start = position.step_in_epoch * self.global_batch
        return self.order(position.epoch)[start : start + self.global_batch]

    def micro_batches(self, position: DataPosition) -> list[list[int]]:
        """This rank's ``grad_accum`` lists of row indices for the optimizer step at ``position``."""
        rows = self.global_rows(position)
        chunk = self.per_device_batch * self.world_size
        out = []
        for m in range(self.grad_accum):
            part = rows[m * chunk : (m + 1) * chunk]
            out.append(part[self.rank * self.per_device_batch : (self.rank + 1) * self.per_device_batch])
        return out

    def advance(self, position: DataPosition) -> DataPosition:
        """The position after one optimizer step."""
        if position.step_in_epoch + 1 >= self.steps_per_epoch:
            return DataPosition(position.epoch + 1, 0)
        return DataPosition(position.epoch, position.step_in_epoch + 1)

    def epoch_float(self, position: DataPosition) -> float:
        """Fractional epochs completed at ``position`` (for logging, like HF's ``epoch``)."""
        return position.epoch + position.step_in_epoch / self.steps_per_epoch
