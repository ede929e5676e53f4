"""The in-memory data module: the book's split, scaling, shuffled batches and blocks."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MNIST_DIR, requires_fashion, requires_mnist, write_idx_dataset
from dnnlab.app.checks import check_ranges
from dnnlab.app.compose import compose_config
from dnnlab.data import IdxDataModule
from dnnlab.data.batches import EpochOrder, TensorBatches
from dnnlab.data.datamodule import load_arrays
from dnnlab.data.idx import encode_idx
from dnnlab.data.sources import SPLIT_FILES
from dnnlab.errors import ConfigError, DataError


def tiny(tmp_path: Path, **kwargs) -> IdxDataModule:
    folder = write_idx_dataset(tmp_path / "tiny", n_train=60, n_test=20)
    dm = IdxDataModule(name="mnist", root=str(folder), download=False, verify=False, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_loader_on_tiny_idx_files(tmp_path: Path) -> None:
    dm = tiny(tmp_path, val_size=10, batch_size=8, eval_batch_size=7, steps_per_block=3)
    assert [len(dm.tensors[s][0]) for s in ("train", "val", "test")] == [50, 10, 20]
    x, y = dm.inputs("train"), dm.tensors["train"][1]
    assert x.dtype == torch.float32 and x.min() >= 0.0 and x.max() <= 1.0 and y.dtype == torch.int64
    blocks = list(dm.train_dataloader())
    assert len(blocks) == len(dm.train_dataloader()) == 3  # 7 batches of <= 8 in blocks of 3
    assert [len(b) for b in blocks] == [3, 3, 1]
    seen = torch.cat([by for block in blocks for _, by in block])
    assert len(seen) == 50 and sorted(seen.tolist()) == sorted(y.tolist())
    val = list(dm.val_dataloader())
    assert [len(vx) for vx, _ in val] == [7, 3]


SIZE_CASES = [
    ("batch_size", 0, "data.batch_size=0 is out of range; expected a batch size, an integer >= 1"),
    ("eval_batch_size", 2.5, "data.eval_batch_size=2.5 is out of range; expected a batch size"),
    ("steps_per_block", 0, "data.steps_per_block=0 is out of range; expected a number of"),
    ("val_size", -1, "data.val_size=-1 is out of range; expected a number of validation images"),
    (
        "train_size",
        0,
        "data.train_size=0 is out of range; "
        "expected a number of training images, an integer >= 1, or null (all of them)",
    ),
]


@pytest.mark.parametrize(("key", "value", "message"), SIZE_CASES)
def test_bad_sizes_are_one_line_before_any_file_is_read(
    key: str, value: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        IdxDataModule(root="nowhere", download=False, **{key: value})
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_ranges(compose_config([f"data.{key}={value}"], output_dir="unused"))


def test_validation_is_the_last_part_by_default(tmp_path: Path) -> None:
    last, first = tiny(tmp_path, val_size=10), tiny(tmp_path, val_size=10, val_split="first")
    assert torch.equal(last.tensors["val"][0], first.tensors["train"][0][-10:])
    assert torch.equal(first.tensors["val"][0], last.tensors["train"][0][:10])


def test_shuffle_depends_on_seed_and_epoch_only() -> None:
    order = EpochOrder(100, shuffle=True, seed=3)
    epoch0 = order.indices(torch.device("cpu"))
    order.set_epoch(1)
    epoch1 = order.indices(torch.device("cpu"))
    again = EpochOrder(100, shuffle=True, seed=3)
    again.set_epoch(1)
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch1, again.indices(torch.device("cpu")))


def test_ranks_share_a_permutation_and_split_it() -> None:
    parts = [
        EpochOrder(10, True, seed=1, rank=r, world_size=2).indices(torch.device("cpu"))
        for r in (0, 1)
    ]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    loader = TensorBatches(
        torch.arange(10.0), torch.arange(10), 4, EpochOrder(10, False, rank=1, world_size=2)
    )
    assert [b[1].tolist() for b in loader] == [[1, 3, 5, 7], [9]]


@requires_fashion
def test_fashion_mnist_split_as_in_the_book(tmp_path: Path) -> None:
    dm = IdxDataModule(
        root=str(tmp_path / "none"),
        search_dirs=["/usr/share/datasets/fashion-mnist"],
        download=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    sizes = {split: len(t[1]) for split, t in dm.tensors.items()}
    assert sizes == {"train": 55000, "val": 5000, "test": 10000}
    assert dm.classes[0] == "T-shirt/top" and dm.num_classes == 10
    assert torch.bincount(dm.tensors["test"][1]).tolist() == [1000] * 10


@requires_fashion
def test_standardize_uses_training_statistics(tmp_path: Path) -> None:
    dm = IdxDataModule(
        root=str(tmp_path),
        search_dirs=["/usr/share/datasets/fashion-mnist"],
        download=False,
        standardize=True,
    )
    dm.prepare_data()
    dm.setup("fit")
    train = dm.inputs("train")
    assert train.mean().abs() < 1e-4
    assert abs(train.std(dim=0).mean() - 1) < 0.05


@requires_mnist
def test_mnist_from_shared_folder(tmp_path: Path) -> None:
    dm = IdxDataModule(
        name="mnist", root=str(tmp_path), search_dirs=[str(MNIST_DIR)], download=False
    )
    dm.prepare_data()
    dm.setup("fit")
    assert torch.bincount(dm.tensors["test"][1]).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_test_labels_outside_the_classes_name_their_file(tmp_path: Path) -> None:
    folder = write_idx_dataset(tmp_path / "tiny")
    labels = folder / SPLIT_FILES["test_labels"]
    labels.write_bytes(gzip.compress(encode_idx(np.full(20, 10, np.uint8))))
    dm = IdxDataModule(name="mnist", root=str(folder), download=False, verify=False)
    with pytest.raises(DataError, match=rf"^{labels}: holds label 10, outside MNIST's 10 classes"):
        dm.setup("fit")


def old_float_splits(dm: IdxDataModule, standardize: bool) -> dict[str, torch.Tensor]:
    """The float32 images every split held before batches were converted as they are cut."""
    arrays = load_arrays(dm.name, str(dm._directory), dm.verify)
    images = torch.from_numpy(arrays["train_images"]).float().div_(255.0)
    cut = len(images) - dm.val_size
    splits = {
        "train": images[:cut],
        "val": images[cut:],
        "test": torch.from_numpy(arrays["test_images"]).float().div_(255.0),
    }
    if standardize:
        mean, std = splits["train"].mean(dim=0), splits["train"].std(dim=0).clamp_min(1e-7)
        splits = {name: (t - mean) / std for name, t in splits.items()}
    return splits


@pytest.mark.parametrize("standardize", [False, True])
def test_batches_hold_the_float_values_of_a_converted_dataset_bit_for_bit(
    tmp_path: Path, standardize: bool
) -> None:
    dm = tiny(tmp_path, val_size=10, batch_size=8, steps_per_block=2, standardize=standardize)
    old = old_float_splits(dm, standardize)
    loader = dm.train_dataloader()
    order = loader.sampler.indices(torch.device("cpu"))
    batches = [x for block in loader for x, _ in block]
    assert all(x.dtype == torch.float32 for x in batches)
    assert torch.equal(torch.cat(batches).view(torch.int32), old["train"][order].view(torch.int32))
    val = torch.cat([x for x, _ in dm.val_dataloader()])
    assert torch.equal(val.view(torch.int32), old["val"].view(torch.int32))
    for split in ("train", "val", "test"):
        assert torch.equal(dm.inputs(split).view(torch.int32), old[split].view(torch.int32))


def test_the_images_are_held_once_as_the_cached_uint8_arrays(tmp_path: Path) -> None:
    dm = tiny(tmp_path, val_size=10)
    arrays = load_arrays(dm.name, str(dm._directory), dm.verify)
    train, val = dm.tensors["train"][0], dm.tensors["val"][0]
    assert train.dtype == val.dtype == torch.uint8
    start = arrays["train_images"].ctypes.data
    assert train.data_ptr() == start  # a view of the cached array, not a copy
    assert val.data_ptr() == start + train.numel()
    assert dm.tensors["test"][0].data_ptr() == arrays["test_images"].ctypes.data
