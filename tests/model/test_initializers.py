"""Each initializer's empirical variance against the book's formula: variance = scale / fan."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dnnlab.errors import ConfigError
from dnnlab.model import build_mlp
from dnnlab.model.initializers import (
    NAMED,
    TRUNCATED_NORMAL_STD,
    VarianceScaling,
    initialize_linear,
    make_initializer,
    resolve_init,
)

FAN_IN, FAN_OUT = 400, 600  # nn.Linear(400, 600): weight (600, 400)
FANS = {"fan_in": FAN_IN, "fan_out": FAN_OUT, "fan_avg": (FAN_IN + FAN_OUT) / 2}
# The book's table: (scale, fan) per family.
BOOK = {
    "glorot": (1, "fan_avg"),
    "xavier": (1, "fan_avg"),
    "he": (2, "fan_in"),
    "kaiming": (2, "fan_in"),
    "lecun": (1, "fan_in"),
}


def drawn(initializer) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    initialize_linear(layer, initializer)
    return layer


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("normal", ["normal", "truncated_normal"])
def test_named_initializer_variance_matches_its_formula(name: str, normal: str) -> None:
    family, distribution = name.rsplit("_", 1)
    scale, fan = BOOK[family]
    expected = scale / FANS[fan]
    layer = drawn(make_initializer(name, normal))
    weight = layer.weight
    assert weight.var().item() == pytest.approx(expected, rel=0.02)
    assert weight.mean().item() == pytest.approx(0, abs=0.01 * math.sqrt(expected))
    assert torch.count_nonzero(layer.bias) == 0, "biases start at zero"
    if distribution == "uniform":  # U(-r, r) with r = sqrt(3 * scale / fan)
        assert weight.abs().max().item() <= math.sqrt(3 * expected)
        assert weight.abs().max().item() > 0.99 * math.sqrt(3 * expected)
    elif normal == "truncated_normal":  # cut at two (pre-correction) standard deviations
        limit = 2 * math.sqrt(expected) / TRUNCATED_NORMAL_STD
        assert weight.abs().max().item() <= limit
    else:
        assert weight.abs().max().item() > 3 * math.sqrt(expected), "an untruncated normal's tail"


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform"])
def test_variance_scaling_matches_scale_over_fan(mode: str, distribution: str) -> None:
    weight = drawn(VarianceScaling(scale=2.0, mode=mode, distribution=distribution)).weight
    assert weight.var().item() == pytest.approx(2.0 / FANS[mode], rel=0.02)


def test_books_variance_scaling_example_through_the_model_config() -> None:
    # keras.initializers.VarianceScaling(scale=2., mode="fan_avg", distribution="uniform")
    settings = {"scale": 2.0, "mode": "fan_avg", "distribution": "uniform"}
    torch.manual_seed(0)
    net = build_mlp(784, 10, [300], "relu", init="variance_scaling", variance_scaling=settings)
    limit = math.sqrt(3 * 2.0 / ((784 + 300) / 2))
    assert net[1].weight.var().item() == pytest.approx(2.0 / 542, rel=0.02)
    assert net[1].weight.abs().max().item() <= limit


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        ("none", "glorot_uniform"),
        ("sigmoid", "glorot_uniform"),
        ("tanh", "glorot_uniform"),
        ("relu", "he_normal"),
        ("leaky_relu", "he_normal"),
        ("rrelu", "he_normal"),
        ("prelu", "he_normal"),
        ("elu", "he_normal"),
        ("gelu", "he_normal"),
        ("silu", "he_normal"),
        ("mish", "he_normal"),
        ("selu", "lecun_normal"),
    ],
)
def test_auto_follows_the_books_table(activation: str, expected: str) -> None:
    assert resolve_init("auto", activation) == expected


def test_default_is_pytorchs_own_or_the_parity_default() -> None:
    torch.manual_seed(0)
    own = build_mlp(784, 10, [300], "relu", init="default")
    bound = 1 / math.sqrt(784)  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias included
    assert own[1].weight.abs().max().item() <= bound and torch.count_nonzero(own[1].bias) > 0
    keras = build_mlp(784, 10, [300], "relu", init="default", default_init="glorot_uniform")
    assert keras[1].weight.var().item() == pytest.approx(1 / 542, rel=0.03)
    assert torch.count_nonzero(keras[1].bias) == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "fan_max"}, r"model.variance_scaling.mode='fan_max' is not valid; choose one"),
        ({"distribution": "cauchy"}, r"distribution='cauchy' is not valid; choose one of: normal"),
        (
            {"scale": 0},
            r"model.variance_scaling.scale=0 is out of range; expected a variance scale > 0",
        ),
    ],
)
def test_bad_variance_scaling_is_one_clear_line(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_mlp(784, 10, init="variance_scaling", variance_scaling=settings)
