"""Where the MLP is assembled from config: Flatten, then Dense+activation blocks, then the head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from dnnlab.errors import ConfigError, invalid_choice
from dnnlab.models.activations import build_activation
from dnnlab.models.initializers import INITIALIZERS, init_choices, initialize_linear, resolve_init


def build_mlp(
    input_dim: int,
    num_classes: int,
    hidden: Sequence[int] = (300, 100),
    activation: str = "relu",
    activation_params: Mapping[str, Any] | None = None,
    init: str = "auto",
) -> nn.Sequential:
    """784 -> hidden... -> num_classes, returning logits (the loss applies the softmax)."""
    if not hidden or any(int(units) < 1 for units in hidden):
        raise ConfigError(f"model.hidden={list(hidden)} must be a non-empty list of positive sizes")
    concrete = resolve_init(init, activation)
    if concrete not in INITIALIZERS:
        raise invalid_choice("model.init", init, init_choices())
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = input_dim
    for units in hidden:
        dense = nn.Linear(fan_in, int(units))
        initialize_linear(dense, concrete)
        layers += [dense, build_activation(activation, int(units), activation_params)]
        fan_in = int(units)
    head = nn.Linear(fan_in, num_classes)
    initialize_linear(head, "default" if concrete == "default" else "glorot_uniform")
    layers.append(head)
    return nn.Sequential(*layers)
