"""Where activations are built: a registry from config name to a module factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from dnnlab.errors import ConfigError, lookup


def prelu(units: int, shared: bool = True, init: float = 0.25) -> nn.PReLU:
    """PReLU with one learned slope for the layer (PyTorch) or one per unit (Keras)."""
    return nn.PReLU(num_parameters=1 if shared else units, init=init)


def rrelu(units: int, lower: float = 1 / 8, upper: float = 1 / 3) -> nn.RReLU:
    """Random slope in [lower, upper] while training; their mean at evaluation."""
    if not 0 <= lower <= upper:
        raise ValueError(f"need 0 <= lower={lower} <= upper={upper}")
    return nn.RReLU(lower, upper)


# name -> factory(num_units, **params). num_units lets per-unit activations (PReLU) size themselves.
ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "none": lambda units: nn.Identity(),
    "sigmoid": lambda units: nn.Sigmoid(),
    "tanh": lambda units: nn.Tanh(),
    "relu": lambda units: nn.ReLU(),
    "leaky_relu": lambda units, negative_slope=0.01: nn.LeakyReLU(negative_slope),
    "rrelu": rrelu,
    "prelu": prelu,
    "elu": lambda units, alpha=1.0: nn.ELU(alpha),
    "selu": lambda units: nn.SELU(),
    "gelu": lambda units, approximate="none": nn.GELU(approximate),
    "silu": lambda units: nn.SiLU(),
    "swish": lambda units: nn.SiLU(),  # swish with beta = 1 is SiLU
    "mish": lambda units: nn.Mish(),
}


def activation_settings(
    name: str,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of activation ``name``: a null setting takes the ``defaults`` value.

    ``defaults`` are the library defaults that ``parity`` picks (e.g. LeakyReLU's slope 0.01 in
    PyTorch, 0.3 in Keras).
    """
    own = dict((params or {}).get(name) or {})
    fallback = (defaults or {}).get(name) or {}
    return {key: fallback.get(key) if value is None else value for key, value in own.items()}


def build_activation(
    name: str,
    units: int,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
    key: str = "model",
) -> nn.Module:
    """An activation for a layer of ``units`` units.

    ``params`` maps activation names to their keyword arguments, so the settings of every
    activation can sit in the config at once and switching ``model.activation`` needs nothing else.
    ``key`` is where the config holds the model's settings (named in the errors).
    """
    factory = lookup(ACTIVATIONS, f"{key}.activation", name)
    own = {k: v for k, v in activation_settings(name, params, defaults).items() if v is not None}
    try:
        return factory(units, **own)
    except TypeError:
        raise ConfigError(
            f"{key}.activation_params.{name}={own} do not fit activation {name!r}"
        ) from None
    except ValueError as err:  # the factory's own check of its values
        raise ConfigError(f"{key}.activation_params.{name}: {err}") from None
