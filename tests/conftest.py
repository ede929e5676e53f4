"""Shared fixtures: small slices of real data, tiny IDX files, composed configs."""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's code, whatever is installed

from dnnlab.config import compose_config  # noqa: E402
from dnnlab.data.idx import encode_idx  # noqa: E402
from dnnlab.data.sources import SPLIT_FILES  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

# A short real run: 5,000 training images in blocks, 1,000 for validation and test.
QUICK = [
    "data.steps_per_block=16",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=10",  # 10 blocks of 16 steps of 32 images
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.download=false",
    "optimizer.lr=0.05",
]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo the logging set-up of a Hydra app run in-process: its handlers write to streams
    that pytest closes after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., object]:
    """Compose ``train.yaml`` with the quick settings, writing into this test's folder."""

    def make(overrides: Sequence[str] = (), quick: bool = True, run: str = "run"):
        return compose_config([*(QUICK if quick else []), *overrides], output_dir=tmp_path / run)

    return make


def write_idx_dataset(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """Four gzip IDX files of random 28x28 images and labels, laid out like (Fashion-)MNIST."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, name in SPLIT_FILES.items():
        (folder / name).write_bytes(gzip.compress(encode_idx(arrays[key])))
    return folder


# Skipped on a machine without the data, never in CI (CI=true), whose setup installs it.
requires_fashion = pytest.mark.skipif(
    not (FASHION_DIR / SPLIT_FILES["train_images"]).exists() and not os.environ.get("CI"),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def run_script(tmp_path: Path, script: str, *overrides: str) -> subprocess.CompletedProcess:
    """Run ``train.py``/``eval.py`` as a user would, with data and logs under ``tmp_path``
    (and ``tests/`` importable: its test-only callbacks can be injected with ``+callbacks``)."""
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])
    env = {**os.environ, "DNNLAB_ROOT": str(tmp_path), "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
