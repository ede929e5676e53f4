"""The one LightningModule: a classifier whose network, optimizer and schedule come from config.

Only primitive hyperparameters (dicts, lists, numbers, strings) are stored, so checkpoints load
with ``torch.load(weights_only=True)``, the default since torch 2.6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dnnlab.models import build_mlp


class Classifier(L.LightningModule):
    """Cross-entropy classifier logging loss and accuracy per stage, and ``val/acc_best``."""

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        input_shape: Sequence[int] = (28, 28),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_mlp(math.prod(input_shape), num_classes, **model)
        accuracy = {"num_classes": num_classes, "average": "micro", "validate_args": False}
        self.train_acc = MulticlassAccuracy(**accuracy)
        self.val_acc = MulticlassAccuracy(**accuracy)
        self.test_acc = MulticlassAccuracy(**accuracy)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc.update(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], loss_metric: MeanMetric,
                  acc_metric: MulticlassAccuracy, stage: str) -> None:
        x, y = batch
        logits = self(x)
        loss_metric.update(F.cross_entropy(logits, y), weight=len(y))
        acc_metric.update(logits, y)
        self.log(f"{stage}/loss", loss_metric, prog_bar=True)
        self.log(f"{stage}/acc", acc_metric, prog_bar=True)

    def on_train_start(self) -> None:
        # The sanity check's few batches must not count towards the best validation accuracy.
        self.val_acc_best.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_acc, "val")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(self.val_acc.compute())
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_acc, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self(batch[0]).softmax(dim=-1)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer, params=self.parameters())
        scheduler = self.hparams.scheduler
        if not scheduler:
            return optimizer
        schedule = instantiate(scheduler["schedule"], optimizer=optimizer)
        settings = {k: scheduler[k] for k in ("interval", "frequency", "monitor") if k in scheduler}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, **settings}}
