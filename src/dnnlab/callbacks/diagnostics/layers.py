"""Which modules of a network are its layers, and statistics of their activations on a batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

SaturationTest = Callable[[Tensor, float], Tensor]

# Activations with flat tails, and the test that an output sits within ``eps`` of an asymptote
# (where the derivative is about ``eps`` or less and the gradient through the unit vanishes).
SATURATION: dict[type[nn.Module], SaturationTest] = {
    nn.Sigmoid: lambda y, eps: (y < eps) | (y > 1 - eps),
    nn.Tanh: lambda y, eps: y.abs() > 1 - eps,
}
# Activations with a hard zero: a unit whose pre-activation is <= 0 for every example outputs 0
# and passes no gradient (a dead ReLU). LeakyReLU, PReLU, ELU, SELU, GELU, ... always pass some.
DYING: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


def activation_layers(module: nn.Module) -> list[nn.Module]:
    """The activation modules (``torch.nn`` activations) in forward order: one per hidden layer."""
    return [m for m in module.modules() if type(m).__module__ == nn.modules.activation.__name__]


def layer_names(count: int) -> list[str]:
    """``layer_1`` ... ``layer_<count>``, zero-padded so that TensorBoard sorts them by depth."""
    width = len(str(count))
    return [f"layer_{i:0{width}d}" for i in range(1, count + 1)]


@torch.no_grad()
def activation_stats(
    pre: Tensor, post: Tensor, saturated: SaturationTest | None, eps: float, dies: bool = True
) -> Tensor:
    """``[mean, std, dead fraction, saturated fraction]`` of one layer on one batch, on the device.

    A unit is dead on the batch when its pre-activation is <= 0 for every example (a ReLU outputs
    0 and passes no gradient; NaN unless ``dies``: an activation without a hard zero); the
    saturated fraction counts outputs in the flat tails (NaN for an activation without them).
    """
    pre, post = pre.flatten(1).float(), post.flatten(1).float()
    dead = (pre <= 0).all(dim=0).float().mean()
    if not dies:
        dead = torch.full_like(dead, torch.nan)
    tails = saturated(post, eps).float().mean() if saturated else torch.full_like(dead, torch.nan)
    return torch.stack([post.mean(), post.std(), dead, tails])
