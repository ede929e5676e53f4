"""Mini-batches sliced from tensors held in memory: no per-sample ``__getitem__`` and collate.

For small image datasets the per-sample DataLoader path costs more than the model's own step; a
batch here is one indexing operation on a tensor that already lives on the training device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


class EpochOrder:
    """Index order of one epoch: a seeded permutation (or none), sharded across DDP ranks.

    Lightning calls ``set_epoch`` on a loader's ``sampler`` at the start of each epoch, exactly as
    it does for ``DistributedSampler``; the order depends only on (seed, epoch), so every rank
    draws the same permutation and takes its own stride of it, and a resumed run sees the same
    order as an uninterrupted one.
    """

    def __init__(
        self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))

    def indices(self, device: torch.device) -> Tensor | None:
        """The epoch's indices, or ``None`` for "all, in stored order" (sliced without a gather)."""
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        return order[self.rank :: self.world_size].to(device)


class TensorBatches:
    """An iterable of ``(images, labels)`` batches over in-memory tensors, in ``sampler``'s order.

    With ``steps_per_block`` set, each item is a list of that many consecutive batches (the last
    one shorter): a training block that the module runs as that many optimizer steps.
    """

    batch_sampler = None  # read by Lightning's loader checks; batching is done here

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        sampler: EpochOrder,
        steps_per_block: int | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.batch_size, self.sampler = (
            images,
            labels,
            batch_size,
            sampler,
        )
        self.steps_per_block = steps_per_block

    @property
    def num_batches(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __len__(self) -> int:
        if self.steps_per_block is None:
            return self.num_batches
        return -(-self.num_batches // self.steps_per_block)

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's mini-batches one by one, ignoring blocks."""
        x, y, size = self.images, self.labels, self.batch_size
        order = self.sampler.indices(x.device)
        if order is None:
            for start in range(0, len(x), size):
                yield x[start : start + size], y[start : start + size]
        else:
            for index in order.split(size):
                yield x[index], y[index]

    def __iter__(self) -> Iterator[Any]:
        if self.steps_per_block is None:
            yield from self.batches()
            return
        block: list[tuple[Tensor, Tensor]] = []
        for batch in self.batches():
            block.append(batch)
            if len(block) == self.steps_per_block:
                yield block
                block = []
        if block:
            yield block
