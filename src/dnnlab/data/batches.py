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
from dnnlab.train.blocks import BlockPlan  # where blocks end: the training side decides


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

    With ``steps_per_block`` (or a ``plan``) set, each item is a list of consecutive batches: a
    training block that the module runs as that many optimizer steps, cut as the
    :class:`~dnnlab.train.blocks.BlockPlan` says (which also limits the epoch's steps).

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
        plan: BlockPlan | None = None,
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
        if plan is None and steps_per_block is not None:
            plan = BlockPlan(steps_per_block)
        self.plan = plan
        self.steps_per_block = plan.steps_per_block if plan else None
        self.transform = transform  # applied to each batch of images as it is cut (uint8 -> float)
        self.handed_out = 0  # items yielded in the current pass
        self.untrained = 0  # steps of the last block handed out that trainer.max_steps cut off
        self._resume_at: tuple[int, int] | None = None  # (epoch, items to skip) from a checkpoint

    @property
    def num_batches(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    @property
    def epoch_steps(self) -> int:
        """The batches of an epoch that are trained on: all, or the plan's limit."""
        return self.plan.epoch_steps(self.num_batches) if self.plan else self.num_batches

    def steps_through(self, items: int | float) -> int:
        """Mini-batches (optimizer steps) in the epoch's first ``items`` items."""
        if self.plan is None:
            return int(min(items, self.num_batches))
        return self.plan.steps_through(items, self.epoch_steps)

    def __len__(self) -> int:
        if self.plan is None:
            return self.num_batches
        return self.plan.blocks(self.epoch_steps)

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
        """Batches, or the plan's blocks of batches, after the first ``skip`` items."""
        if self.plan is None:
            yield from self.batches(skip)
            return
        batches = self.batches(self.steps_through(skip))
        yield from self.plan.cut(batches, self.epoch_steps, skip)

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume_at = self._resume_at, None
        skip = resume[1] if resume is not None and resume[0] == self.sampler.epoch else 0
        self.handed_out, self.untrained = skip, 0
        for item in self.items(skip):
            self.handed_out += 1
            yield item

    @property
    def steps_left(self) -> int:
        """The epoch's optimizer steps not trained yet: those of the items not handed out, and
        what ``trainer.max_steps`` cut off the last one."""
        return self.epoch_steps - self.steps_through(self.handed_out) + self.untrained

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.sampler.epoch,
            "handed_out": self.handed_out,
            "batch_size": self.batch_size,
            "steps_per_block": self.steps_per_block or 0,
            "steps_left": self.steps_left,  # of the epoch (dnnlab.train.resume reads it)
            **self._cuts(),
        }

    def _cuts(self) -> dict[str, Any]:
        """Where blocks end besides every ``steps_per_block``: at each validation point."""
        interval = self.plan.interval if self.plan and self.plan.steps_per_block > 1 else None
        return {"val_check_interval": interval} if interval is not None else {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # train.py refuses another layout before fit (dnnlab.train.resume); this guards library use.
        layout = {"batch_size": self.batch_size, "steps_per_block": self.steps_per_block or 0}
        prefix = f"{self.key}." if self.key else ""
        changed = {
            f"{prefix}{name}": (state[name], value)
            for name, value in layout.items()
            if state.get(name, value) != value
        }
        cuts = self._cuts().get("val_check_interval")
        if state.get("val_check_interval") != cuts:
            changed["trainer.val_check_interval"] = (state.get("val_check_interval"), cuts)
        if changed:
            raise ConfigError(f"ckpt_path: {refusal(changed)}")  # the setting that resumes
        self.sampler.set_epoch(state["epoch"])
        self._resume_at = (state["epoch"], state["handed_out"])
