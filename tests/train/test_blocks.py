"""Blocks of optimizer steps stay out of sight: limits, intervals, the logged x-axis and the
progress bar all count optimizer steps."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch

from conftest import tiny_task
from dnnlab.app.compose import compose_config
from dnnlab.data.batches import EpochOrder, TensorBatches
from dnnlab.errors import ConfigError
from dnnlab.train.blocks import (
    BlockPlan,
    StepTQDMProgressBar,
    progress_bar,
    trainer_flags,
)
from dnnlab.train.run import run


def sizes(plan: BlockPlan, epoch_steps: int) -> list[int]:
    return [len(block) for block in plan.cut(iter(range(epoch_steps)), epoch_steps)]


def test_blocks_restart_at_every_validation_point() -> None:
    plan = BlockPlan(5, interval=6)
    assert sizes(plan, 13) == [5, 1, 5, 1, 1]
    assert plan.blocks(13) == 5 and plan.interval_blocks(13) == 2
    assert [plan.steps_through(k, 13) for k in range(6)] == [0, 5, 6, 11, 12, 13]
    assert sizes(BlockPlan(32), 1719)[-1] == 1719 - 53 * 32  # the last block shorter
    fraction = BlockPlan(32, interval=0.25)  # 429 steps an interval, in 14 blocks
    assert fraction.interval_steps(1719) == 429 and fraction.interval_blocks(1719) == 14
    assert sum(sizes(fraction, 1719)) == 1719 and fraction.steps_through(14, 1719) == 429


def test_a_resumed_epoch_goes_on_with_the_same_blocks() -> None:
    plan = BlockPlan(5, interval=6)
    whole = list(plan.cut(iter(range(13)), 13))
    rest = list(plan.cut(iter(range(plan.steps_through(3, 13), 13)), 13, skip=3))
    assert rest == whole[3:]


@pytest.mark.parametrize(
    ("limit", "steps"), [(None, 16), (13, 13), (100, 16), (0.5, 8), (1.0, 16), (0, 0)]
)
def test_limit_counts_optimizer_steps(limit: Any, steps: int) -> None:
    assert BlockPlan(5, limit=limit).epoch_steps(16) == steps


def test_lightning_flags_count_blocks() -> None:
    flags, settings = trainer_flags({"limit_train_batches": 13, "val_check_interval": 6}, 5)
    assert flags == {"limit_train_batches": None, "val_check_interval": 2}
    assert settings.plan == BlockPlan(5, 13, 6)
    flags, settings = trainer_flags({"limit_train_batches": 0.0, "val_check_interval": 0.5}, 5)
    assert flags == {"limit_train_batches": 0} and settings.plan.interval == 0.5
    assert trainer_flags({"val_check_interval": "00:00:01:00"}, 5)[1].plan.interval is None


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        (
            {"limit_train_batches": -3},
            r"^trainer.limit_train_batches=-3 is not valid; give a number of optimizer steps "
            r"\(an integer >= 0\) or a fraction of the epoch \(0.0-1.0\)$",
        ),
        (
            {"val_check_interval": 1.5},
            r"^trainer.val_check_interval=1.5 is not valid; give a number of optimizer steps "
            r"\(an integer >= 1\)",
        ),
        (
            {"val_check_interval": 6, "check_val_every_n_epoch": None},
            r"^trainer.val_check_interval=6 with trainer.check_val_every_n_epoch=null counts "
            r"Lightning batches across epochs, .* set trainer.check_val_every_n_epoch, or "
            r"data.steps_per_block=1$",
        ),
    ],
)
def test_settings_that_cannot_count_steps_are_one_line(trainer: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        trainer_flags(trainer, 5)


def test_a_limit_that_leaves_no_step_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"limit_train_batches=0.01 leaves none of the 16"):
        BlockPlan(5, limit=0.01).epoch_steps(16)


def test_the_bar_is_the_users_or_none() -> None:
    assert progress_bar([], enabled=False) == []
    own = StepTQDMProgressBar()
    assert progress_bar([own], enabled=True) == []
    (bar,) = progress_bar([], enabled=True)
    assert bar.__class__.__name__ == "StepRichProgressBar"


class BarReader(L.Callback):
    """The training bar's position and total at each epoch's end."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        bar = trainer.progress_bar_callback.train_progress_bar
        position = bar.completed if hasattr(bar, "completed") else bar.n  # Rich or TQDM
        self.seen.append((int(position), int(bar.total)))


