"""BatchNorm and dropout placement, and the Keras-style parameter summary."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from dnnlab.callbacks.summary import ParameterSummary, parameter_counts
from dnnlab.errors import ConfigError
from dnnlab.model import build_mlp
from dnnlab.train.module import Classifier


def kinds(net: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in net]


def test_batch_norm_after_the_activation_gives_the_books_layer_order() -> None:
    net = build_mlp(784, 10, [300, 100], "relu", batch_norm="after", input_batch_norm=True)
    assert kinds(net) == [
        "Flatten", "BatchNorm1d",
        "Linear", "ReLU", "BatchNorm1d",
        "Linear", "ReLU", "BatchNorm1d",
        "Linear",
    ]  # fmt: skip
    assert all(m.bias is not None for m in net if isinstance(m, nn.Linear))


def test_batch_norm_before_the_activation_drops_the_dense_bias() -> None:
    net = build_mlp(784, 10, [300, 100], "elu", batch_norm="before")
    assert kinds(net) == [
        "Flatten",
        "Linear", "BatchNorm1d", "ELU",
        "Linear", "BatchNorm1d", "ELU",
        "Linear",
    ]  # fmt: skip
    assert net[1].bias is None and net[4].bias is None, "BN's shift replaces the bias"
    assert net[7].bias is not None, "the output layer keeps its bias"


def test_books_bn_model_counts_moving_statistics_as_non_trainable() -> None:
    # Flatten, BN, Dense(300), BN, Dense(100), BN, Dense(10) in the book: 271,346 parameters.
    net = build_mlp(784, 10, [300, 100], "relu", batch_norm="after", input_batch_norm=True)
    counts = parameter_counts(net)
    assert (counts.total, counts.trainable, counts.non_trainable) == (271_346, 268_978, 2_368)
    assert str(counts).startswith("Total params: 271,346 | Trainable params: 268,978")


def test_summary_callback_prints_and_logs_the_keras_counts(tmp_path, caplog) -> None:
    model = {"hidden": [300, 100], "batch_norm": "after", "input_batch_norm": True}
    module = Classifier(model=model, optimizer={"_target_": "torch.optim.SGD", "lr": 0.1})
    trainer = L.Trainer(logger=CSVLogger(tmp_path), enable_progress_bar=False)
    with caplog.at_level(logging.INFO):
        ParameterSummary(max_depth=1).on_fit_start(trainer, module)
    trainer.logger.save()
    assert "Non-trainable params: 2,368" in caplog.text
    logged = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "params/non_trainable" in logged and "2368" in logged


def test_batch_norm_settings_reach_the_layers() -> None:
    net = build_mlp(784, 10, [30], batch_norm="after", bn_momentum=0.01, bn_eps=1e-3)
    norm = net[3]
    assert isinstance(norm, nn.BatchNorm1d) and (norm.momentum, norm.eps) == (0.01, 1e-3)
    norm.train()(torch.full((8, 30), 5.0))
    assert torch.allclose(norm.running_mean, torch.full((30,), 0.05)), "new = 0.99 old + 0.01 batch"


@pytest.mark.parametrize(
    ("where", "positions"),
    [("all", [1, 4, 7]), ("hidden", [3, 6]), ("top", [5])],
)
def test_dropout_placement(where: str, positions: list[int]) -> None:
    net = build_mlp(784, 10, [300, 100], "relu", dropout=0.2, dropout_where=where)
    found = [i for i, m in enumerate(net) if isinstance(m, nn.Dropout)]
    assert found == positions


def test_dropout_drops_in_training_and_is_off_at_eval() -> None:
    torch.manual_seed(0)
    net = build_mlp(784, 10, [300, 100], "relu", dropout=0.5, dropout_where="hidden")
    plain = nn.Sequential(*[m for m in net if not isinstance(m, nn.Dropout)])  # same weights
    x = torch.rand(64, 28, 28)
    hidden = net[:4].train()(x)  # after the first hidden layer's dropout
    kept = (hidden != 0).float().mean().item() / (net[:3](x) != 0).float().mean().item()
    assert kept == pytest.approx(0.5, abs=0.03), "about half the active units are dropped"
    assert not torch.equal(net.train()(x), net.train()(x)), "a new mask each pass"
    assert torch.equal(net.eval()(x), plain.eval()(x)), "off at evaluation"


def test_alpha_dropout_for_selu_keeps_mean_and_variance() -> None:
    net = build_mlp(784, 10, [300], "selu", dropout=0.2, dropout_kind="auto")
    assert isinstance(net[1], nn.AlphaDropout) and isinstance(net[4], nn.AlphaDropout)
    assert isinstance(build_mlp(784, 10, [300], "relu", dropout=0.2)[1], nn.Dropout)
    torch.manual_seed(0)
    z = torch.randn(200_000)
    dropped = nn.AlphaDropout(0.2).train()(z)
    assert dropped.mean().item() == pytest.approx(0, abs=0.01)
    assert dropped.std().item() == pytest.approx(1, abs=0.01)
    assert isinstance(build_mlp(784, 10, [30], "selu", dropout=0.2, dropout_kind="standard")[1],
                      nn.Dropout)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_norm": "middle"}, r"model.batch_norm='middle' is not valid; choose one of: after"),
        (
            {"bn_momentum": 1.5},
            r"model.bn_momentum=1.5 is out of range; expected a BatchNorm momentum in \[0, 1\]",
        ),
        ({"bn_eps": 0}, r"model.bn_eps=0 is out of range; expected a BatchNorm epsilon > 0"),
        ({"bn_eps": "1e-5"}, r"model.bn_eps='1e-5' is out of range; expected a BatchNorm eps"),
        ({"dropout": True}, r"model.dropout=true is out of range; expected a dropout rate in"),
        (
            {"dropout": 1.0},
            r"model.dropout=1.0 is out of range; expected a dropout rate in \[0, 1\)",
        ),
        ({"dropout_kind": "gauss"}, r"model.dropout_kind='gauss' is not valid; choose one of: al"),
        ({"dropout_where": "out"}, r"model.dropout_where='out' is not valid; choose one of: all"),
    ],
)
def test_bad_layer_settings_are_one_clear_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_mlp(784, 10, **kwargs)
