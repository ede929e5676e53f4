"""The optimizer group: book values, Keras parity, one-line errors, and faster training than SGD."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import requires_fashion, scalars
from dnnlab.app.compose import CONFIG_DIR, compose_config
from dnnlab.data import IdxDataModule
from dnnlab.errors import ConfigError
from dnnlab.model import build_mlp
from dnnlab.optim.optimizers import build_optimizer
from dnnlab.train.run import plain, run

OPTIMIZERS = sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml"))


def optimizer_node(*overrides: str) -> dict:
    return plain(compose_config(list(overrides), output_dir="unused").optimizer)


def test_all_nine_optimizers_of_the_book_are_options() -> None:
    book = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw"}
    assert set(OPTIMIZERS) == book


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("momentum", {"lr": 1e-3, "momentum": 0.9}),
        ("nesterov", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
        ("adam", {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8}),
        ("nadam", {"lr": 1e-3, "betas": [0.9, 0.999]}),
        ("adamw", {"lr": 1e-3, "weight_decay": 1e-5}),
        ("rmsprop", {"lr": 1e-3, "alpha": 0.99}),
        ("adagrad", {"lr": 1e-3, "initial_accumulator_value": 0.0}),
    ],
)
def test_book_values(option: str, expected: dict) -> None:
    node = optimizer_node(f"optimizer={option}")
    assert {k: node[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("option", "key", "pytorch", "keras"),
    [
        ("adam", "eps", 1e-8, 1e-7),
        ("nadam", "eps", 1e-8, 1e-7),
        ("rmsprop", "alpha", 0.99, 0.9),
        ("adagrad", "initial_accumulator_value", 0.0, 0.1),
    ],
)
def test_keras_parity_switches_the_framework_defaults(
    option: str, key: str, pytorch: float, keras: float
) -> None:
    assert optimizer_node(f"optimizer={option}")[key] == pytorch
    assert optimizer_node(f"optimizer={option}", "parity=keras")[key] == keras


@pytest.mark.parametrize("option", OPTIMIZERS)
@pytest.mark.parametrize("parity", ["pytorch", "keras"])
def test_every_option_builds_steps_and_saves_primitive_state(option: str, parity: str) -> None:
    net = torch.nn.Linear(4, 3)
    optimizer = build_optimizer(
        optimizer_node(f"optimizer={option}", f"parity={parity}"), net.parameters()
    )
    F.cross_entropy(net(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)  # no ListConfig or other objects in the state


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer.lr=-0.01"],
            "optimizer.lr=-0.01 is out of range; expected a learning rate > 0",
        ),
        (
            ["optimizer=momentum", "optimizer.momentum=1.5"],
            "optimizer.momentum=1.5 is out of range; expected a momentum in",
        ),
        (
            ["optimizer=adam", "optimizer.betas=[0.9,1.0]"],
            r"optimizer.betas[1]=1.0 is out of range; expected a decay rate \(Adam's beta\) in",
        ),
        (["optimizer=adam", "optimizer.betas=[0.9]"], "optimizer.betas=[0.9] must be two"),
        (
            ["optimizer=adam", "optimizer.eps=0"],
            "optimizer.eps=0 is out of range; expected an epsilon > 0",
        ),
        (["optimizer=adamw", "optimizer.weight_decay=-1"], "optimizer.weight_decay=-1"),
        (["optimizer=nesterov", "optimizer.momentum=0"], "nesterov=true needs"),
        (
            ["optimizer.lr=fast"],
            "optimizer.lr='fast' is out of range; expected a learning rate > 0",
        ),
        (["+optimizer.rho=0.9"], "optimizer.rho=0.9: unknown key 'rho' in optimizer; valid keys: "),
        (["optimizer._target_=torch.optim.Nadam"], "'torch.optim.Nadam' is not an importable"),
    ],
)
def test_bad_optimizer_values_are_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as err:
        build_optimizer(optimizer_node(*overrides), torch.nn.Linear(2, 2).parameters())
    assert "\n" not in str(err.value)


@requires_fashion
def test_fast_optimizers_train_faster_than_plain_sgd_at_the_same_lr() -> None:
    """The book's point: momentum and adaptive methods reach lower loss in the same steps."""
    data = IdxDataModule(search_dirs=["/usr/share/datasets/fashion-mnist"], download=False)
    data.setup()
    x, y = data.inputs("train")[:3200], data.tensors["train"][1][:3200]

    def final_loss(option: str) -> float:
        torch.manual_seed(0)
        net = build_mlp(784, 10, hidden=[300, 100], activation="leaky_relu", init="he_normal")
        optimizer = build_optimizer(optimizer_node(f"optimizer={option}"), net.parameters())
        for xb, yb in zip(x.split(32), y.split(32), strict=True):  # 100 steps of 32
            optimizer.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            optimizer.step()
        with torch.no_grad():
            return F.cross_entropy(net(x), y).item()

    sgd = final_loss("sgd")
    for option in ("momentum", "nesterov", "adam", "nadam", "adamax", "adamw", "rmsprop"):
        assert final_loss(option) < 0.9 * sgd, option


@requires_fashion
def test_schedules_drive_the_training_lr_logged_at_every_step(make_config) -> None:
    """1cycle over a real run in blocks: peak mid-run, far below the start at the end."""
    cfg = make_config(
        [
            "optimizer=nesterov",
            "scheduler=onecycle",
            "scheduler.schedule.max_lr=0.1",
            "trainer.log_every_n_steps=1",
            "test=false",
        ]
    )
    run(cfg)
    logged = scalars(Path(cfg.paths.output_dir))
    lrs, momenta = dict(logged["train/lr"]), dict(logged["train/momentum"])
    assert sorted(lrs) == list(range(1, 321)), "the LR of every one of the 320 steps"
    peak = max(lrs, key=lrs.__getitem__)
    assert lrs[1] == pytest.approx(0.01) and lrs[peak] == pytest.approx(0.1)
    assert 0.4 * 320 <= peak <= 0.5 * 320 and lrs[320] < 0.01 / 100
    assert momenta[1] == pytest.approx(0.95) and momenta[peak] == pytest.approx(0.85)


@requires_fashion
def test_plateau_schedule_reads_the_monitored_metric_of_the_run(make_config) -> None:
    # threshold=10: no epoch counts as a gain, so with patience 1 every epoch halves the LR.
    cfg = make_config(
        [
            "scheduler=performance",
            "scheduler.schedule.patience=1",
            "scheduler.schedule.threshold=10",
            "trainer.max_epochs=3",
            "trainer.log_every_n_steps=160",
            "test=false",
        ]
    )
    run(cfg)
    lrs = dict(scalars(Path(cfg.paths.output_dir))["train/lr"])
    assert [lrs[160], lrs[320], lrs[480]] == pytest.approx([0.05, 0.025, 0.0125])
