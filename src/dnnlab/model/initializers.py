"""Where weights are initialized: the book's initializers as one variance-scaling rule.

Glorot, He and LeCun differ only in ``scale`` and in which fan they divide by (the book's table:
variance = scale / fan), so every named initializer is a preset of :func:`variance_scaling`, like
Keras' ``VarianceScaling``. The draws themselves come from ``torch.nn.init``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import InitVar, dataclass

from torch import Tensor, nn

from dnnlab.errors import ConfigError, lookup
from dnnlab.ranges import positive
from dnnlab.settings import check_fields, from_mapping, setting

# Keras divides the standard deviation of a normal truncated at two standard deviations by this
# (the std of a unit normal truncated to [-2, 2]) so that the variance stays scale / fan.
TRUNCATED_NORMAL_STD = 0.87962566103423978

FAN_MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")


@dataclass(frozen=True)
class VarianceScaling:
    """Weights with variance ``scale / fan``: the book's Glorot, He and LeCun in one formula.

    Also the settings of ``init: variance_scaling`` (the model's ``variance_scaling`` node).
    """

    scale: float = setting(1.0, rule=positive("a variance scale"), doc="variance = scale / fan")
    mode: str = setting("fan_in", choices=FAN_MODES, doc="the fan divided by")
    distribution: str = setting(
        "truncated_normal", choices=DISTRIBUTIONS, doc="what the weights are drawn from"
    )
    key: InitVar[str] = "model.variance_scaling"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)

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


def _preset(name: str) -> tuple[float, str, str | None]:
    """(scale, mode, distribution) of a named initializer; None: ``*_normal``'s, per parity."""
    family, _, draw = name.rpartition("_")
    return (*FAMILIES[family], None if draw == "normal" else "uniform")


# init name -> its preset; None for the names that are none: ``variance_scaling`` and
# ``pytorch`` are built apart, ``auto`` and ``default`` name one (resolve_init).
INITS: dict[str, tuple[float, str, str | None] | None] = {
    **{name: _preset(name) for name in NAMED},
    **dict.fromkeys(init_choices()[len(NAMED) :]),
}
NORMALS = {"normal": "plain normal draws (PyTorch)", "truncated_normal": "cut at 2 std (Keras)"}


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
    key: str = "model",
):
    """The kernel initializer for a concrete name; ``normal`` is how ``*_normal`` draws.

    ``normal`` is ``normal`` (PyTorch) or ``truncated_normal`` (Keras' he_normal, lecun_normal,
    glorot_normal); ``variance_scaling`` holds the settings of ``init: variance_scaling``;
    ``key`` is where the config holds the model's settings.
    """
    preset = lookup(INITS, f"{key}.init", init)
    if init == PYTORCH:
        return None
    if init == "variance_scaling":
        return from_mapping(VarianceScaling, variance_scaling, f"{key}.variance_scaling")
    if preset is None:
        raise ConfigError(f"{key}.init={init!r} must be resolved first (resolve_init)")
    lookup(NORMALS, "parity.init_normal", normal)  # model.init_normal's default, parity's
    scale, mode, distribution = preset
    return VarianceScaling(scale, mode, distribution or normal)


def initialize_linear(layer: nn.Linear, initializer: VarianceScaling | None) -> None:
    """Initialize a dense layer's kernel; biases start at zero (None: PyTorch's own init)."""
    if initializer is None:
        return
    initializer(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
