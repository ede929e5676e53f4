"""IDX parsing, checksums, local search and the offline error."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    FASHION_DIR,
    damage_file,
    grey_images,
    requires_fashion,
    write_idx_dataset,
)
from dnnlab.data.idx import encode_idx, parse_idx, read_idx
from dnnlab.data.sources import DATASETS, SPLIT_FILES, locate, verified_bytes
from dnnlab.errors import DataError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(dtype: type) -> None:
    array = (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
    parsed = parse_idx(encode_idx(array))
    assert parsed.shape == (2, 3, 4) and parsed.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(parsed, array)


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(encode_idx(np.zeros((5, 28, 28), np.uint8))[:-10]))
    with pytest.raises(DataError, match=r"x-idx3-ubyte.gz: truncated or corrupted IDX file"):
        read_idx(path)


def test_bad_magic_and_broken_gzip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x01\x02\x08\x01abcd")
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(encode_idx(np.zeros(100, np.uint8)))[:30])
    with pytest.raises(DataError, match=r"broken\.gz: cannot read"):
        read_idx(path)


def test_locate_prefers_root_then_search_dirs(tmp_path: Path) -> None:
    first, second = write_idx_dataset(tmp_path / "a"), write_idx_dataset(tmp_path / "b")
    assert locate("mnist", first, [second], download=False) == first
    assert locate("mnist", tmp_path / "missing", [second], download=False) == second


def test_offline_missing_data_is_one_clear_line(tmp_path: Path) -> None:
    root = tmp_path / "fashion"
    with pytest.raises(DataError) as info:
        # A closed port on this machine: the download fails at once, as it does offline.
        locate("fashion_mnist", root, [], download=True, mirrors=["http://127.0.0.1:9/"], timeout=2)
    message = str(info.value)
    assert "\n" not in message
    assert f"Put {', '.join(SPLIT_FILES.values())} in {root}" in message
    assert "apt-get install dataset-fashion-mnist" in message and "download failed" in message
    assert not any(root.glob("*.part")), "no partial download is left behind"
    with pytest.raises(DataError, match=r"download is off: data.download=false"):
        locate("fashion_mnist", root, [], download=False)


def test_a_download_that_fetches_nothing_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"or in a folder of data.search_dirs; download failed"):
        locate("mnist", tmp_path / "data" / "mnist", [], mirrors=["http://127.0.0.1:9/"])
    assert not (tmp_path / "data").exists(), "no empty data/mnist/ for the next run to trip on"


def test_flipped_bytes_in_a_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(encode_idx(grey_images())))
    damage_file(path, "flipped")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: cannot read \(Error -3"):
        read_idx(path)
    # The compressed bytes' MD5 is checked before anything is decompressed.
    with pytest.raises(DataError, match=r"MD5 does not match MNIST's train-images-idx3-ubyte.gz"):
        verified_bytes(DATASETS["mnist"], path)


def test_wrong_md5_is_rejected(tmp_path: Path) -> None:
    folder = write_idx_dataset(tmp_path / "fake")
    with pytest.raises(DataError, match=r"MD5 does not match MNIST's train-images-idx3-ubyte.gz"):
        verified_bytes(DATASETS["mnist"], folder / "train-images-idx3-ubyte.gz")


@requires_fashion
def test_debian_recompressed_files_pass_by_content_md5(tmp_path: Path) -> None:
    # Debian recompresses the canonical files: the .gz MD5 differs, the content MD5 matches.
    labels = FASHION_DIR / "train-labels-idx1-ubyte.gz"
    data = verified_bytes(DATASETS["fashion_mnist"], labels)
    assert len(data) == 60008
    copy = tmp_path / labels.name
    shutil.copy(labels, copy)
    raw = bytearray(gzip.decompress(copy.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: still valid IDX, wrong content
    copy.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="MD5 does not match"):
        verified_bytes(DATASETS["fashion_mnist"], copy)
