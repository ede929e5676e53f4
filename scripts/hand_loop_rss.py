"""A fresh process's resident memory after one hand-loop epoch of the default workload.

Run by ``scripts/benchmark.py --memory`` beside the same epoch through dnnlab: torch and NumPy
only (no Lightning, no dnnlab), the images read from the dataset folder into float32 tensors of
its own, as a hand-written script would hold them. With ``--imports-only`` it stops after
importing torch. Prints one JSON line: ``{"rss": MiB, "peak": MiB}``.

    python scripts/hand_loop_rss.py DATASET_DIR [--imports-only]
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (magic: 0, 0, type, dims; then the dims as big-endian int32)."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def epoch(folder: Path) -> None:
    images = torch.from_numpy(read_idx(folder / "train-images-idx3-ubyte.gz").copy())
    labels = torch.from_numpy(read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64))
    x = images.flatten(1).float().div_(255.0)
    train_x, train_y, val_x, val_y = x[:55000], labels[:55000], x[55000:], labels[55000:]
    torch.manual_seed(42)
    model = nn.Sequential(
        nn.Linear(784, 300), nn.LeakyReLU(0.2), nn.Linear(300, 100), nn.LeakyReLU(0.2),
        nn.Linear(100, 10),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for index in torch.randperm(len(train_x)).split(32):
        loss = F.cross_entropy(model(train_x[index]), train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        float((model(val_x).argmax(1) == val_y).sum())


def main() -> None:
    if "--imports-only" not in sys.argv[2:]:
        epoch(Path(sys.argv[1]))
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    rss = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    print(json.dumps({"rss": rss, "peak": high_water_mib()}))


def high_water_mib() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh at exec (ru_maxrss keeps
    the forking parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
