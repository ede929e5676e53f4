"""Where the MLP is assembled from config: Flatten, hidden blocks, then the head (logits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from dnnlab.errors import ConfigError
from dnnlab.models.activations import build_activation
from dnnlab.models.blocks import BatchNormChoice, DropoutChoice
from dnnlab.models.initializers import (
    PYTORCH,
    initialize_linear,
    make_initializer,
    resolve_init,
)
from dnnlab.ranges import check_items, integers

LAYER_SIZE = integers("a layer size (units)", 1)  # each item of model.hidden


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
    dropout: float = 0.0,
    dropout_kind: str = "auto",
    dropout_where: str = "all",
) -> nn.Sequential:
    """784 -> hidden... -> num_classes, returning logits (the loss applies the softmax).

    The keyword arguments are the keys of ``conf/model/mlp.yaml``; ``activation_defaults``,
    ``default_init`` and ``init_normal`` are the library defaults that ``parity`` picks.
    """
    if not hidden:
        raise ConfigError("model.hidden=[] must list at least one hidden layer size")
    check_items("model.hidden", list(hidden), LAYER_SIZE)
    concrete = resolve_init(init, activation, default_init)
    initializer = make_initializer(concrete, init_normal, variance_scaling)
    norm = BatchNormChoice(batch_norm, input_batch_norm, bn_momentum, bn_eps)
    drop = DropoutChoice(dropout, dropout_kind, dropout_where)

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
        act = build_activation(activation, units, activation_params, activation_defaults)
        if norm.place == "before":
            layers += [dense, norm.layer(units), act]
        else:
            layers += [dense, act, *([norm.layer(units)] if norm.place == "after" else [])]
        if drop.applies(position, len(hidden)):
            layers.append(drop.layer(activation))
        fan_in = units
    head = nn.Linear(fan_in, num_classes)
    # The output layer has no ReLU-family activation: Glorot, Keras' default for Dense.
    initialize_linear(head, None if concrete == PYTORCH else make_initializer("glorot_uniform"))
    layers.append(head)
    return nn.Sequential(*layers)


def dense_layers(module: nn.Module) -> list[nn.Linear]:
    """The dense layers in forward order; the last is the output layer."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)]
