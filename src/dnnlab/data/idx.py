"""Read the IDX format of (Fashion-)MNIST, plain or gzip-compressed, into NumPy arrays."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from dnnlab.errors import DataError

# IDX type codes (third byte of the magic number) and the big-endian dtypes they stand for.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(path: Path, compressed: bool = False) -> bytes:
    """The decompressed bytes of an IDX file (``.gz`` or plain), with a clear error if damaged;
    ``compressed``: the bytes as stored, for their checksum."""
    try:
        if path.suffix == ".gz" and not compressed:
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({err}); delete it and fetch it again") from None


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX: 2 zero bytes, a type code, the number of dims, then big-endian int32 dims."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{source}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{source}: truncated or corrupted IDX file ({len(data)} bytes, expected {expected} "
            f"for shape {shape}); delete it and fetch it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file into an array of its stored shape and type."""
    return parse_idx(read_idx_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of an array: lets tests and users make small datasets in the same format."""
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX type code")
    big = IDX_DTYPES[codes[native]]
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=big).tobytes()
