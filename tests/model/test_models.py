"""The MLP builder and its registries."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dnnlab.errors import ConfigError
from dnnlab.model import build_mlp


def test_book_mlp_shape_and_parameters() -> None:
    net = build_mlp(
        784,
        10,
        hidden=[300, 100],
        activation="leaky_relu",
        activation_params={"leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 2.0}},
        init="he_normal",
    )
    assert net(torch.zeros(5, 28, 28)).shape == (5, 10)
    assert sum(p.numel() for p in net.parameters()) == 266_610
    assert isinstance(net[2], nn.LeakyReLU) and net[2].negative_slope == 0.2
    assert torch.count_nonzero(net[1].bias) == 0, "biases start at zero"


def test_he_normal_variance_matches_two_over_fan_in() -> None:
    torch.manual_seed(0)
    net = build_mlp(784, 10, hidden=[1000], activation="relu", init="he_normal")
    assert net[1].weight.var().item() == pytest.approx(2 / 784, rel=0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"activation": "relux"},
            r"model.activation='relux' is not valid; choose one of: elu, gelu, leaky_relu",
        ),
        (
            {"init": "he"},
            r"model.init='he' is not valid; choose one of: auto, default, glorot_normal",
        ),
        ({"hidden": []}, r"model.hidden=\[\] must list at least one hidden layer size"),
        ({"hidden": [300, 0]}, r"model.hidden\[1\]=0 is out of range; expected a layer size"),
        (
            {"activation": "elu", "activation_params": {"elu": {"slope": 1}}},
            r"model.activation_params.elu=\{'slope': 1\} do not fit activation 'elu'",
        ),
    ],
)
def test_bad_model_config_is_one_clear_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_mlp(784, 10, **kwargs)
