"""The LightningDataModule of the four-file IDX datasets (Fashion-MNIST, MNIST)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from dnnlab.data.batches import EpochOrder, TensorBatches
from dnnlab.data.idx import parse_idx, read_idx_bytes
from dnnlab.data.sources import SPLIT_FILES, get_spec, locate, verified_bytes
from dnnlab.errors import ConfigError, DataError
from dnnlab.ranges import or_null, positive_int
from dnnlab.settings import check_fields, default_key, setting
from dnnlab.train.blocks import BlockPlan, check_block_for_processes, first_tensor, plan_of

VAL_SPLITS = ("last", "first", "random")
IMAGE_SHAPE = (28, 28)  # (Fashion-)MNIST's, and the input_shape every model is built for
BATCH_SIZE = positive_int("a batch size")


@dataclass(frozen=True)
class DataSettings:
    """How the ``data`` group splits and batches a dataset (checked here and by
    dnnlab.app.checks before any data is read)."""

    val_size: int = setting(
        rule=positive_int("a number of validation images"),
        doc="validation images taken from the training file",
    )
    val_split: str = setting(choices=VAL_SPLITS, doc="which part of the training file")
    batch_size: int = setting(rule=BATCH_SIZE, doc="training mini-batch size")
    eval_batch_size: int = setting(rule=BATCH_SIZE, doc="validation and test batch size")
    steps_per_block: int = setting(
        rule=positive_int("a number of optimizer steps per block"),
        doc="optimizer steps per Lightning batch",
    )
    train_size: int | None = setting(
        rule=or_null(positive_int("a number of training images"), "all of them"),
        doc="keep only the first N training images",
    )
    key: InitVar[str] = "data"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)


@functools.lru_cache(maxsize=8)
def load_arrays(name: str, directory: str, verify: bool = True) -> dict[str, np.ndarray]:
    """The four arrays of a dataset folder, checked and cached: tests and sweeps read them once."""
    spec = get_spec(name)
    arrays = {}
    for key, filename in SPLIT_FILES.items():
        path = Path(directory) / filename
        content = verified_bytes(spec, path) if verify else read_idx_bytes(path)
        arrays[key] = parse_idx(content, str(path))
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        where = {
            kind: Path(directory) / SPLIT_FILES[f"{split}_{kind}"] for kind in ("images", "labels")
        }
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            shape = "x".join(map(str, images.shape[1:])) or "no"
            raise DataError(
                f"{where['images']}: holds images of shape {shape} ({images.shape} in all); "
                f"{spec.title} images are {'x'.join(map(str, IMAGE_SHAPE))}"
            )
        if labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{where['labels']}: holds labels of shape {labels.shape} for "
                f"{len(images)} images in {where['images'].name}; the two files must agree"
            )
        check_labels(where["labels"], labels, spec.title, len(spec.classes))
    return arrays


def check_labels(path: Path, labels: np.ndarray, title: str, num_classes: int) -> None:
    """Labels must be class ids: a bad one would surface deep in the loss as a traceback."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: holds {labels.dtype} labels; {title} labels are integers")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DataError(
            f"{path}: holds label {int(bad[0])}, outside {title}'s {num_classes} classes "
            f"0-{num_classes - 1} ({len(bad)} such labels in all)"
        )


