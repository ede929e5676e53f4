"""Where the MLP is assembled from config: Flatten, hidden layers, then the head (logits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dnnlab.errors import ConfigError
from dnnlab.model.activations import ACTIVATIONS, build_activation
from dnnlab.model.hidden import BatchNormChoice, DropoutChoice
from dnnlab.model.initializers import (
    PYTORCH,
    init_choices,
    initialize_linear,
    make_initializer,
    resolve_init,
)
from dnnlab.ranges import integers
from dnnlab.settings import check_fields, setting

# Arguments of build_mlp that the code passes, not the model config.
PASSED = ("input_dim", "num_classes", "sigmoid_head", "key")


@dataclass(frozen=True)
class Layers:
    """The model's layers: their sizes, activation and initializer (BatchNorm and dropout:
    :mod:`dnnlab.model.hidden`; ``init: variance_scaling``: :class:`VarianceScaling`)."""

    hidden: Sequence[int] = setting(
        items=integers("a layer size (units)", 1), doc="units of each hidden layer, bottom up"
    )
    activation: str = setting(choices=ACTIVATIONS, doc="of every hidden layer")
    init: str = setting(choices=init_choices(), doc="the hidden kernels' initializer")
    key: InitVar[str] = "model"

    def __post_init__(self, key: str) -> None:
        if not self.hidden:
            raise ConfigError(f"{key}.hidden=[] must list at least one hidden layer size")
        check_fields(self, key)


class BinaryLogits(nn.Module):
    """The logit ``z`` of one sigmoid unit as the two-class logits ``[0, z]``.

    Their softmax is ``[1 - sigmoid(z), sigmoid(z)]`` and their cross-entropy is the binary
    cross-entropy of ``z``: argmax accuracy, probabilities and calibration work as for a
    two-unit softmax head, while the model has the book's single output unit.
    """

    def forward(self, z: Tensor) -> Tensor:
        return torch.cat([torch.zeros_like(z), z], dim=-1)


def build_mlp(
    input_dim: int,
    num_classes: int,
    hidden: Sequence[int] = (300, 100),
    activation: str = "relu",
    activation_params: Mapping[str, Any] | None = None,
    activation_defaults: Mapping[str, Any] | None = None,
    init: str = "auto",
    default_init: str = PYTORCH,
    init_normal: str = "normal",
    variance_scaling: Mapping[str, Any] | None = None,
    batch_norm: str = "none",
    input_batch_norm: bool = False,
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    bn_moving_variance: str = "unbiased",
    dropout: float = 0.0,
    dropout_kind: str = "auto",
    dropout_where: str = "all",
    sigmoid_head: bool = False,
    key: str = "model",
) -> nn.Sequential:
    """784 -> hidden... -> num_classes, returning logits (the loss applies the softmax).

    The keyword arguments are the keys of ``conf/model/mlp.yaml``; ``activation_defaults``,
    ``default_init``, ``init_normal`` and ``bn_moving_variance`` are the library defaults that
    ``parity`` picks. ``sigmoid_head`` ends a two-class network in one sigmoid unit (the loss
    ``binary_cross_entropy``) followed by :class:`BinaryLogits`. ``key`` is where the config
    holds these settings: the errors name ``<key>.<setting>``.
    """
    Layers(hidden, activation, init, key=key)
    concrete = resolve_init(init, activation, default_init)
    initializer = make_initializer(concrete, init_normal, variance_scaling, key)
    norm = BatchNormChoice(
        batch_norm, input_batch_norm, bn_momentum, bn_eps, bn_moving_variance, key=key
    )
    drop = DropoutChoice(dropout, dropout_kind, dropout_where, key=key)

    layers: list[nn.Module] = [nn.Flatten()]
    if norm.on_input:
        layers.append(norm.layer(input_dim))
    if drop.applies(0, len(hidden)):
        layers.append(drop.layer(activation))
    fan_in = input_dim
    for position, size in enumerate(hidden, start=1):
        units = int(size)
        dense = nn.Linear(fan_in, units, bias=norm.place != "before")
        initialize_linear(dense, initializer)
        act = build_activation(activation, units, activation_params, activation_defaults, key)
        if norm.place == "before":
            layers += [dense, norm.layer(units), act]
        else:
            layers += [dense, act, *([norm.layer(units)] if norm.place == "after" else [])]
        if drop.applies(position, len(hidden)):
            layers.append(drop.layer(activation))
        fan_in = units
    if sigmoid_head and num_classes != 2:
        raise ConfigError(
            f"loss=binary_cross_entropy needs a two-class task (e.g. data.classes=[0,2]); "
            f"this one has {num_classes} classes: use loss=cross_entropy"
        )
    head = nn.Linear(fan_in, 1 if sigmoid_head else num_classes)
    # The output layer has no ReLU-family activation: Glorot, Keras' default for Dense.
    initialize_linear(head, None if concrete == PYTORCH else make_initializer("glorot_uniform"))
    layers += [head, BinaryLogits()] if sigmoid_head else [head]
    return nn.Sequential(*layers)


def dense_layers(module: nn.Module) -> list[nn.Linear]:
    """The dense layers in forward order; the last is the output layer."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)]
