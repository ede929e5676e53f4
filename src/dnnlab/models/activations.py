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


def build_activation(
    name: str, units: int, params: Mapping[str, Mapping[str, Any]] | None = None
) -> nn.Module:
    """An activation for a layer of ``units`` units.

    ``params`` maps activation names to their keyword arguments, so the settings of every
    activation can sit in the config at once and switching ``model.activation`` needs nothing else.
    """
    factory = lookup(ACTIVATIONS, "model.activation", name)
    own = dict((params or {}).get(name) or {})
    try:
        return factory(units, **own)
    except TypeError:
        raise ConfigError(
            f"model.activation_params.{name}={own} do not fit activation {name!r}"
        ) from None
