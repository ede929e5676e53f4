"""Mini-batches sliced from tensors held in memory: no per-sample ``__getitem__`` and collate.

For small image datasets the per-sample DataLoader path costs more than the model's own step; a
batch here is one indexing operation on a tensor that already lives on the training device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from dnnlab.errors import ConfigError, refusal


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

    Stateful: Lightning stores ``state_dict()`` (epoch and items handed out) in every checkpoint
    and calls ``load_state_dict`` before iterating again, so a run resumed mid-epoch goes on with
    the next block of the same order. The count is taken as an item is handed out, which is when
    it is trained on: Lightning does not prefetch from a loader with a length.
    """

    batch_sampler = None  # read by Lightning's loader checks; batching is done here

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        sampler: EpochOrder,
        steps_per_block: int | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
        key: str = "",
    ) -> None:
        self.key = key  # where the config holds the batch settings, named in a refusal
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.batch_size, self.sampler = (
            images,
            labels,
            batch_size,
            sampler,
        )
        self.steps_per_block = steps_per_block
        self.transform = transform  # applied to each batch of images as it is cut (uint8 -> float)
        self.handed_out = 0  # items yielded in the current pass
        self._resume_at: tuple[int, int] | None = None  # (epoch, items to skip) from a checkpoint

    @property
    def num_batches(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __len__(self) -> int:
        if self.steps_per_block is None:
            return self.num_batches
        return -(-self.num_batches // self.steps_per_block)

    def batches(self, skip: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's mini-batches one by one, ignoring blocks, after the first ``skip``."""
        x, y, size = self.images, self.labels, self.batch_size
        convert = self.transform or (lambda images: images)
        order = self.sampler.indices(x.device)
        if order is None:
            for start in range(skip * size, len(x), size):
                yield convert(x[start : start + size]), y[start : start + size]
        else:
            for index in order[skip * size :].split(size):
                yield convert(x[index]), y[index]

    def items(self, skip: int = 0) -> Iterator[Any]:
        """Batches, or blocks of ``steps_per_block`` batches, after the first ``skip`` items."""
        if self.steps_per_block is None:
            yield from self.batches(skip)
            return
        block: list[tuple[Tensor, Tensor]] = []
        for batch in self.batches(skip * self.steps_per_block):
            block.append(batch)
            if len(block) == self.steps_per_block:
                yield block
                block = []
        if block:
            yield block

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume_at = self._resume_at, None
        skip = resume[1] if resume is not None and resume[0] == self.sampler.epoch else 0
        self.handed_out = skip
        for item in self.items(skip):
            self.handed_out += 1
            yield item

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.sampler.epoch,
            "handed_out": self.handed_out,
            "batch_size": self.batch_size,
            "steps_per_block": self.steps_per_block or 0,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        # train.py refuses another layout before fit (dnnlab.train.resume); this guards library use.
        layout = {"batch_size": self.batch_size, "steps_per_block": self.steps_per_block or 0}
        prefix = f"{self.key}." if self.key else ""
        changed = {
            f"{prefix}{name}": (state[name], value)
            for name, value in layout.items()
            if state.get(name, value) != value
        }
        if changed:
            raise ConfigError(f"ckpt_path: {refusal(changed)}")  # the setting that resumes
        self.sampler.set_epoch(state["epoch"])
        self._resume_at = (state["epoch"], state["handed_out"])
