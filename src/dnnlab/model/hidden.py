"""BatchNorm and dropout choices: where they sit in a hidden layer, and their validation.

A hidden layer is ``Dense -> activation`` with ``batch_norm: after`` adding ``-> BN`` and
``batch_norm: before`` giving ``Dense (no bias) -> BN -> activation`` (BN's shift replaces the
bias, as in the book); dropout, when on, follows the layer.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnlab.ranges import DROPOUT_RATE, interval, positive
from dnnlab.settings import check_fields, setting

BATCH_NORM_PLACES = ("none", "before", "after")
# What BN's running variance averages: the batch variance with Bessel's correction (PyTorch)
# or without it (Keras, whose moving variance is the one the batch was normalized with).
MOVING_VARIANCES = ("unbiased", "biased")
DROPOUT_KINDS = ("auto", "standard", "alpha")
# all: the input and every hidden layer (the book's example); hidden: every hidden layer;
# top: only the last hidden layer (the book: "usually only the top one to three layers").
DROPOUT_PLACES = ("all", "hidden", "top")
# What holds no weights and is stochastic only in training: every dropout module of torch.
DROPOUT_TYPES = (nn.modules.dropout._DropoutNd,)  # Dropout, AlphaDropout, FeatureAlphaDropout


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
    """The model's BatchNorm settings (``name``: their config key)."""

    place: str = setting(
        "none", choices=BATCH_NORM_PLACES, name="batch_norm", doc="where BN sits in a hidden layer"
    )
    on_input: bool = setting(False, name="input_batch_norm", doc="BN on the flattened input")
    # PyTorch's convention: new = (1 - momentum) * old + momentum * batch
    momentum: float = setting(
        0.1,
        rule=interval("a BatchNorm momentum", 0, 1, "[]"),
        name="bn_momentum",
        doc="weight of the batch in BN's running statistics (PyTorch's convention)",
    )
    eps: float = setting(
        1e-5, rule=positive("a BatchNorm epsilon"), name="bn_eps", doc="added to the variance"
    )
    moving_variance: str = setting(
        "unbiased",
        choices=MOVING_VARIANCES,
        name="bn_moving_variance",
        doc="what BN's running variance averages",
    )
    key: InitVar[str] = "model"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)

    def layer(self, features: int) -> nn.BatchNorm1d:
        kind = BiasedBatchNorm1d if self.moving_variance == "biased" else nn.BatchNorm1d
        return kind(features, eps=self.eps, momentum=self.momentum)


@dataclass(frozen=True)
class DropoutChoice:
    """The model's dropout settings (``name``: their config key)."""

    rate: float = setting(0.0, rule=DROPOUT_RATE, name="dropout", doc="the rate; 0: off")
    kind: str = setting(
        "auto", choices=DROPOUT_KINDS, name="dropout_kind", doc="alpha (SELU), standard or auto"
    )
    place: str = setting(
        "all", choices=DROPOUT_PLACES, name="dropout_where", doc="which layers dropout follows"
    )
    key: InitVar[str] = "model"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)

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
