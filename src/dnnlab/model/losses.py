"""Where the training loss is chosen: a registry from config name to ``loss(logits, target)``."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]


def mse_on_one_hot(logits: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between sigmoid outputs and one-hot targets.

    The classic all-sigmoid network of the vanishing-gradient demonstration: its output units are
    sigmoids too, and the quadratic cost's gradient carries their small derivative.
    """
    one_hot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
    return F.mse_loss(logits.sigmoid(), one_hot)


def binary_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of the one sigmoid unit of a two-class head (the book's
    ``Dense(1, activation="sigmoid")`` with ``loss="binary_cross_entropy"``).

    The head's :class:`~dnnlab.model.mlp.BinaryLogits` passes the unit's logit ``z`` on as the
    two-class logits ``[0, z]`` (their softmax is ``[1 - sigmoid(z), sigmoid(z)]``), so accuracy
    and probabilities are computed as for any head; the loss reads ``z`` back.
    """
    return F.binary_cross_entropy_with_logits(logits[:, 1], target.to(logits.dtype))


LOSSES: dict[str, LossFn] = {
    "cross_entropy": F.cross_entropy,
    "mse": mse_on_one_hot,
    "binary_cross_entropy": binary_cross_entropy,
}
# Losses whose model ends in one sigmoid unit (a two-class task) instead of one unit per class.
SIGMOID_HEAD_LOSSES = ("binary_cross_entropy",)
