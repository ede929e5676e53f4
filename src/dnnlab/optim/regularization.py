"""Weight penalties added to the loss, and the max-norm constraint applied after each step.

Both act on the kernels of the Dense layers (``nn.Linear`` weights), as Keras'
``kernel_regularizer`` / ``kernel_constraint``: the penalties on every Dense layer as in the
book; max-norm on the hidden ones only (the book's output layer is a plain ``Dense``), and only
on kernels the optimizer updates (Keras applies a constraint after the update of its variable,
so frozen layers stay exactly as they are).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dnnlab.errors import ConfigError
from dnnlab.ranges import PENALTY, or_null, positive
from dnnlab.settings import check_fields, from_mapping, setting

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


@dataclass(frozen=True)
class Regularization:
    """``l1 * sum|w| + l2 * sum w^2`` over the kernels; max-norm ``r`` on each unit's weights.

    The settings of the ``regularization`` group; ``key`` is where the config holds them (the
    errors name ``<key>.<setting>``).
    """

    l1: float = setting(0.0, rule=PENALTY, doc="adds l1 * sum(|w|) over the kernels to the loss")
    l2: float = setting(0.0, rule=PENALTY, doc="adds l2 * sum(w^2) over the kernels to the loss")
    max_norm: float | None = setting(
        None,
        rule=or_null(positive("a max-norm radius"), "no constraint"),
        doc="after every step, each unit's weight vector rescaled to norm <= max_norm",
    )
    max_norm_axis: str = setting(
        "incoming", choices=MAX_NORM_AXES, doc="each unit's incoming weights, or outgoing"
    )
    max_norm_biases: bool = setting(
        False, boolean=True, doc="the bias counts in the unit's incoming vector"
    )
    max_norm_head: bool = setting(False, boolean=True, doc="the output layer is constrained too")
    max_norm_rescale: str = setting(
        "over_radius", choices=MAX_NORM_RESCALES, doc="which vectors max-norm rescales"
    )
    key: InitVar[str] = "regularization"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)
        if self.max_norm_biases and self.max_norm_axis != "incoming":
            raise ConfigError(f"{key}.max_norm_biases=true needs {key}.max_norm_axis=incoming")

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None, key: str | None = None) -> Regularization:
        return from_mapping(cls, node, key)

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
