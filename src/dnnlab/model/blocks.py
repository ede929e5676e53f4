"""BatchNorm and dropout choices: where they sit in a hidden block, and their validation.

A hidden block is ``Dense -> activation`` with ``batch_norm: after`` adding ``-> BN`` and
``batch_norm: before`` giving ``Dense (no bias) -> BN -> activation`` (BN's shift replaces the
bias, as in the book); dropout, when on, follows the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnlab.errors import invalid_choice
from dnnlab.ranges import DROPOUT_RATE, Rule, check_number, interval, positive

BATCH_NORM_PLACES = ("none", "before", "after")
# What BN's running variance averages: the batch variance with Bessel's correction (PyTorch)
# or without it (Keras, whose moving variance is the one the batch was normalized with).
MOVING_VARIANCES = ("unbiased", "biased")
DROPOUT_KINDS = ("auto", "standard", "alpha")
# all: the input and every hidden layer (the book's example); hidden: every hidden layer;
# top: only the last hidden layer (the book: "usually only the top one to three layers").
DROPOUT_PLACES = ("all", "hidden", "top")
# BatchNorm setting -> its rule, checked here and by dnnlab.app.checks (model.bn_<key>, and the
# parity defaults that fill them in) before any data is read; dropout follows DROPOUT_RATE.
RULES: dict[str, Rule] = {
    "bn_momentum": interval("a BatchNorm momentum", 0, 1, "[]"),
    "bn_eps": positive("a BatchNorm epsilon"),
}


class BiasedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm whose running variance averages the biased batch variance, as Keras'
    ``moving_variance`` does; normalization and everything else are ``nn.BatchNorm1d``'s, and
    so are the state_dict keys (checkpoints and transfer see the same layer)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.track_running_stats and self.running_mean is not None):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = self.momentum
            if factor is None:  # cumulative moving average, as nn.BatchNorm1d
                factor = 1.0 / float(self.num_batches_tracked)
            mean = x.mean(dim=dims)
            variance = x.var(dim=dims, correction=0)
            self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
            self.running_var.mul_(1 - factor).add_(variance, alpha=factor)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


@dataclass(frozen=True)
class BatchNormChoice:
    place: str = "none"
    on_input: bool = False
    momentum: float = 0.1  # PyTorch's convention: new = (1 - momentum) * old + momentum * batch
    eps: float = 1e-5
    moving_variance: str = "unbiased"

    def __post_init__(self) -> None:
        if self.place not in BATCH_NORM_PLACES:
            raise invalid_choice("model.batch_norm", self.place, BATCH_NORM_PLACES)
        if self.moving_variance not in MOVING_VARIANCES:
            raise invalid_choice("model.bn_moving_variance", self.moving_variance, MOVING_VARIANCES)
        check_number("model.bn_momentum", self.momentum, RULES["bn_momentum"])
        check_number("model.bn_eps", self.eps, RULES["bn_eps"])

    def layer(self, features: int) -> nn.BatchNorm1d:
        kind = BiasedBatchNorm1d if self.moving_variance == "biased" else nn.BatchNorm1d
        return kind(features, eps=self.eps, momentum=self.momentum)


@dataclass(frozen=True)
class DropoutChoice:
    rate: float = 0.0
    kind: str = "auto"
    place: str = "all"

    def __post_init__(self) -> None:
        check_number("model.dropout", self.rate, DROPOUT_RATE)
        if self.kind not in DROPOUT_KINDS:
            raise invalid_choice("model.dropout_kind", self.kind, DROPOUT_KINDS)
        if self.place not in DROPOUT_PLACES:
            raise invalid_choice("model.dropout_where", self.place, DROPOUT_PLACES)

    def layer(self, activation: str) -> nn.Module:
        """Alpha dropout keeps a SELU net self-normalizing; ``auto`` picks it for SELU."""
        alpha = self.kind == "alpha" or (self.kind == "auto" and activation == "selu")
        return nn.AlphaDropout(self.rate) if alpha else nn.Dropout(self.rate)

    def applies(self, position: int, num_hidden: int) -> bool:
        """Whether dropout follows layer ``position``: 0 is the input, 1..num_hidden hidden."""
        if self.rate == 0:
            return False
        if self.place == "all":
            return True
        if self.place == "hidden":
            return position >= 1
        return position == num_hidden
