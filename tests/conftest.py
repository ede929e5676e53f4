"""Shared fixtures: small slices of real data, tiny IDX files, composed configs."""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's code, whatever is installed

from dnnlab.app.compose import compose_config  # noqa: E402
from dnnlab.data.idx import encode_idx  # noqa: E402
from dnnlab.data.sources import SPLIT_FILES  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

# A short real run: 5,000 training images in blocks, 1,000 for validation and test.
QUICK = [
    "data.steps_per_block=16",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=160",  # optimizer steps: 10 blocks of 16 steps of 32 images
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


@pytest.fixture(autouse=True)
def forget_hydra_config() -> Iterator[None]:
    """An in-process Hydra run leaves its config in the ``HydraConfig`` singleton; code that
    asks it (the LR finder's printed command) would see the previous test's command line."""
    yield
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None


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
# MNIST lies in ../shared/data/mnist only in this project's workspace and CI, not in a user's
# clone: skipped without it, except in CI, where a missing folder must fail.
requires_mnist = pytest.mark.skipif(
    not (MNIST_DIR / SPLIT_FILES["train_images"]).exists() and not os.environ.get("CI"),
    reason=f"MNIST not in {MNIST_DIR} (a user's clone has no ../shared)",
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


def write_checkpoint(
    path: Path, overrides: Sequence[str] = (), num_classes: int = 10, **saved_model: object
) -> Path:
    """A checkpoint of an untrained Classifier as train.py saves one (its state_dict and its
    primitive hyper_parameters), for the model these train.py overrides build; ``saved_model``
    changes the model settings saved beside the weights (a checkpoint that does not fit them)."""
    import lightning as L
    import torch

    from dnnlab.train.module import Classifier
    from dnnlab.train.run import plain

    cfg = compose_config(overrides)
    model = Classifier(plain(cfg.model), plain(cfg.optimizer), num_classes=num_classes)
    hparams = dict(model.hparams)
    hparams["model"] = {**hparams["model"], **saved_model}
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": hparams}
    torch.save({**checkpoint, "pytorch-lightning_version": L.__version__, "epoch": 0}, path)
    return path


def grey_images(n: int = 60) -> np.ndarray:
    """28x28 images of four grey levels: unlike random ones they compress, so a flipped byte of
    their gzip file breaks the deflate stream itself, not only the file's CRC."""
    return (np.random.default_rng(0).integers(0, 4, (n, 28, 28)) * 60).astype(np.uint8)


def damage_file(path: Path, how: str) -> Path:
    """``path`` as a user might hand it over by mistake: ``text``, ``truncated`` (cut in half)
    or ``flipped`` (16 bytes inverted in the middle)."""
    raw = bytearray(path.read_bytes())
    if how == "text":
        raw = bytearray(b"not a checkpoint\n")
    elif how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "flipped":
        middle = len(raw) // 2
        raw[middle : middle + 16] = bytes(b ^ 0xFF for b in raw[middle : middle + 16])
    else:
        raise ValueError(how)
    path.write_bytes(bytes(raw))
    return path


def tiny_data(tmp_path: Path) -> list[str]:
    """Overrides that read a tiny MNIST-layout folder (no real data needed)."""
    folder = write_idx_dataset(tmp_path / "data")
    return [
        "data=mnist",
        f"data.root={folder}",
        "data.search_dirs=[]",
        "data.verify=false",
        "data.val_size=10",
    ]


def load_script(name: str) -> ModuleType:
    """``train.py`` or ``eval.py`` as a module whose Hydra app runs as under ``python <name>``."""
    spec = importlib.util.spec_from_file_location(Path(name).stem + "_script", ROOT / name)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main.__wrapped__.__module__ = "__main__"  # Hydra then finds conf/ beside the file
    return script


def call_script(script: ModuleType, args: Sequence[str], monkeypatch, tmp_path: Path) -> int:
    """``python <script> args`` in this process, writing under ``tmp_path``: its exit code."""
    from dnnlab.app import cli

    monkeypatch.setenv("DNNLAB_ROOT", str(tmp_path))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [Path(script.__file__).name, *args])
    return cli.entry_point(script.main)


def tiny_task(folder: Path) -> list[str]:
    """A random MNIST-layout set of 64 training images: 4 optimizer steps of 16 an epoch."""
    write_idx_dataset(folder, n_train=84, n_test=10)
    return [
        "data=mnist",
        f"data.root={folder}",
        "data.search_dirs=[]",
        "data.verify=false",
        "data.val_size=20",
        "data.batch_size=16",
        "data.eval_batch_size=20",
        "data.steps_per_block=1",
        "trainer.limit_train_batches=null",
        "callbacks.gradient_diagnostics=null",
        "callbacks.step_checkpoint=null",
        "logger=none",
        "test=false",
        "model.hidden=[16,16]",
    ]


def member_folder(sweep: Path, number: int) -> Path:
    """Sweep member ``number``'s folder, named ``<number>`` or ``<number>_<setting>``."""
    from dnnlab.evaluate.report import member_number

    (folder,) = [p for p in sweep.iterdir() if p.is_dir() and member_number(p.name)[0] == number]
    return folder


OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamax", "nadam"]
OPTIMIZERS += ["adamw"]  # the chapter's optimizers, as conf/optimizer names them


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar under ``folder``: tag -> [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python train.py overrides`` in a subprocess, its outputs under ``tmp_path``."""
    return run_script(tmp_path, "train.py", *overrides)


def call_train(args: list[str], monkeypatch, tmp_path: Path) -> int:
    """``python train.py args`` in this process: the exit code it would have."""
    return call_script(load_script("train.py"), args, monkeypatch, tmp_path)
