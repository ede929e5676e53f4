"""Train the same small network in Keras 3 and in dnnlab, and measure how far their weights end.

Shared by tests/optim/test_keras_parity.py (the proof) and scripts/keras_parity_table.py (the table
in docs/reference.md). dnnlab runs through its real code: ``compose_config``, ``build_model`` (the
Classifier, its optimizer, schedule, regularization and clipping) and a Lightning ``Trainer``;
Keras (PyTorch backend) gets the same initial weights, the same batches in the same order and
the Keras objects the book uses for each technique.

The measure is the relative difference of what training changed: for every weight and
BatchNorm statistic, ``|(w_dnnlab - w0) - (w_keras - w0)| / |w_keras - w0|`` (L2 norms), the
maximum over tensors; ``w0`` is the common start.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere

import keras
import lightning as L
import numpy as np
import torch
from absl import logging as absl_logging
from torch import nn

from dnnlab.app.compose import compose_config
from dnnlab.train.run import build_model

# Keras brings absl, whose log handler keeps the sys.stderr of its import (pytest's capture file
# while tests are collected) and closes that stream when logging.config clears the handlers, as
# Hydra does for every in-process run: point it at the real stderr, which it never closes.
absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__

INPUTS, CLASSES, BATCH = 24, 10, 32
BATCHES_PER_EPOCH, EPOCHS = 10, 10
STEPS = BATCHES_PER_EPOCH * EPOCHS
# float32 through 100 steps: both sides round differently (fused vs separate operations).
TOLERANCE = 1e-5
# Every case: the small MLP, ReLU, Glorot-uniform weights (the same under both parities, so one
# Keras run serves both), and the book's optimizer values unless the case says otherwise.
BASE = ("model.hidden=[32,16]", "model.activation=relu", "model.init=glorot_uniform")


@dataclass(frozen=True)
class Case:
    name: str
    overrides: tuple[str, ...]
    # What the parity=pytorch run must miss by (the update rule or a default differs), or None
    # where PyTorch's rule is the same (plain SGD, clipping and penalties on plain SGD).
    pytorch_differs: bool = True


def case(name: str, *overrides: str, pytorch_differs: bool = True) -> Case:
    return Case(name, overrides, pytorch_differs)


CASES: list[Case] = [
    case("sgd", "optimizer=sgd", "optimizer.lr=0.05", pytorch_differs=False),
    case("momentum", "optimizer=momentum", "optimizer.lr=0.01", pytorch_differs=False),
    case("nesterov", "optimizer=nesterov", "optimizer.lr=0.01", pytorch_differs=False),
    case("adagrad", "optimizer=adagrad", "optimizer.lr=0.05"),
    case("rmsprop", "optimizer=rmsprop"),
    case("adam", "optimizer=adam"),
    case("adamax", "optimizer=adamax"),
    case("nadam", "optimizer=nadam"),
    case("adamw", "optimizer=adamw", "optimizer.weight_decay=0.01"),
    case(
        "power (momentum)",
        "optimizer=momentum",
        "optimizer.lr=0.01",
        "scheduler=power",
        "scheduler.schedule.s=10",
    ),
    case(
        "exponential, per step (momentum)",
        "optimizer=momentum",
        "optimizer.lr=0.01",
        "scheduler=exponential",
        "scheduler.interval=step",
        "scheduler.schedule.s=30",
    ),
    case(
        "exponential, per epoch (nesterov)",
        "optimizer=nesterov",
        "optimizer.lr=0.01",
        "scheduler=exponential",
        "scheduler.schedule.s=3",
    ),
    case(
        "piecewise, per step (momentum)",
        "optimizer=momentum",
        "scheduler=piecewise",
        "scheduler.interval=step",
        "scheduler.schedule.boundaries=[30,60]",
        "scheduler.schedule.values=[0.02,0.005,0.001]",
    ),
    case(
        "piecewise, per epoch (momentum)",
        "optimizer=momentum",
        "scheduler=piecewise",
        "scheduler.schedule.boundaries=[3,6]",
        "scheduler.schedule.values=[0.02,0.005,0.001]",
    ),
    case(  # each epoch gains ~2.2 lr < min_delta 1e-4: Keras halves the LR every epoch
        "performance (sgd)",
        "optimizer=sgd",
        "optimizer.lr=4e-5",
        "scheduler=performance",
        "scheduler.monitor=train/loss_epoch",
        "scheduler.schedule.patience=1",
    ),
    case(
        "1cycle (momentum)",
        "optimizer=momentum",
        "scheduler=onecycle",
        "scheduler.schedule.max_lr=0.05",
        f"scheduler.schedule.total_steps={STEPS}",
    ),
    case(
        "1cycle (adam)",
        "optimizer=adam",
        "scheduler=onecycle",
        "scheduler.schedule.max_lr=0.005",
        f"scheduler.schedule.total_steps={STEPS}",
    ),
    case(
        "BN before (momentum)", "optimizer=momentum", "optimizer.lr=0.01", "model.batch_norm=before"
    ),
    case("BN after (adam)", "optimizer=adam", "model.batch_norm=after"),
    case(
        "clipping value (sgd)",
        "optimizer=sgd",
        "optimizer.lr=0.05",
        "clipping=value",
        "clipping.threshold=0.02",
        pytorch_differs=False,
    ),
    case(
        "clipping norm (sgd)",
        "optimizer=sgd",
        "optimizer.lr=0.05",
        "clipping=norm",
        "clipping.threshold=0.2",
        pytorch_differs=False,
    ),
    case(
        "clipnorm (adam)",
        "optimizer=adam",
        "clipping=clipnorm",
        "clipping.threshold=0.05",
    ),
    case(
        "L1 (sgd)", "optimizer=sgd", "optimizer.lr=0.05", "regularization=l1", pytorch_differs=False
    ),
    case(
        "L2 (sgd)", "optimizer=sgd", "optimizer.lr=0.05", "regularization=l2", pytorch_differs=False
    ),
    case(
        "max-norm (sgd)",
        "optimizer=sgd",
        "optimizer.lr=0.05",
        "regularization=max_norm",
        "regularization.max_norm=0.8",
        pytorch_differs=False,
    ),
]


def batches(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed inputs and labels a linear teacher gives them (learnable, no dataset needed)."""
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((INPUTS, CLASSES)).astype(np.float32)
    x = rng.standard_normal((BATCHES_PER_EPOCH * BATCH, INPUTS)).astype(np.float32)
    y = (x @ teacher + rng.standard_normal((len(x), CLASSES))).argmax(axis=1).astype(np.int64)
    return x, y


