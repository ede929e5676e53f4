"""BatchNorm and dropout choices: where they sit in a hidden block, and their validation.

A hidden block is ``Dense -> activation`` with ``batch_norm: after`` adding ``-> BN`` and
``batch_norm: before`` giving ``Dense (no bias) -> BN -> activation`` (BN's shift replaces the
bias, as in the book); dropout, when on, follows the block.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dnnlab.errors import invalid_choice
from dnnlab.ranges import DROPOUT_RATE, Rule, check_number, interval, positive

BATCH_NORM_PLACES = ("none", "before", "after")
DROPOUT_KINDS = ("auto", "standard", "alpha")
# all: the input and every hidden layer (the book's example); hidden: every hidden layer;
# top: only the last hidden layer (the book: "usually only the top one to three layers").
DROPOUT_PLACES = ("all", "hidden", "top")
# BatchNorm setting -> its rule, checked here and by dnnlab.validation (model.bn_<key>, and the
# parity defaults that fill them in) before any data is read; dropout follows DROPOUT_RATE.
RULES: dict[str, Rule] = {
    "bn_momentum": interval("a BatchNorm momentum", 0, 1, "[]"),
    "bn_eps": positive("a BatchNorm epsilon"),
}


@dataclass(frozen=True)
class BatchNormChoice:
    place: str = "none"
    on_input: bool = False
    momentum: float = 0.1  # PyTorch's convention: new = (1 - momentum) * old + momentum * batch
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.place not in BATCH_NORM_PLACES:
            raise invalid_choice("model.batch_norm", self.place, BATCH_NORM_PLACES)
        check_number("model.bn_momentum", self.momentum, RULES["bn_momentum"])
        check_number("model.bn_eps", self.eps, RULES["bn_eps"])

    def layer(self, features: int) -> nn.BatchNorm1d:
        return nn.BatchNorm1d(features, eps=self.eps, momentum=self.momentum)


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
