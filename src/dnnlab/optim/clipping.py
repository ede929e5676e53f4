"""Gradient clipping between backward and the optimizer step (manual optimization).

Lightning's ``clip_gradients`` does ``value`` and global ``norm`` (and unscales under mixed
precision); ``clipnorm`` is Keras' per-parameter clipping, which Lightning lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from typing import Any

import lightning as L
import torch
from torch.optim import Optimizer

from dnnlab.ranges import positive
from dnnlab.settings import check_fields, from_mapping, setting

CLIPPING_KINDS = {
    "none": "no clipping",
    "value": "each gradient component to [-threshold, threshold] (Keras' clipvalue)",
    "norm": "all gradients together to global L2 norm <= threshold (Keras' global_clipnorm)",
    "clipnorm": "each parameter's gradient to L2 norm <= threshold (Keras' clipnorm)",
}


@dataclass(frozen=True)
class ClippingSettings:
    """The ``clipping`` group: how gradients are clipped, and at what threshold."""

    kind: str = setting("none", choices=CLIPPING_KINDS, doc="what is clipped")
    threshold: float | None = setting(
        None, rule=positive("a clipping threshold"), doc="the bound (unused by kind none)"
    )
    key: InitVar[str] = "clipping"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key, skip=("threshold",) if self.kind == "none" else ())


class GradientClipping:
    """Clip gradients by ``kind``: none, value, norm (global) or clipnorm (each parameter)."""

    def __init__(self, settings: ClippingSettings | None = None) -> None:
        settings = settings or ClippingSettings()
        self.kind, self.threshold = settings.kind, settings.threshold

    @classmethod
    def from_config(
        cls, node: Mapping[str, Any] | None, key: str | None = None
    ) -> GradientClipping:
        return cls(from_mapping(ClippingSettings, node, key))

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def __call__(self, module: L.LightningModule, optimizer: Optimizer) -> None:
        if self.kind == "clipnorm":
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None:
                        torch.nn.utils.clip_grad_norm_([param], self.threshold)
        elif self.kind != "none":
            module.clip_gradients(
                optimizer, gradient_clip_val=self.threshold, gradient_clip_algorithm=self.kind
            )
