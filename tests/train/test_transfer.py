"""Transfer learning: class subsets, reused lower layers, freezing and unfreezing."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from conftest import requires_fashion, tiny_task, write_checkpoint
from dnnlab.app.checks import check_ranges
from dnnlab.data import IdxDataModule
from dnnlab.errors import ConfigError
from dnnlab.model import build_mlp
from dnnlab.train.run import run
from dnnlab.train.transfer import FreezeReusedLayers, load_lower_layers

TASK_A = ["data.classes=[1,3,4,5,6,7,8,9]", "model.hidden=[100,100,100]", "test=false"]
TASK_B = ["data.classes=[0,2]", "data.train_size=200", "model.hidden=[100,100,100]"]


@requires_fashion
def test_class_subsets_relabel_in_listed_order(tmp_path: Path) -> None:
    dm = IdxDataModule(
        root=str(tmp_path),
        search_dirs=["/usr/share/datasets/fashion-mnist"],
        download=False,
        classes=[2, 0],
        train_size=200,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.classes == ("Pullover", "T-shirt/top") and dm.num_classes == 2
    assert len(dm.tensors["train"][1]) == 200 and len(dm.tensors["test"][1]) == 2000
    assert set(dm.tensors["val"][1].tolist()) == {0, 1}
    with pytest.raises(ConfigError, match=r"data.classes=\[3, 3\] must list at least 2 distinct"):
        IdxDataModule(classes=[3, 3])


class WeightsPerEpoch(L.Callback):
    def __init__(self) -> None:
        self.first_layer: list[torch.Tensor] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.first_layer.append(pl_module.net[1].weight.detach().clone())


@requires_fashion
def test_frozen_layers_keep_their_weights_then_train(make_config) -> None:
    source = make_config([*TASK_A, "trainer.max_epochs=1"], run="a")
    run(source)
    ckpt = Path(source.paths.output_dir) / "checkpoints" / "last.ckpt"
    reused = torch.load(ckpt, weights_only=True)["state_dict"]["net.1.weight"]
    target = make_config(
        [
            *TASK_B,
            "trainer.max_epochs=2",
            f"transfer.ckpt_path={ckpt}",
            "transfer.freeze_epochs=1",
            "data.steps_per_block=1",
            "trainer.limit_train_batches=null",
        ],
        run="b",
    )
    weights = WeightsPerEpoch()
    metrics = run(target, extra_callbacks=[weights])
    frozen, unfrozen = weights.first_layer
    assert torch.equal(frozen, reused), "bit-identical after the frozen epoch"
    assert not torch.equal(unfrozen, reused), "trained once unfrozen"
    assert metrics["test/acc"] > 0.5


def like_task_a(num_classes: int, hidden: list[int], **settings: str) -> torch.nn.Sequential:
    """A net with TASK_A's activation (the default LeakyReLU, slope 0.2), sized as asked."""
    slope = {"leaky_relu": {"negative_slope": 0.2}}
    net = {"activation": "leaky_relu", "activation_params": slope, **settings}
    return build_mlp(784, num_classes, hidden=hidden, **net)


def test_the_sources_output_layer_is_never_reused(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "a.ckpt", ["model.hidden=[50]"])
    target = like_task_a(2, [50, 10])
    with pytest.raises(ConfigError, match=r"transfer.layers=2 reuses more hidden layers than"):
        load_lower_layers(target, ckpt, 2)
    with pytest.raises(ConfigError, match=r"transfer.layers=null reuses all 2 hidden layers"):
        load_lower_layers(target, ckpt, None)
    assert load_lower_layers(target, ckpt, 1) == 2  # hidden layer 1's kernel and bias only
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(target[1].weight, state["net.1.weight"])
    assert not torch.equal(target[3].weight, state["net.3.weight"]), "the source's head stays"


def test_dropout_may_differ_and_batchnorm_statistics_come_along(tmp_path: Path) -> None:
    # The source's dropout layers shift its module indices; they hold nothing to reuse.
    source = ["model.hidden=[40,30]", "model.dropout=0.2", "model.batch_norm=after"]
    ckpt = write_checkpoint(tmp_path / "a.ckpt", source)
    checkpoint = torch.load(ckpt, weights_only=True)
    state = checkpoint["state_dict"]
    state["net.4.running_mean"].fill_(0.5)  # Dropout, Dense, act, then BN: net.4
    torch.save(checkpoint, ckpt)
    target = like_task_a(3, [40, 30, 20], batch_norm="after")  # no dropout: BN 1 is net.3
    assert load_lower_layers(target, ckpt, 2) == 2 * (2 + 5)  # Dense: 2; BN: 4 and its count
    assert torch.equal(target[3].running_mean, torch.full((40,), 0.5))
    assert torch.equal(target[4].weight, state["net.6.weight"])


