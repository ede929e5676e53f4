"""The parity switch, the 100-layer experiments and one-line errors from the command line."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import requires_fashion, train
from dnnlab.app.compose import compose_config
from dnnlab.model import build_mlp
from dnnlab.model.initializers import TRUNCATED_NORMAL_STD
from dnnlab.train.run import run


def model_from(overrides: list[str]) -> nn.Sequential:
    cfg = compose_config(overrides)
    return build_mlp(784, 10, **OmegaConf.to_container(cfg.model, resolve=True))


def first(net: nn.Sequential, kind: type[nn.Module]) -> nn.Module:
    return next(m for m in net if isinstance(m, kind))


@pytest.mark.parametrize(
    ("parity", "momentum", "eps", "slope", "prelu_shape", "prelu_start"),
    [("pytorch", 0.1, 1e-5, 0.01, (1,), 0.25), ("keras", 0.01, 1e-3, 0.3, (300,), 0.0)],
)
def test_parity_picks_the_library_defaults(
    parity: str, momentum: float, eps: float, slope: float, prelu_shape: tuple, prelu_start: float
) -> None:
    bn = first(model_from([f"parity={parity}", "model.batch_norm=after"]), nn.BatchNorm1d)
    assert (bn.momentum, bn.eps) == (momentum, eps)
    unset = "model.activation_params.leaky_relu.negative_slope=null"
    leaky = first(model_from([f"parity={parity}", unset]), nn.LeakyReLU)
    assert leaky.negative_slope == slope
    book = first(model_from([f"parity={parity}"]), nn.LeakyReLU)
    assert book.negative_slope == 0.2, "the book's explicit alpha=0.2 stays"
    prelu = first(model_from([f"parity={parity}", "model.activation=prelu"]), nn.PReLU)
    assert prelu.weight.shape == prelu_shape and torch.all(prelu.weight == prelu_start)


def test_keras_parity_draws_he_normal_truncated_and_default_init_glorot_uniform() -> None:
    torch.manual_seed(0)
    keras = model_from(["parity=keras", "model.hidden=[1000]"])[1].weight
    std = math.sqrt(2 / 784)
    assert keras.var().item() == pytest.approx(2 / 784, rel=0.02), "same variance"
    assert keras.abs().max().item() <= 2 * std / TRUNCATED_NORMAL_STD, "cut at two std"
    torch.manual_seed(0)
    assert model_from(["model.hidden=[1000]"])[1].weight.abs().max().item() > 3 * std
    default = model_from(["parity=keras", "model.init=default", "model.hidden=[1000]"])[1]
    limit = math.sqrt(6 / (784 + 1000))
    assert default.weight.abs().max().item() <= limit and torch.count_nonzero(default.bias) == 0


def hidden_statistics(experiment: str, seed: int = 0) -> list[tuple[float, float]]:
    torch.manual_seed(seed)
    net = model_from([f"experiment={experiment}"])
    h = torch.randn(1000, 784)  # standardized inputs
    statistics = []
    for layer in net:
        h = layer(h)
        if isinstance(layer, (nn.SELU, nn.ReLU)):
            statistics.append((h.mean().item(), h.std().item()))
    return statistics


def test_selu_100_layers_self_normalizes_through_every_layer() -> None:
    cfg = compose_config(["experiment=selu_100_layers"])
    assert cfg.model.hidden == [100] * 100 and cfg.data.standardize
    assert (cfg.model.activation, cfg.model.init) == ("selu", "lecun_normal")
    statistics = hidden_statistics("selu_100_layers")
    assert len(statistics) == 100
    assert all(abs(mean) < 0.15 and 0.8 < std < 1.2 for mean, std in statistics)


def test_relu_100_layers_is_the_he_counterpart_and_drifts() -> None:
    cfg = compose_config(["experiment=relu_100_layers"])
    assert (cfg.model.activation, cfg.model.init) == ("relu", "he_normal")
    assert cfg.model.hidden == [100] * 100
    _, last_std = hidden_statistics("relu_100_layers")[-1]
    assert not 0.8 < last_std < 1.2, "no self-normalization: the scale wanders with depth"


@pytest.mark.slow
@requires_fashion
def test_selu_100_layers_trains_where_relu_he_does_not_yet(make_config) -> None:
    def short(experiment: str) -> dict[str, float]:
        overrides = [
            f"experiment={experiment}",
            "optimizer.lr=1e-3",  # the experiment's (the book's), not the quick runs' 0.05
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=80",  # optimizer steps
            "trainer.num_sanity_val_steps=0",
            "callbacks.model_checkpoint=null",
            "logger=none",
            "test=false",
        ]
        return run(make_config(overrides, run=experiment))

    selu, relu = short("selu_100_layers"), short("relu_100_layers")
    assert selu["val/acc"] > 0.25 and selu["val/loss"] < 2.0, "SELU learns from the first steps"
    assert relu["val/loss"] > selu["val/loss"] + 0.2, "ReLU + He is still near chance"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.batch_norm=middle", "model.batch_norm='middle' is not valid; choose one of: after"),
        ("clipping.kind=l3", "clipping.kind='l3' is not valid; choose one of: clipnorm, none"),
        ("model.init=he", "model.init='he' is not valid; choose one of: auto, default"),
    ],
)
def test_bad_choice_on_the_command_line_is_one_line(tmp_path, override: str, message: str) -> None:
    result = train(tmp_path, override, "data.download=false")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
