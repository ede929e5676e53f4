"""Where the (Fashion-)MNIST files come from: checksums, local search, verified download."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dnnlab.data.idx import read_idx_bytes
from dnnlab.errors import DataError, lookup
from dnnlab.files import atomic_write

SPLIT_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the four-file IDX layout.

    A file is accepted when either its compressed MD5 matches the canonical mirror's, or the MD5 of
    its decompressed content does (Debian's package recompresses the same bytes).
    """

    title: str
    classes: tuple[str, ...]
    gz_md5: dict[str, str]
    raw_md5: dict[str, str]
    mirrors: tuple[str, ...]
    apt_hint: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        title="Fashion-MNIST",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        gz_md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        raw_md5={
            "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        apt_hint=" or run: apt-get install dataset-fashion-mnist",
    ),
    "mnist": DatasetSpec(
        title="MNIST",
        classes=tuple(str(d) for d in range(10)),
        gz_md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        raw_md5={
            "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
}


def get_spec(name: str, key: str = "data.name") -> DatasetSpec:
    """The dataset ``name`` names; ``key``: the setting that names it."""
    return lookup(DATASETS, key, name)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def verified_bytes(spec: DatasetSpec, path: Path) -> bytes:
    """The decompressed content of ``path`` once its checksum matches; a one-line error if not.

    The compressed bytes are checked first: damage there would otherwise surface as a
    decompression error before any checksum is compared.
    """
    if _md5(read_idx_bytes(path, compressed=True)) == spec.gz_md5[path.name]:
        return read_idx_bytes(path)
    try:
        content = read_idx_bytes(path)  # recompressed (Debian): the content's MD5 decides
    except DataError:
        content = None
    if content is None or _md5(content) != spec.raw_md5[path.name]:
        raise DataError(
            f"{path}: MD5 does not match {spec.title}'s {path.name} "
            f"(expected {spec.gz_md5[path.name]}); delete it and fetch it again"
        )
    return content


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in SPLIT_FILES.values())


def _store(root: Path, name: str, payload: bytes) -> None:
    """Write a verified file into ``root``, made only now: a download that fetches nothing
    leaves no folder behind. The file takes its final name only once it is whole."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write(root / name, lambda f: f.write(payload))  # the user's umask, as any output
    except OSError as err:
        raise DataError(f"cannot write {root / name} ({err})") from None


def _download(spec: DatasetSpec, root: Path, mirrors: Sequence[str], timeout: float) -> None:
    """Fetch missing files into ``root``; a file takes its final name only once its MD5 matches."""
    for name in SPLIT_FILES.values():
        if (root / name).is_file():
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read()
            except (urllib.error.URLError, OSError, ValueError) as err:
                errors.append(f"{url}: {getattr(err, 'reason', err)}")
                continue
            if _md5(payload) != spec.gz_md5[name]:
                errors.append(f"{url}: MD5 mismatch")
                continue
            _store(root, name, payload)
            break
        else:
            raise DataError("; ".join(errors))


def locate(
    name: str,
    root: str | os.PathLike,
    search_dirs: Sequence[str | os.PathLike] = (),
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """The first folder holding all four files: ``root``, then ``search_dirs``, else a download."""
    spec = get_spec(name)
    root = Path(root).expanduser()
    files = ", ".join(SPLIT_FILES.values())
    if root.exists() and not root.is_dir():  # a mistake even where a search folder has the data
        raise DataError(
            f"data.root={str(root)!r} is a file, not a folder; give the folder of {files}"
        )
    candidates = [root, *(Path(d).expanduser() for d in search_dirs)]
    for directory in candidates:
        if _complete(directory):
            return directory
    looked = ", ".join(str(d.absolute()) for d in candidates)
    where = (
        f"{spec.title} not found (looked in {looked}). Put {files} in {root.absolute()} "
        f"(data.root) or in a folder of data.search_dirs{spec.apt_hint}"
    )
    if not download:
        raise DataError(f"{where} (download is off: data.download=false)")
    try:
        _download(spec, root, mirrors or spec.mirrors, timeout)
    except DataError as err:
        raise DataError(f"{where}; download failed: {err}") from None
    return root
