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


LOSSES: dict[str, LossFn] = {
    "cross_entropy": F.cross_entropy,
    "mse": mse_on_one_hot,
}