@requires_fashion
def test_source_with_another_head_loads_and_mismatch_is_one_line(make_config) -> None:
    source = make_config(
        [*TASK_A, "trainer.max_epochs=1", "trainer.limit_train_batches=16"], run="a"
    )
    run(source)
    ckpt = Path(source.paths.output_dir) / "checkpoints" / "last.ckpt"
    two_classes = like_task_a(2, [100, 100, 100])
    assert load_lower_layers(two_classes, ckpt, None) == 6  # 3 kernels + 3 biases
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(two_classes[5].weight, state["net.5.weight"])
    assert two_classes[-1].weight.shape == (2, 100), "fresh head of the new size"
    wider = like_task_a(2, [300, 100, 100])
    with pytest.raises(ConfigError, match=r"transfer.ckpt_path=.*: hidden layer 1 does not match"):
        load_lower_layers(wider, ckpt, None)
    with pytest.raises(
        ConfigError,
        match=r"transfer.layers=4 is out of range; "
        r"expected a number of reused hidden layers, an integer in \[1, 3\], or null",
    ):
        load_lower_layers(two_classes, ckpt, 4)


# Bad transfer settings: the callback's own line, and the same line up front for every config,
# also without freezing (freeze_epochs=0 builds no callback, so only the config check sees them).
TRANSFER_CASES = [
    (
        {"unfreeze_lr": -0.1},
        "transfer.unfreeze_lr=-0.1 is out of range; "
        "expected a learning rate > 0, or null (the optimizer's)",
    ),
    (
        {"layers": 0},
        "transfer.layers=0 is out of range; "
        "expected a number of reused hidden layers, an integer >= 1, or null (all of them)",
    ),
    (
        {"freeze_epochs": -1},
        "transfer.freeze_epochs=-1 is out of range; "
        "expected a number of frozen epochs, an integer >= 0",
    ),
    (
        {"frozen_bn": "frozen"},
        "transfer.frozen_bn='frozen' is not valid; choose one of: batch_stats, inference, train",
    ),
]


@pytest.mark.parametrize(("settings", "message"), TRANSFER_CASES)
def test_bad_transfer_settings_are_one_line(settings: dict, message: str) -> None:
    arguments = {"layers": None, "freeze_epochs": 1, **settings}
    with pytest.raises(ConfigError, match=re.escape(message)):
        FreezeReusedLayers(**arguments)


@pytest.mark.parametrize(("settings", "message"), TRANSFER_CASES)
def test_bad_transfer_settings_stop_every_run_even_without_freezing(
    settings: dict, message: str, make_config
) -> None:
    overrides = [f"transfer.{key}={value}" for key, value in settings.items()]
    freeze = [] if "freeze_epochs" in settings else ["transfer.freeze_epochs=0"]
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_ranges(make_config([*freeze, *overrides]))
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(make_config([*freeze, *overrides]))  # before any data is read or step is taken


# ------------------------------------------------- through the unfreeze, on a tiny random set
def source_checkpoint(make_config, task: list[str], *overrides: str) -> Path:
    """One epoch of a source run on ``task``; its last checkpoint."""
    source = make_config([*task, "trainer.max_epochs=1", *overrides], run="source")
    run(source)
    return Path(source.paths.output_dir) / "checkpoints" / "last.ckpt"


class ReusedBatchNorm(L.Callback):
    """After each training step: the epoch, whether the BN layers normalized in training mode,
    and their running means."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, list[bool], list[torch.Tensor]]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_) -> None:
        layers = [m for m in pl_module.net if isinstance(m, nn.BatchNorm1d)]
        means = [m.running_mean.clone() for m in layers]
        self.seen.append((trainer.current_epoch, [m.training for m in layers], means))


def test_reused_batch_norm_trains_again_once_unfrozen(tmp_path: Path, make_config) -> None:
    """Keras: a frozen BN layer runs in inference mode; once trainable it uses batch statistics
    and updates its moving averages again, also after the validation between the epochs."""
    task = [*tiny_task(tmp_path / "data"), "model.batch_norm=before"]
    ckpt = source_checkpoint(make_config, task)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    source_means = [state["net.2.running_mean"], state["net.5.running_mean"]]
    target = [
        *task,
        "trainer.max_epochs=2",
        f"transfer.ckpt_path={ckpt}",
        "transfer.freeze_epochs=1",
    ]
    recorder = ReusedBatchNorm()
    run(make_config(target, run="target"), extra_callbacks=[recorder])
    frozen = [seen for seen in recorder.seen if seen[0] == 0]
    unfrozen = [seen for seen in recorder.seen if seen[0] == 1]
    assert len(frozen) == len(unfrozen) == 4
    for _, training, means in frozen:
        assert training == [False, False]
        assert all(torch.equal(m, s) for m, s in zip(means, source_means, strict=True))
    for _, training, _ in unfrozen:
        assert training == [True, True], "batch statistics once unfrozen"
    last = unfrozen[-1][2]
    assert not any(torch.equal(m, s) for m, s in zip(last, source_means, strict=True))


def test_max_norm_leaves_frozen_layers_unchanged(tmp_path: Path, make_config) -> None:
    """Frozen means unchanged: the constraint acts on what the optimizer updated (Keras)."""
    task = tiny_task(tmp_path / "data")
    ckpt = source_checkpoint(make_config, task)
    reused = torch.load(ckpt, weights_only=True)["state_dict"]["net.1.weight"]
    assert reused.norm(dim=1).max() > 1.0, "He init: rows above the radius"
    target = [
        *task,
        "trainer.max_epochs=2",
        f"transfer.ckpt_path={ckpt}",
        "transfer.freeze_epochs=1",
        "regularization=max_norm",
    ]
    weights = WeightsPerEpoch()
    run(make_config(target, run="target"), extra_callbacks=[weights])
    frozen, unfrozen = weights.first_layer
    assert torch.equal(frozen, reused), "bit-identical while frozen"
    assert unfrozen.norm(dim=1).max() <= 1.0 + 1e-5, "constrained once trainable"


class GroupRates(L.Callback):
    """The learning rate and momentum of every param group at each optimizer step."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []
        self.momenta: list[list[float]] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, opt):
        self.rates.append([group["lr"] for group in opt.param_groups])
        self.momenta.append([group["momentum"] for group in opt.param_groups])