def select_classes(
    images: Tensor, labels: Tensor, class_ids: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Keep the listed classes, relabelled 0..k-1 in the listed order (for transfer tasks)."""
    table = torch.full((int(labels.max()) + 1,), -1, dtype=labels.dtype)
    table[torch.tensor(class_ids)] = torch.arange(len(class_ids), dtype=labels.dtype)
    new = table[labels]
    keep = new >= 0
    return images[keep], new[keep]


class Pixels:
    """uint8 pixels -> the model's float32 inputs: ``x / 255``, standardized when statistics are
    given. Elementwise, so a batch gets the very values the whole converted split would hold."""

    def __init__(self, mean: Tensor | None = None, std: Tensor | None = None) -> None:
        self.mean, self.std = mean, std

    def __call__(self, images: Tensor) -> Tensor:
        scaled = images / 255.0  # uint8 / float: float32, equal to images.float().div_(255.0)
        if self.mean is None:
            return scaled
        return (scaled - self.mean) / self.std


class IdxDataModule(L.LightningDataModule):
    """Fashion-MNIST or MNIST split as in the book (55k train / 5k valid / 10k test), in memory.

    ``tensors`` holds each split's images as stored, uint8 (one copy, that of the cached arrays
    on the CPU), and its labels, moved once to the training device; each batch is cut from them
    and scaled to [0, 1] floats as it is cut (optionally standardized per pixel with training
    statistics): :class:`Pixels`, the same float32 values a float copy of the dataset would hold,
    at a quarter of its memory. :meth:`inputs` gives a whole split as floats.
    """

    def __init__(
        self,
        name: str = "fashion_mnist",
        root: str = "data/fashion_mnist",
        search_dirs: Sequence[str] = (),
        download: bool = True,
        mirrors: Sequence[str] | None = None,
        verify: bool = True,
        val_size: int = 5000,
        val_split: str = "last",
        standardize: bool = False,
        batch_size: int = 32,
        eval_batch_size: int = 1000,
        steps_per_block: int = 32,
        on_device: bool = True,
        seed: int = 42,
        classes: Sequence[int] | None = None,
        train_size: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__()
        self.key = key or default_key(DataSettings)  # where the config holds these settings
        self.spec = get_spec(name, f"{self.key}.name")
        DataSettings(
            val_size=val_size,
            val_split=val_split,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            steps_per_block=steps_per_block,
            train_size=train_size,
            key=self.key,
        )
        self.name, self.root = name, root
        self.search_dirs, self.download, self.mirrors = list(search_dirs), download, mirrors
        self.verify = verify
        self.val_size, self.val_split, self.standardize = val_size, val_split, standardize
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.steps_per_block = steps_per_block
        self.on_device, self.seed = on_device, seed
        self.class_ids = self._check_classes(classes)
        self.train_size = train_size
        self.tensors: dict[str, tuple[Tensor, Tensor]] = {}  # images as stored (uint8), labels
        self.pixels = Pixels()
        self._directory: Path | None = None

    def _check_classes(self, classes: Sequence[int] | None) -> list[int] | None:
        if classes is None:
            return None
        ids = [int(c) for c in classes]
        valid = range(len(self.spec.classes))
        if len(ids) < 2 or len(set(ids)) != len(ids) or any(c not in valid for c in ids):
            raise ConfigError(
                f"{self.key}.classes={ids} must list at least 2 distinct class ids of: "
                + ", ".join(f"{i} {name}" for i, name in enumerate(self.spec.classes))
            )
        return ids

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label order (after ``data.classes`` relabelling)."""
        if self.class_ids is None:
            return self.spec.classes
        return tuple(self.spec.classes[c] for c in self.class_ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int]:
        return IMAGE_SHAPE

    def prepare_data(self) -> None:
        self._directory = locate(
            self.name, self.root, self.search_dirs, self.download, self.mirrors
        )

    def _device(self) -> torch.device:
        trainer = self.trainer
        if self.on_device and trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        directory = self._directory or locate(
            self.name, self.root, self.search_dirs, download=False, mirrors=self.mirrors
        )
        arrays = load_arrays(self.name, str(directory), self.verify)
        # The cached uint8 arrays themselves (no copy): batches are converted as they are cut.
        images = torch.from_numpy(arrays["train_images"])
        labels = torch.from_numpy(arrays["train_labels"].astype(np.int64))
        if self.val_size >= len(images):
            raise ConfigError(
                f"{self.key}.val_size={self.val_size} leaves no training images "
                f"({len(images)} in all)"
            )
        train_index, val_index = self._split_indices(len(images))
        train_x, train_y = images[train_index], labels[train_index]
        val_x, val_y = images[val_index], labels[val_index]
        test_x = torch.from_numpy(arrays["test_images"])
        test_y = torch.from_numpy(arrays["test_labels"].astype(np.int64))
        splits = {"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, test_y)}
        if self.class_ids is not None:
            splits = {name: select_classes(x, y, self.class_ids) for name, (x, y) in splits.items()}
        if self.train_size is not None:
            x, y = splits["train"]
            splits["train"] = (x[: self.train_size], y[: self.train_size])
        device = self._device()
        self.pixels = Pixels()
        if self.standardize:  # statistics of the training images, as float32 (then freed)
            scaled = self.pixels(splits["train"][0])
            mean, std = scaled.mean(dim=0), scaled.std(dim=0).clamp_min(1e-7)
            del scaled
            self.pixels = Pixels(mean.to(device), std.to(device))
        self.tensors = {
            name: (x.contiguous().to(device), y.to(device)) for name, (x, y) in splits.items()
        }

    def inputs(self, split: str) -> Tensor:
        """A whole split's images as the model's float32 inputs (a new tensor: for evaluation)."""
        return self.pixels(self.tensors[split][0])

    def _split_indices(self, size: int) -> tuple[slice | Tensor, slice | Tensor]:
        """Training and validation parts of the training file (slices where contiguous)."""
        cut = size - self.val_size
        if self.val_split == "last":
            return slice(0, cut), slice(cut, size)
        if self.val_split == "first":
            return slice(self.val_size, size), slice(0, self.val_size)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(self.seed))
        return order[self.val_size :].sort().values, order[: self.val_size].sort().values

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        # Batches are sliced from tensors already on the training device: nothing to move.
        if first_tensor(batch).device == device:
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _loader(
        self, split: str, batch_size: int, shuffle: bool, plan: BlockPlan | None = None
    ) -> TensorBatches:
        x, y = self.tensors[split]
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        order = EpochOrder(len(x), shuffle=shuffle, seed=self.seed, rank=rank, world_size=world)
        return TensorBatches(
            x, y, batch_size, order, transform=self.pixels, key=self.key, plan=plan
        )

    def train_dataloader(self) -> TensorBatches:
        """Blocks of optimizer steps, limited and cut as the run's step settings say."""
        if self.trainer is not None:  # train.py checks it before the processes start
            check_block_for_processes(self.steps_per_block, self.trainer.world_size, self.key)
        plan = plan_of(self.trainer, self.steps_per_block)
        loader = self._loader("train", self.batch_size, shuffle=not plan.same_steps, plan=plan)
        if self.trainer is not None:
            plan.check_interval(self.trainer, loader.epoch_steps)
        return loader

    def val_dataloader(self) -> TensorBatches:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> TensorBatches:
        return self._loader("test", self.eval_batch_size, shuffle=False)
