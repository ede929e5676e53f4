"""Gradient clipping between backward and the optimizer step (manual optimization).

Lightning's ``clip_gradients`` does ``value`` and global ``norm`` (and unscales under mixed
precision); ``clipnorm`` is Keras' per-parameter clipping, which Lightning lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch.optim import Optimizer

from dnnlab.building import check_arguments
from dnnlab.errors import invalid_choice
from dnnlab.ranges import check_number, positive

CLIPPING_KINDS = ("none", "value", "norm", "clipnorm")
# clipping.threshold, checked here and by dnnlab.app.checks before any data is read.
THRESHOLD = positive("a clipping threshold")


class GradientClipping:
    """Clip gradients by ``kind``: none, value, norm (global) or clipnorm (each parameter)."""

    def __init__(self, kind: str = "none", threshold: float | None = None) -> None:
        if kind not in CLIPPING_KINDS:
            raise invalid_choice("clipping.kind", kind, CLIPPING_KINDS)
        if kind != "none":  # clipping.kind=none ignores the threshold
            check_number("clipping.threshold", threshold, THRESHOLD)
        self.kind, self.threshold = kind, threshold

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> GradientClipping:
        check_arguments(node or {}, "clipping", cls)
        return cls(**dict(node or {}))

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