# Settings that make each schedule move within the 3 unfrozen epochs (12 optimizer steps).
UNFREEZE_SCHEDULES = {
    "none": [],
    "power": ["scheduler.schedule.s=2"],
    "exponential": ["scheduler.schedule.s=1", "scheduler.schedule.decay_rate=0.5"],
    "piecewise": [
        "scheduler.interval=step",
        "scheduler.schedule.boundaries=[6,10]",
        "scheduler.schedule.values=[0.02,0.01,0.004]",
    ],
    "performance": ["scheduler.schedule.patience=1", "scheduler.schedule.threshold=0.5"],
    "onecycle": [],
}


@pytest.mark.parametrize(
    ("schedule", "unfreeze_lr"),
    [*((name, 0.003) for name in UNFREEZE_SCHEDULES), ("power", None), ("onecycle", None)],
)
def test_every_schedule_carries_the_unfrozen_layers(
    schedule: str, unfreeze_lr: float | None, tmp_path: Path, make_config
) -> None:
    """The unfrozen layers join the optimizer as a group of their own: at ``unfreeze_lr`` (null:
    the other group's LR) when they join, then scaled by the schedule as the other group is."""
    task = tiny_task(tmp_path / "data")
    ckpt = source_checkpoint(make_config, task)
    target = [
        *task,
        "optimizer=momentum",
        "optimizer.lr=0.01",
        "trainer.max_epochs=4",
        f"transfer.ckpt_path={ckpt}",
        "transfer.freeze_epochs=1",
        f"transfer.unfreeze_lr={'null' if unfreeze_lr is None else unfreeze_lr}",
        f"scheduler={schedule}",
        *UNFREEZE_SCHEDULES[schedule],
    ]
    recorder = GroupRates()
    cfg = make_config(target, run="target")
    run(cfg, extra_callbacks=[recorder])
    frozen = [rates for rates in recorder.rates if len(rates) == 1]
    unfrozen = [rates for rates in recorder.rates if len(rates) == 2]
    assert len(frozen) == 4 and len(unfrozen) == 12
    first, added = zip(*unfrozen, strict=True)
    assert added[0] == pytest.approx(unfreeze_lr or first[0], rel=1e-9)
    ratio = added[0] / first[0]
    assert list(added) == pytest.approx([lr * ratio for lr in first], rel=1e-9)
    if schedule != "none":
        assert len(set(first)) > 1, "the schedule moved while both groups trained"
    assert all(m[1] == m[0] for m in recorder.momenta if len(m) == 2), "1cycle's momentum too"
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert len(torch.load(last, weights_only=True)["lr_schedulers"]) == (schedule != "none")


class StopAfterSecondEpoch(L.Callback):
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = trainer.current_epoch == 1


def test_a_run_resumed_after_the_unfreeze_goes_on_as_if_never_stopped(
    tmp_path: Path, make_config
) -> None:
    """The unfrozen group comes back from the checkpoint: its layers train and its schedule
    state (LambdaLR's per-group list here) loads, step for step as in one run."""
    task = tiny_task(tmp_path / "data")
    ckpt = source_checkpoint(make_config, task)
    target = [
        *task,
        "optimizer=momentum",
        "trainer.max_epochs=4",
        f"transfer.ckpt_path={ckpt}",
        "transfer.freeze_epochs=1",
        "transfer.unfreeze_lr=0.003",
        "callbacks.model_checkpoint.monitor=null",  # last.ckpt at every epoch end
        "scheduler=power",
        *UNFREEZE_SCHEDULES["power"],
    ]
    whole = GroupRates()
    run(make_config(target, run="whole"), extra_callbacks=[whole])
    cfg = make_config(target, run="stopped")
    run(cfg, extra_callbacks=[StopAfterSecondEpoch()])
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    stopped = torch.load(last, weights_only=True)["state_dict"]["net.1.weight"]
    resumed, weights = GroupRates(), WeightsPerEpoch()
    run(
        make_config([*target, f"ckpt_path={last}"], run="resumed"),
        extra_callbacks=[resumed, weights],
    )
    assert resumed.rates == whole.rates[8:]
    assert not torch.equal(weights.first_layer[-1], stopped), "the reused layers still train"
