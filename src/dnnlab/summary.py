"""The model summary with Keras' parameter counts, so the book's numbers can be checked.

Keras counts BatchNorm's moving mean and variance as non-trainable parameters (the book's BN
model: 271,346 total, 268,978 trainable, 2,368 non-trainable); PyTorch keeps them as buffers,
which Lightning's summary leaves out. This summary counts them as Keras does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dnnlab.scalars import AFTER_CURVES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParameterCounts:
    trainable: int
    non_trainable: int

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    def __str__(self) -> str:
        return (
            f"Total params: {self.total:,} | Trainable params: {self.trainable:,} | "
            f"Non-trainable params: {self.non_trainable:,} (BatchNorm moving statistics counted)"
        )


def parameter_counts(module: nn.Module) -> ParameterCounts:
    """Trainable parameters; frozen parameters plus BN running mean/variance are non-trainable."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    moving = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.running_mean is not None
    )
    return ParameterCounts(trainable, frozen + moving)


class ParameterSummary(LightningModelSummary):
    """Lightning's layer table, with totals counted as Keras does, logged with exact numbers."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._max_depth or not trainer.is_global_zero:
            return
        table = self._summary(trainer, pl_module)
        counts = parameter_counts(pl_module)
        self.summarize(
            table._get_summary_data(),
            counts.total,
            counts.trainable,
            table.model_size,
            table.total_training_modes,
            total_flops=getattr(table, "total_flops", 0),
            **self._summarize_kwargs,
        )
        log.info(str(counts))
        metrics = {
            f"{AFTER_CURVES}params/total": counts.total,
            f"{AFTER_CURVES}params/trainable": counts.trainable,
            f"{AFTER_CURVES}params/non_trainable": counts.non_trainable,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=0)