class Blocks:
    """One epoch of blocks of one mini-batch each, in a fixed order (what dnnlab's loader gives
    the Classifier's training_step)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def __len__(self) -> int:
        return BATCHES_PER_EPOCH

    def __iter__(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        for i in range(BATCHES_PER_EPOCH):
            part = slice(i * BATCH, (i + 1) * BATCH)
            yield [(self.x[part], self.y[part])]


def config(parity: str, overrides: Sequence[str]) -> Any:
    return compose_config([f"parity={parity}", *BASE, *overrides], output_dir="unused")


def dnnlab_model(cfg: Any) -> Any:
    torch.manual_seed(0)
    data = SimpleNamespace(input_shape=(INPUTS,), num_classes=CLASSES)
    return build_model(cfg, data)


def train_dnnlab(cfg: Any, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    module = dnnlab_model(cfg)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=EPOCHS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=STEPS,
    )
    trainer.fit(module, train_dataloaders=Blocks(x, y))
    return tensors(module.net)


def tensors(net: nn.Module) -> dict[str, np.ndarray]:
    """Kernels, biases and BN variables under Keras' layout (kernels as (in, out))."""
    out: dict[str, np.ndarray] = {}
    for i, layer in enumerate(
        m for m in net.modules() if isinstance(m, (nn.Linear, nn.BatchNorm1d))
    ):
        if isinstance(layer, nn.Linear):
            out[f"{i}.kernel"] = layer.weight.detach().numpy().T.copy()
            if layer.bias is not None:
                out[f"{i}.bias"] = layer.bias.detach().numpy().copy()
        else:
            out[f"{i}.gamma"] = layer.weight.detach().numpy().copy()
            out[f"{i}.beta"] = layer.bias.detach().numpy().copy()
            out[f"{i}.moving_mean"] = layer.running_mean.numpy().copy()
            out[f"{i}.moving_variance"] = layer.running_var.numpy().copy()
    return out


