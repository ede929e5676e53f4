"""Speed report: one epoch through ``train.py``'s code path against a hand-written PyTorch loop.

Both run in this process on the same in-memory tensors, alternating, so machine noise hits both;
the ratio of their best epoch times is the figure reported in README.

    python scripts/benchmark.py [--repeats 3] [--threads N]

A third path times the same epoch with the default gradient diagnostics switched off.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F

from dnnlab.config import compose_config
from dnnlab.data import IdxDataModule
from dnnlab.models import build_mlp
from dnnlab.training import build_datamodule, run

WORKLOAD = ["trainer.max_epochs=1", "test=false", "trainer.num_sanity_val_steps=0"]
NO_DIAGNOSTICS = "callbacks.gradient_diagnostics=null"  # the default diagnostics' overhead


class EpochTimer(L.Callback):
    """Wall time from the first training batch's epoch start to the end of validation."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def hand_loop_epoch(datamodule: IdxDataModule, cfg) -> float:
    """The floor: the same model, optimizer, batch order and validation pass, written by hand."""
    torch.manual_seed(cfg.seed)
    model = build_mlp(784, 10, **cfg.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr)
    train = datamodule.train_dataloader()
    (val_x, val_y) = datamodule.tensors["val"]
    start = time.perf_counter()
    model.train()
    for x, y in train.batches():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(x).argmax(1) == y).sum()
            for x, y in zip(val_x.split(1000), val_y.split(1000), strict=True)
        )
    float(correct)
    return time.perf_counter() - start


def lightning_epoch(overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config([*WORKLOAD, *overrides], output_dir=out)
        timer = EpochTimer()
        run(cfg, extra_callbacks=[timer])
    return timer.seconds[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose_config(WORKLOAD, output_dir=tempfile.gettempdir())
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    hand, lit, bare = [], [], []
    for _ in range(args.repeats):
        hand.append(hand_loop_epoch(datamodule, cfg))
        lit.append(lightning_epoch([]))
        bare.append(lightning_epoch([NO_DIAGNOSTICS]))
    steps = datamodule.train_dataloader().num_batches
    print(f"workload: LeakyReLU MLP 784-300-100-10, batch 32, SGD 1e-3, {steps} steps + validation")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print("| path | best epoch (s) | median (s) | samples/s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    paths = (
        ("hand-written loop", hand),
        ("dnnlab train.py path", lit),
        ("dnnlab train.py path, diagnostics off", bare),
    )
    for label, times in paths:
        best = min(times)
        print(
            f"| {label} | {best:.2f} | {statistics.median(times):.2f} "
            f"| {55000 / best:,.0f} | {best / min(hand):.2f}x |"
        )
    print(
        f"default gradient diagnostics: {min(lit) / min(bare):.3f}x the epoch without them "
        f"(best), {statistics.median(lit) / statistics.median(bare):.3f}x (median)"
    )


if __name__ == "__main__":
    main()
