"""``parity=keras`` trains as Keras 3 does: proven against Keras itself (PyTorch backend).

The fast tests compare the update rules on one tensor; the slow ones train the same network in
both (tests/keras_parity.py) for every optimizer, schedule, BatchNorm placement, clipping and
penalty of the chapter and require the relative difference of what training changed to stay
below ``keras_parity.TOLERANCE`` (1e-5, float32), while ``parity=pytorch`` misses it where
PyTorch's rule or default differs.
"""

from __future__ import annotations

import os

import pytest

os.environ["KERAS_BACKEND"] = "torch"  # Keras 3 reads it once, at its first import
keras = pytest.importorskip(
    "keras", reason="the Keras parity proof needs Keras 3: pip install -e '.[parity]'"
)
if keras.backend.backend() != "torch":
    pytest.skip("Keras was imported with another backend", allow_module_level=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import keras_parity as kp  # noqa: E402
from conftest import OPTIMIZERS  # noqa: E402
from dnnlab.optim.optimizers import build_optimizer  # noqa: E402
from dnnlab.optim.schedules import PiecewiseConstantLR  # noqa: E402
from dnnlab.train.run import plain  # noqa: E402

# Keras' torch backend converts tensors with numpy's old __array__ protocol.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def rule_gap(option: str, parity: str, scale: float) -> float:
    """Relative gap after 30 steps on one tensor, gradients of size ``scale``, the LR cut by 10%
    every step (a schedule): dnnlab's ``parity`` optimizer against Keras'."""
    cfg = kp.config(parity, [f"optimizer={option}", "optimizer.lr=0.01"])
    keras_cfg = kp.config("keras", [f"optimizer={option}", "optimizer.lr=0.01"])
    rng = np.random.default_rng(1)
    start = rng.standard_normal(50).astype(np.float32)
    grads = [scale * rng.standard_normal(50).astype(np.float32) for _ in range(30)]
    param = torch.nn.Parameter(torch.tensor(start))
    ours = build_optimizer(plain(cfg.optimizer), [param])
    variable = keras.Variable(start)
    theirs = kp.keras_optimizer(keras_cfg, 0.01)
    lr = 0.01
    for grad in grads:
        param.grad = torch.tensor(grad)
        ours.step()
        theirs.apply([torch.tensor(grad)], [variable])
        lr *= 0.9
        ours.param_groups[0]["lr"] = lr
        theirs.learning_rate = lr
    moved = np.linalg.norm(np.asarray(variable) - start)
    return float(np.linalg.norm(param.detach().numpy() - np.asarray(variable)) / moved)


@pytest.mark.parametrize("scale", [1.0, 1e-6])
@pytest.mark.parametrize("option", OPTIMIZERS)
def test_each_optimizer_follows_keras_update_rule(option: str, scale: float) -> None:
    assert rule_gap(option, "keras", scale) < kp.TOLERANCE


@pytest.mark.parametrize(
    ("option", "scale"),
    [
        ("momentum", 1.0),  # the velocity keeps past learning rates
        ("nesterov", 1.0),
        ("adam", 1e-6),  # epsilon before / after the bias correction
        ("adamax", 1e-6),
        ("adagrad", 1.0),  # epsilon inside the square root, Keras' initial accumulator
        ("rmsprop", 1.0),
        ("nadam", 1.0),  # the momentum schedule 0.96^t
    ],
)
def test_pytorch_rules_differ_where_the_book_would_show_it(option: str, scale: float) -> None:
    assert rule_gap(option, "pytorch", scale) > 100 * kp.TOLERANCE


def test_adam_step_at_tiny_gradients_is_keras_not_torch() -> None:
    """At gradients of 1e-6 torch's epsilon (after the bias correction) shrinks the step."""
    assert rule_gap("adam", "pytorch", 1e-6) > 0.5


def test_piecewise_per_step_switches_after_the_boundary_as_keras() -> None:
    decay = keras.optimizers.schedules.PiecewiseConstantDecay([3, 6], [1.0, 0.5, 0.1])
    param = torch.nn.Parameter(torch.zeros(1))
    for switch, expected in (("after", True), ("at", False)):
        optimizer = torch.optim.SGD([param], lr=1.0)
        schedule = PiecewiseConstantLR(optimizer, [3, 6], [1.0, 0.5, 0.1], switch=switch)
        ours = []
        for _ in range(9):
            ours.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        theirs = [float(decay(step)) for step in range(9)]  # float32
        assert (ours == pytest.approx(theirs, rel=1e-7)) is expected


@pytest.mark.parametrize(("interval", "keras_switch"), [("step", "after"), ("epoch", "at")])
def test_parity_picks_the_piecewise_switch_per_interval(interval: str, keras_switch: str) -> None:
    for parity, switch in (("keras", keras_switch), ("pytorch", "at")):
        cfg = kp.config(parity, ["scheduler=piecewise", f"scheduler.interval={interval}"])
        assert cfg.scheduler.schedule.switch == switch


@pytest.mark.slow
@pytest.mark.parametrize("case", kp.CASES, ids=lambda c: c.name)
def test_training_matches_keras(case: kp.Case, record_property) -> None:
    result = kp.measure(case)
    record_property("parity_keras_relative_difference", result.keras)
    record_property("parity_pytorch_relative_difference", result.pytorch)
    assert result.keras < kp.TOLERANCE, kp.table([result])
    if case.pytorch_differs:
        # torch's rule drifts 10x past the tolerance at least (Adam: 8e-4 after 100 steps)
        assert result.pytorch > 10 * kp.TOLERANCE, kp.table([result])