# -------------------------------------------------------------------------------------- Keras
def keras_optimizer(cfg: Any, learning_rate: Any) -> keras.optimizers.Optimizer:
    """The Keras optimizer of the book for the config's optimizer, with its values."""
    node = cfg.optimizer
    kind = cfg.optimizer._target_.rsplit(".", 1)[-1]
    clip = {"value": "clipvalue", "norm": "global_clipnorm", "clipnorm": "clipnorm"}
    common: dict[str, Any] = {"learning_rate": learning_rate}
    if cfg.clipping.kind != "none":
        common[clip[cfg.clipping.kind]] = cfg.clipping.threshold
    if node.get("weight_decay"):
        common["weight_decay"] = node.weight_decay
    if kind == "SGD":
        return keras.optimizers.SGD(
            momentum=node.get("momentum", 0.0), nesterov=node.get("nesterov", False), **common
        )
    if kind == "Adagrad":
        return keras.optimizers.Adagrad(
            initial_accumulator_value=node.initial_accumulator_value, epsilon=node.eps, **common
        )
    if kind == "RMSprop":
        return keras.optimizers.RMSprop(
            rho=node.alpha, momentum=node.momentum, epsilon=node.eps, **common
        )
    beta_1, beta_2 = node.betas
    classes = {
        "Adam": keras.optimizers.Adam,
        "AdamW": keras.optimizers.AdamW,
        "Adamax": keras.optimizers.Adamax,
        "NAdam": keras.optimizers.Nadam,
    }
    return classes[kind](beta_1=beta_1, beta_2=beta_2, epsilon=node.eps, **common)


class OneCycle(keras.callbacks.Callback):
    """The book's 1cycle as a Keras callback, per batch: the LR linearly from ``max_lr / div``
    up to ``max_lr`` over the first ``warmup_fraction`` of the run, back down over as many
    steps, then down to ``final_div`` times lower by the last step; the momentum (Adam: beta_1)
    the other way, ``max_momentum -> base_momentum -> max_momentum``."""

    def __init__(self, schedule: Any, total: int) -> None:
        super().__init__()
        self.s, self.total, self.step = schedule, total, 0
        self.start = schedule.max_lr / schedule.div_factor
        self.end = self.start / schedule.final_div_factor
        self.up = float(schedule.warmup_fraction * total) - 1
        self.down = float(2 * schedule.warmup_fraction * total) - 2

    def rate_and_momentum(self, t: int) -> tuple[float, float]:
        s = self.s
        phases = [
            (0.0, self.up, (self.start, s.max_lr), (s.max_momentum, s.base_momentum)),
            (self.up, self.down, (s.max_lr, self.start), (s.base_momentum, s.max_momentum)),
            (self.down, self.total - 1, (self.start, self.end), (s.max_momentum, s.max_momentum)),
        ]
        for first, last, rates, momenta in phases:
            if t <= last or last == self.total - 1:
                share = (t - first) / (last - first)
                return (
                    rates[0] + share * (rates[1] - rates[0]),
                    momenta[0] + share * (momenta[1] - momenta[0]),
                )
        raise AssertionError("unreachable")

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        rate, momentum = self.rate_and_momentum(self.step)
        optimizer = self.model.optimizer
        optimizer.learning_rate = rate
        if isinstance(optimizer, keras.optimizers.SGD):
            optimizer.momentum = momentum
        else:
            optimizer.beta_1 = momentum
        self.step += 1


def keras_schedule(cfg: Any) -> tuple[Any, list[keras.callbacks.Callback]]:
    """The learning rate (a number or a Keras schedule) and the callbacks of the config's
    schedule, as the book writes them."""
    lr = float(cfg.optimizer.lr)
    node = cfg.scheduler
    if not node:
        return lr, []
    schedule = node.schedule
    target = schedule._target_.rsplit(".", 1)[-1]
    per_step = node.get("interval") == "step"
    schedules = keras.optimizers.schedules
    if target == "power" and per_step:  # the book's Keras 2 ``decay``: InverseTimeDecay, c = 1
        assert schedule.c == 1
        return schedules.InverseTimeDecay(lr, decay_steps=schedule.s, decay_rate=1.0), []
    if target == "exponential" and per_step:
        return schedules.ExponentialDecay(lr, schedule.s, schedule.decay_rate), []
    if target == "exponential":

        def exponential_decay(epoch: int) -> float:
            return lr * schedule.decay_rate ** (epoch / schedule.s)

        return lr, [keras.callbacks.LearningRateScheduler(exponential_decay)]
    if target == "PiecewiseConstantLR" and per_step:
        boundaries, values = list(schedule.boundaries), list(schedule["values"])
        return schedules.PiecewiseConstantDecay(boundaries, values), []
    if target == "PiecewiseConstantLR":

        def piecewise_constant(epoch: int) -> float:  # the book's function
            for boundary, value in zip(schedule.boundaries, schedule["values"], strict=False):
                if epoch < boundary:
                    return value
            return schedule["values"][-1]

        return lr, [keras.callbacks.LearningRateScheduler(piecewise_constant)]
    if target == "performance":  # Keras' own defaults for what the config does not say
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor="loss", factor=schedule.factor, patience=schedule.patience
        )
        return lr, [plateau]
    if target == "one_cycle":
        return lr, [OneCycle(schedule, schedule.total_steps)]
    raise AssertionError(f"no Keras counterpart for {target}")


