"""Transfer learning: class subsets, reused lower layers, freezing and unfreezing."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import requires_fashion, write_checkpoint
from dnnlab.data import IdxDataModule
from dnnlab.errors import ConfigError
from dnnlab.models import build_mlp
from dnnlab.training import run
from dnnlab.transfer import FreezeReusedLayers, load_lower_layers
from dnnlab.validation import check_ranges

pytestmark = requires_fashion
TASK_A = ["data.classes=[1,3,4,5,6,7,8,9]", "model.hidden=[100,100,100]", "test=false"]
TASK_B = ["data.classes=[0,2]", "data.train_size=200", "model.hidden=[100,100,100]"]


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


def test_source_with_another_head_loads_and_mismatch_is_one_line(make_config) -> None:
    source = make_config(
        [*TASK_A, "trainer.max_epochs=1", "trainer.limit_train_batches=1"], run="a"
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
