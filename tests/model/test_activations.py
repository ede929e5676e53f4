"""Activations: every one builds, and each behaves as its definition says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dnnlab.errors import ConfigError
from dnnlab.evaluate.plots import PLOTTED, activation_curves, plot_activations
from dnnlab.model.activations import ACTIVATIONS, build_activation

X = torch.linspace(-4, 4, 801)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_builds_and_keeps_the_shape(name: str) -> None:
    assert build_activation(name, 7)(torch.randn(3, 7)).shape == (3, 7)


def test_definitions() -> None:
    def f(name: str, **params) -> torch.Tensor:
        return build_activation(name, 1, {name: params}).eval()(X[:, None])[:, 0]

    negative = X < 0
    assert torch.allclose(f("leaky_relu", negative_slope=0.2)[negative], 0.2 * X[negative])
    assert torch.allclose(f("elu", alpha=2.0)[negative], 2.0 * torch.expm1(X[negative]))
    alpha, scale = 1.6732632423543772, 1.0507009873554805  # SELU's constants
    expected = scale * torch.where(X > 0, X, alpha * torch.expm1(X))
    assert torch.allclose(f("selu"), expected, atol=1e-6)
    assert torch.allclose(f("silu"), X * torch.sigmoid(X)) and torch.equal(f("swish"), f("silu"))
    assert torch.allclose(f("mish"), X * torch.tanh(nn.functional.softplus(X)), atol=1e-6)
    assert torch.allclose(f("gelu"), X * 0.5 * (1 + torch.erf(X / 2**0.5)), atol=1e-6)
    assert torch.equal(f("none"), X)


def test_rrelu_slope_is_random_in_training_and_the_mean_at_eval() -> None:
    act = build_activation("rrelu", 1, {"rrelu": {"lower": 0.1, "upper": 0.3}})
    x = -torch.ones(10_000)
    torch.manual_seed(0)
    slopes = -act.train()(x)
    assert 0.1 <= slopes.min() < 0.11 and 0.29 < slopes.max() <= 0.3, "uniform in [lower, upper]"
    assert torch.allclose(-act.eval()(x), torch.full_like(x, 0.2)), "the mean slope at eval"


def test_prelu_is_shared_or_per_unit_and_learns_its_slope() -> None:
    shared = build_activation("prelu", 100, {"prelu": {"shared": True, "init": 0.25}})
    per_unit = build_activation("prelu", 100, {"prelu": {"shared": False, "init": 0.0}})
    assert shared.weight.shape == (1,) and shared.weight.item() == 0.25
    assert per_unit.weight.shape == (100,) and torch.count_nonzero(per_unit.weight) == 0
    per_unit(-torch.ones(4, 100)).sum().backward()
    assert per_unit.weight.grad is not None and torch.all(per_unit.weight.grad == -4), "learned"


def test_null_settings_take_the_parity_defaults() -> None:
    params = {"leaky_relu": {"negative_slope": None}, "prelu": {"shared": None, "init": None}}
    keras = {"leaky_relu": {"negative_slope": 0.3}, "prelu": {"shared": False, "init": 0.0}}
    assert build_activation("leaky_relu", 5, params, keras).negative_slope == 0.3
    assert build_activation("leaky_relu", 5, params).negative_slope == 0.01, "PyTorch's"
    assert build_activation("prelu", 5, params, keras).weight.shape == (5,)
    assert build_activation("prelu", 5, params).weight.shape == (1,)


def test_bad_rrelu_range_is_one_clear_line() -> None:
    with pytest.raises(ConfigError, match=r"rrelu: need 0 <= lower=0.5 <= upper=0.1"):
        build_activation("rrelu", 1, {"rrelu": {"lower": 0.5, "upper": 0.1}})


def test_saturation_sigmoids_derivative_peaks_at_a_quarter() -> None:
    curves = activation_curves(PLOTTED, X)
    _, _, sigmoid_slope = curves["sigmoid"]
    assert sigmoid_slope.max().item() == pytest.approx(0.25, abs=1e-6)
    assert sigmoid_slope[0].item() < 0.02, "saturates: the derivative vanishes for large |x|"
    assert curves["tanh"][2].max().item() == pytest.approx(1.0, abs=1e-6)
    _, _, relu_slope = curves["relu"]
    assert set(relu_slope.unique().tolist()) == {0.0, 1.0}


def test_plot_writes_one_sheet(tmp_path: Path) -> None:
    path = plot_activations(tmp_path / "run" / "activations.png", ["sigmoid", "relu"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
