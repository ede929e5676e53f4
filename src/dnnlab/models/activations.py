"""Where activations are built: a registry from config name to a module factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from dnnlab.errors import ConfigError, lookup

# name -> factory(num_units, **params). num_units lets per-unit activations (PReLU) size themselves.
ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "sigmoid": lambda units: nn.Sigmoid(),
    "tanh": lambda units: nn.Tanh(),
    "relu": lambda units: nn.ReLU(),
    "leaky_relu": lambda units, negative_slope=0.01: nn.LeakyReLU(negative_slope),
    "elu": lambda units, alpha=1.0: nn.ELU(alpha),
    "selu": lambda units: nn.SELU(),
}


def build_activation(name: str, units: int, params: Mapping[str, Any] | None = None) -> nn.Module:
    """An activation for a layer of ``units`` units, ``params`` passed to its factory."""
    factory = lookup(ACTIVATIONS, "model.activation", name)
    try:
        return factory(units, **dict(params or {}))
    except TypeError:
        raise ConfigError(
            f"model.activation_params={dict(params or {})} do not fit activation {name!r}"
        ) from None