def keras_model(cfg: Any, start: dict[str, np.ndarray]) -> keras.Model:
    """The book's Keras network for the config's model and regularization, from ``start``."""
    model, reg = cfg.model, cfg.regularization
    regularizer = None
    if reg.l1 or reg.l2:
        regularizer = keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)
    constraint = keras.constraints.MaxNorm(reg.max_norm, axis=0) if reg.max_norm else None
    bn = {"momentum": 1 - model.bn_momentum, "epsilon": model.bn_eps}
    layers: list[keras.layers.Layer] = [keras.Input((INPUTS,))]
    for units in model.hidden:
        dense = keras.layers.Dense(
            units,
            use_bias=model.batch_norm != "before",
            kernel_regularizer=regularizer,
            kernel_constraint=constraint,
        )
        relu = keras.layers.Activation("relu")
        if model.batch_norm == "before":
            layers += [dense, keras.layers.BatchNormalization(**bn), relu]
        elif model.batch_norm == "after":
            layers += [dense, relu, keras.layers.BatchNormalization(**bn)]
        else:
            layers += [dense, relu]
    layers.append(keras.layers.Dense(CLASSES, kernel_regularizer=regularizer))
    net = keras.Sequential(layers)
    values = iter(start.values())
    for layer in net.layers:
        if layer.weights:
            layer.set_weights([next(values) for _ in layer.weights])
    return net


def train_keras(
    cfg: Any, start: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> dict[str, np.ndarray]:
    net = keras_model(cfg, start)
    learning_rate, callbacks = keras_schedule(cfg)
    net.compile(
        optimizer=keras_optimizer(cfg, learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    net.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
    weights = [w for layer in net.layers for w in layer.get_weights()]
    return dict(zip(start, weights, strict=True))


# ---------------------------------------------------------------------------------- compare
def relative_difference(
    ours: dict[str, np.ndarray], keras_: dict[str, np.ndarray], start: dict[str, np.ndarray]
) -> float:
    """The largest ``|(ours - start) - (keras - start)| / |keras - start|`` over tensors."""
    worst = 0.0
    for name, reference in keras_.items():
        moved = np.linalg.norm(reference.astype(np.float64) - start[name])
        if moved == 0:
            continue
        gap = np.linalg.norm(ours[name].astype(np.float64) - reference)
        worst = max(worst, float(gap / moved))
    return worst


@dataclass(frozen=True)
class Result:
    case: Case
    keras: float  # relative difference with parity=keras
    pytorch: float  # ... with parity=pytorch


def measure(case: Case, parities: Sequence[str] = ("keras", "pytorch")) -> Result:
    """Train ``case`` in Keras once and in dnnlab under each parity; their differences."""
    quiet()
    x, y = batches()
    keras_cfg = config("keras", case.overrides)
    start = tensors(dnnlab_model(keras_cfg).net)
    reference = train_keras(keras_cfg, start, x, y)
    found = {
        parity: relative_difference(
            train_dnnlab(config(parity, case.overrides), x, y), reference, start
        )
        for parity in parities
    }
    return Result(case, found.get("keras", float("nan")), found.get("pytorch", float("nan")))


def quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")


def table(results: Sequence[Result], fmt: Callable[[float], str] = "{:.1e}".format) -> str:
    lines = [
        "| case | `parity=keras` | `parity=pytorch` |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {r.case.name} | {fmt(r.keras)} | {fmt(r.pytorch)} |" for r in results]
    return "\n".join(lines)
