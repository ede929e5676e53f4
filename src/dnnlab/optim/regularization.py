"""Weight penalties added to the loss, and the max-norm constraint applied after each step.

Both act on the kernels of the Dense layers (``nn.Linear`` weights), as Keras'
``kernel_regularizer`` / ``kernel_constraint``: the penalties on every Dense layer as in the
book; max-norm on the hidden ones only (the book's output layer is a plain ``Dense``), and only
on kernels the optimizer updates (Keras applies a constraint after the update of its variable,
so frozen layers stay exactly as they are).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dnnlab.building import check_arguments
from dnnlab.errors import ConfigError, invalid_choice
from dnnlab.ranges import PENALTY, Rule, check_all, or_null, positive

MAX_NORM_AXES = ("incoming", "outgoing")
# over_radius: only vectors longer than r are scaled (torch's renorm); all: every vector is
# scaled by min(norm, r) / (norm + 1e-7), as Keras' MaxNorm (shorter ones shrink by ~1e-7/norm).
MAX_NORM_RESCALES = ("over_radius", "all")
KERAS_EPSILON = 1e-7  # keras.backend.epsilon()


def max_norm(matrix: Tensor, dim: int, radius: float, rescale: str) -> Tensor:
    """``matrix`` with each slice along ``dim`` (a row for dim 0) at L2 norm <= ``radius``."""
    if rescale == "over_radius":
        return matrix.renorm(2, dim, radius)
    others = [d for d in range(matrix.dim()) if d != dim]
    norms = matrix.square().sum(dim=others, keepdim=True).sqrt()
    return matrix * (norms.clamp(max=radius) / (KERAS_EPSILON + norms))


# regularization.<key> -> its rule, checked here and by dnnlab.app.checks before any data is read.
RULES: dict[str, Rule] = {
    "l1": PENALTY,
    "l2": PENALTY,
    "max_norm": or_null(positive("a max-norm radius"), "no constraint"),
}


@dataclass(frozen=True)
class Regularization:
    """``l1 * sum|w| + l2 * sum w^2`` over the kernels; max-norm ``r`` on each unit's weights."""

    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None
    max_norm_axis: str = "incoming"
    max_norm_biases: bool = False
    max_norm_head: bool = False
    max_norm_rescale: str = "over_radius"

    def __post_init__(self) -> None:
        check_all("regularization", RULES, {name: getattr(self, name) for name in RULES})
        for name in ("max_norm_biases", "max_norm_head"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"regularization.{name}={getattr(self, name)!r} must be true or false"
                )
        if self.max_norm_rescale not in MAX_NORM_RESCALES:
            raise invalid_choice(
                "regularization.max_norm_rescale", self.max_norm_rescale, MAX_NORM_RESCALES
            )
        if self.max_norm_axis not in MAX_NORM_AXES:
            raise invalid_choice("regularization.max_norm_axis", self.max_norm_axis, MAX_NORM_AXES)
        if self.max_norm_biases and self.max_norm_axis != "incoming":
            raise ConfigError(
                "regularization.max_norm_biases=true needs regularization.max_norm_axis=incoming"
            )

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> Regularization:
        check_arguments(node or {}, "regularization", cls)
        return cls(**dict(node or {}))

    @property
    def penalizes(self) -> bool:
        return self.l1 > 0 or self.l2 > 0

    def penalty(self, layers: list[nn.Linear]) -> Tensor:
        """The term added to the loss (Keras' definition: no 1/2 factor)."""
        total = torch.zeros((), device=layers[0].weight.device)
        for layer in layers:
            if self.l1:
                total = total + self.l1 * layer.weight.abs().sum()
            if self.l2:
                total = total + self.l2 * layer.weight.square().sum()
        return total

    @torch.no_grad()
    def constrain(self, layers: list[nn.Linear]) -> None:
        """Rescale each weight vector whose L2 norm exceeds ``max_norm`` down to it.

        ``layers`` ends with the output layer, which only ``max_norm_head`` constrains; frozen
        kernels (``requires_grad`` off) are left alone.
        """
        if self.max_norm is None:
            return
        for layer in layers if self.max_norm_head else layers[:-1]:
            if not layer.weight.requires_grad:
                continue
            radius, rescale = self.max_norm, self.max_norm_rescale
            if self.max_norm_axis == "outgoing":  # each input's weights to all units: a column
                layer.weight.copy_(max_norm(layer.weight, 1, radius, rescale))
            elif self.max_norm_biases and layer.bias is not None:
                joint = torch.cat([layer.weight, layer.bias[:, None]], dim=1)
                joint = max_norm(joint, 0, radius, rescale)
                layer.weight.copy_(joint[:, :-1])
                layer.bias.copy_(joint[:, -1])
            elif rescale == "over_radius":  # each unit's incoming weights: a row of (out, in)
                layer.weight.renorm_(2, 0, radius)
            else:
                layer.weight.copy_(max_norm(layer.weight, 0, radius, rescale))
