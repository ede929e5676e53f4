"""Where weights are initialized: the book's initializers as one variance-scaling rule.

Glorot, He and LeCun differ only in ``scale`` and in which fan they divide by (the book's table:
variance = scale / fan), so every named initializer is a preset of :func:`variance_scaling`, like
Keras' ``VarianceScaling``. The draws themselves come from ``torch.nn.init``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from dnnlab.errors import invalid_choice
from dnnlab.ranges import check_number, positive

# Keras divides the standard deviation of a normal truncated at two standard deviations by this
# (the std of a unit normal truncated to [-2, 2]) so that the variance stays scale / fan.
TRUNCATED_NORMAL_STD = 0.87962566103423978

FAN_MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
SCALE = positive("a variance scale")  # model.variance_scaling.scale, also in dnnlab.app.checks


@dataclass(frozen=True)
class VarianceScaling:
    """Weights with variance ``scale / fan``: the book's Glorot, He and LeCun in one formula."""

    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"

    def __post_init__(self) -> None:
        check_number("model.variance_scaling.scale", self.scale, SCALE)
        if self.mode not in FAN_MODES:
            raise invalid_choice("model.variance_scaling.mode", self.mode, FAN_MODES)
        if self.distribution not in DISTRIBUTIONS:
            raise invalid_choice(
                "model.variance_scaling.distribution", self.distribution, DISTRIBUTIONS
            )

    def variance(self, weight: Tensor) -> float:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        fans = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}
        return self.scale / fans[self.mode]

    def __call__(self, weight: Tensor) -> None:
        std = math.sqrt(self.variance(weight))
        if self.distribution == "uniform":
            limit = math.sqrt(3.0) * std  # Var(U(-r, r)) = r^2 / 3
            nn.init.uniform_(weight, -limit, limit)
        elif self.distribution == "normal":
            nn.init.normal_(weight, 0.0, std)
        else:
            std /= TRUNCATED_NORMAL_STD
            nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


# name -> (scale, mode); the suffix (_normal / _uniform) picks the distribution.
FAMILIES: dict[str, tuple[float, str]] = {
    "glorot": (1.0, "fan_avg"),
    "xavier": (1.0, "fan_avg"),
    "he": (2.0, "fan_in"),
    "kaiming": (2.0, "fan_in"),
    "lecun": (1.0, "fan_in"),
}
NAMED = [f"{family}_{dist}" for family in FAMILIES for dist in ("normal", "uniform")]
# Not a variance-scaling preset: PyTorch's own nn.Linear init (kernel and bias U(+-1/sqrt(fan_in))).
PYTORCH = "pytorch"

# The book's table: Glorot for no activation, tanh, sigmoid and softmax; He for ReLU and its
# variants; LeCun for SELU (``init: auto``).
AUTO_INIT: dict[str, str] = {
    "none": "glorot_uniform",
    "sigmoid": "glorot_uniform",
    "tanh": "glorot_uniform",
    "selu": "lecun_normal",
}
HE_FAMILY = "he_normal"  # every other activation is ReLU or one of its variants


def init_choices() -> list[str]:
    return [*NAMED, "variance_scaling", PYTORCH, "default", "auto"]


def resolve_init(init: str, activation: str, default_init: str = PYTORCH) -> str:
    """The concrete initializer: ``auto`` through the book's table, ``default`` per ``parity``."""
    if init == "auto":
        return AUTO_INIT.get(activation, HE_FAMILY)
    if init == "default":
        return default_init
    return init


def make_initializer(
    init: str,
    normal: str = "normal",
    variance_scaling: Mapping[str, object] | None = None,
):
    """The kernel initializer for a concrete name; ``normal`` is how ``*_normal`` draws.

    ``normal`` is ``normal`` (PyTorch) or ``truncated_normal`` (Keras' he_normal, lecun_normal,
    glorot_normal); ``variance_scaling`` holds the settings of ``init: variance_scaling``.
    """
    if init == PYTORCH:
        return None
    if init == "variance_scaling":
        return VarianceScaling(**dict(variance_scaling or {}))
    family, _, distribution = init.rpartition("_")
    if init not in NAMED:
        raise invalid_choice("model.init", init, init_choices())
    if normal not in ("normal", "truncated_normal"):
        raise invalid_choice("parity.init_normal", normal, ("normal", "truncated_normal"))
    scale, mode = FAMILIES[family]  # NAMED holds every family's names
    return VarianceScaling(scale, mode, normal if distribution == "normal" else "uniform")


def initialize_linear(layer: nn.Linear, initializer: VarianceScaling | None) -> None:
    """Initialize a dense layer's kernel; biases start at zero (None: PyTorch's own init)."""
    if initializer is None:
        return
    initializer(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
