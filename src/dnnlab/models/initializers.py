"""Where weights are initialized: a registry of the book's initializers on ``torch.nn.init``."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from dnnlab.errors import lookup

INITIALIZERS: dict[str, Callable[[Tensor], object]] = {
    "default": lambda w: None,  # keep PyTorch's own nn.Linear initialization
    "glorot_uniform": nn.init.xavier_uniform_,
    "glorot_normal": nn.init.xavier_normal_,
    "he_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "he_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "lecun_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="linear"),
    "lecun_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="linear"),
}

# The book's table: which initializer goes with which activation (``init: auto``).
AUTO_INIT: dict[str, str] = {
    "sigmoid": "glorot_uniform",
    "tanh": "glorot_uniform",
    "relu": "he_normal",
    "leaky_relu": "he_normal",
    "elu": "he_normal",
    "selu": "lecun_normal",
}


def resolve_init(init: str, activation: str) -> str:
    """The concrete initializer name, resolving ``auto`` through the book's table."""
    return AUTO_INIT.get(activation, "glorot_uniform") if init == "auto" else init


def initialize_linear(layer: nn.Linear, init: str) -> None:
    """Initialize a dense layer's kernel by name; biases start at zero as in Keras."""
    lookup(INITIALIZERS, "model.init", init)(layer.weight)
    if layer.bias is not None and init != "default":
        nn.init.zeros_(layer.bias)


def init_choices() -> list[str]:
    return [*INITIALIZERS, "auto"]