def tiny_run(
    tmp_path: Path, *overrides: str, diagnostics: bool = False, extra: Sequence[L.Callback] = ()
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """A run of 16 steps an epoch (batches of 4), blocks of 5, written by the CSV logger: the
    steps at which each metric was logged, and what the training bar showed."""
    dropped = ("data.steps_per_block", "callbacks.gradient_diagnostics" if diagnostics else "-")
    task = [o for o in tiny_task(tmp_path / "data") if not o.startswith(dropped)]
    cfg = compose_config(
        [
            *task,
            "data.batch_size=4",
            "data.steps_per_block=5",
            "logger=csv",
            "test=true",
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=4",
            "trainer.num_sanity_val_steps=0",
            "trainer.enable_model_summary=false",
            *overrides,
        ],
        output_dir=tmp_path / "run",
    )
    reader = BarReader()
    run(cfg, extra_callbacks=[reader, *extra])
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    steps: dict[str, list[int]] = {}
    for row in rows:
        for key, value in row.items():
            if value and key != "step":
                steps.setdefault(key, []).append(int(row["step"]))
    return steps, {"bar": reader.seen}


def test_limits_intervals_and_every_metric_count_optimizer_steps(tmp_path: Path) -> None:
    steps, seen = tiny_run(
        tmp_path,
        "trainer.limit_train_batches=13",
        "+trainer.val_check_interval=6",
        "trainer.enable_progress_bar=true",
    )
    assert steps["train/loss"] == [4, 8, 12, 16, 20, 24]  # every log_every_n_steps
    assert steps["train/lr"] == steps["train/loss"]
    assert steps["val/acc"] == [6, 12, 19, 25]  # 6 and 12 steps into each 13-step epoch
    assert steps["train/loss_epoch"] == steps["train/acc"] == [13, 26]
    assert steps["test/acc"] == [26]
    assert seen["bar"] == [(13, 13), (13, 13)]  # the bar: optimizer steps, not 5 blocks


def test_max_steps_ends_inside_a_block(tmp_path: Path) -> None:
    steps, seen = tiny_run(
        tmp_path,
        "+trainer.max_steps=7",
        "trainer.enable_progress_bar=true",
        "test=false",
        "callbacks.model_checkpoint=null",  # no validation comes to score
    )
    assert steps["train/loss"] == [4]
    assert max(s for values in steps.values() for s in values) == 7
    assert seen["bar"] == [(7, 16)]  # 7 steps, not the 10 of the two blocks begun


def test_diagnostics_scalars_sit_at_optimizer_steps(tmp_path: Path) -> None:
    steps, _ = tiny_run(tmp_path, "test=false", diagnostics=True)
    assert steps["z_grad_norm/layer_1"] == [1, 4, 8, 12, 16, 20, 24, 28, 32]
    assert steps["z_weight_change/layer_1"] == [16, 32]


def test_a_progress_bar_of_ones_own_is_kept(tmp_path: Path) -> None:
    """Lightning's own bar, given as a callback, counts Lightning batches (blocks), as it says."""
    _, seen = tiny_run(
        tmp_path,
        "+callbacks.bar._target_=lightning.pytorch.callbacks.TQDMProgressBar",
        "trainer.enable_progress_bar=true",
        "test=false",
    )
    assert seen["bar"] == [(4, 4), (4, 4)]  # 16 steps in blocks of 5


def test_a_fraction_of_the_epoch_is_a_fraction_of_its_steps(tmp_path: Path) -> None:
    """0.7 of 16 steps: validation 11 steps into each epoch (Lightning's 0.7 of the 4 blocks
    would have been after the 2nd block, 10 steps in)."""
    steps, _ = tiny_run(tmp_path, "+trainer.val_check_interval=0.7", "test=false")
    assert steps["val/acc"] == [11, 27]


def test_an_interval_longer_than_the_epoch_is_one_line() -> None:
    trainer = SimpleNamespace(check_val_every_n_epoch=1, limit_val_batches=1.0, fast_dev_run=0)
    with pytest.raises(
        ConfigError,
        match=r"^trainer.val_check_interval=20 is more than the 16 optimizer steps of an epoch; ",
    ):
        BlockPlan(5, interval=20).check_interval(trainer, 16)
    BlockPlan(5, interval=20).check_interval(
        SimpleNamespace(**{**vars(trainer), "limit_val_batches": 0}), 16
    )


def test_the_loader_resumes_mid_epoch_with_the_blocks_of_its_plan() -> None:
    def loader(interval: int | None) -> TensorBatches:
        order = EpochOrder(40, shuffle=True, seed=3)
        plan = BlockPlan(3, limit=13, interval=interval)
        return TensorBatches(torch.arange(40.0), torch.arange(40), 2, order, plan=plan)

    first = loader(5)
    whole = [torch.cat([y for _, y in block]).tolist() for block in first]
    assert [len(b) for b in whole] == [6, 4, 6, 4, 6]  # steps: 3, 2, 3, 2, 3 (13 of 20)
    blocks = iter(first)
    next(blocks), next(blocks), next(blocks)  # killed after the third block
    fresh = loader(5)
    fresh.load_state_dict(first.state_dict())
    assert [torch.cat([y for _, y in block]).tolist() for block in fresh] == whole[3:]
    with pytest.raises(ConfigError, match=r"trainer.val_check_interval: 5 -> 4"):
        loader(4).load_state_dict(first.state_dict())


class BatchReader(L.Callback):
    """The labels of every mini-batch the training loop is handed, by epoch."""

    def __init__(self) -> None:
        self.labels: dict[int, list[list[int]]] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: Any, batch: Any, idx: int
    ) -> None:
        epoch = self.labels.setdefault(trainer.current_epoch, [])
        epoch += [y.tolist() for _, y in batch]


def test_overfit_batches_trains_the_same_optimizer_steps_every_epoch(tmp_path: Path) -> None:
    """debug=overfit: the same first N mini-batches (N optimizer steps) in every epoch, not N
    shuffled blocks (Lightning cannot stop this loader's shuffling; it would count blocks)."""
    reader = BatchReader()
    steps, _ = tiny_run(tmp_path, "+trainer.overfit_batches=7", "test=false", extra=[reader])
    first, *others = reader.labels.values()
    assert len(first) == 7 and all(epoch == first for epoch in others)
    assert steps["train/loss_epoch"] == [7, 14]
