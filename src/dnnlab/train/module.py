"""The one LightningModule: a classifier whose network, optimizer and schedule come from config.

Only primitive hyperparameters (dicts, lists, numbers, strings) are stored, so checkpoints load
with ``torch.load(weights_only=True)``, the default since torch 2.6.

Training uses Lightning's manual optimization so that one Lightning batch can carry a *block* of
several mini-batches (``data.steps_per_block``): :mod:`dnnlab.train.blocks` runs a block's
optimizer steps, each through the backward and optimizer-step hooks of callbacks and counted
towards ``global_step``; this module does the model's part of each step (the objective, clipping,
max-norm, running totals, logging and per-step schedules).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dnnlab.building import check_arguments
from dnnlab.console import log_epoch
from dnnlab.errors import lookup
from dnnlab.model import build_mlp, dense_layers
from dnnlab.model.losses import LOSSES, SIGMOID_HEAD_LOSSES
from dnnlab.model.mlp import PASSED
from dnnlab.optim.clipping import GradientClipping
from dnnlab.optim.optimizers import build_optimizer, check_optimizer
from dnnlab.optim.regularization import Regularization
from dnnlab.optim.schedules import build_schedule, check_scheduler
from dnnlab.scalars import log_scalars
from dnnlab.train.blocks import BlockTraining, train_block

Batch = tuple[Tensor, Tensor]


class TrainingTotals(nn.Module):
    """Sums of loss, correct predictions and samples, kept on the device without a host sync.

    torchmetrics' ``update`` costs ~50 us per call in argument handling, about 12% of a CPU step of
    the book's MLP. Here a step only keeps its loss and predicted classes; ``flush`` reduces them
    with a handful of tensor operations per block of steps.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(3, dtype=torch.float64), persistent=False)
        self._logged = (0.0, 0.0, 0.0)  # sums at the last read of the running values
        self._pending: list[tuple[Tensor, Tensor, Tensor]] = []

    def update(self, loss: Tensor, logits: Tensor, target: Tensor) -> None:
        self._pending.append((loss.detach(), logits.detach().argmax(dim=-1), target))

    @torch.no_grad()
    def flush(self) -> None:
        if not self._pending:
            return
        losses, predictions, targets = zip(*self._pending, strict=True)
        sizes = torch.tensor([len(t) for t in targets], device=self.sums.device)
        loss_sum = (torch.stack(losses).double() * sizes).sum()
        correct = torch.cat(predictions).eq(torch.cat(targets)).sum()
        self.sums.add_(torch.stack([loss_sum, correct.double(), sizes.sum().double()]))
        self._pending.clear()

    def since_last_read(self) -> tuple[float, float]:
        """Mean loss and accuracy since the previous call (one host sync)."""
        self.flush()
        now = tuple(self.sums.tolist())
        loss, correct, count = (a - b for a, b in zip(now, self._logged, strict=True))
        self._logged = now
        return loss / max(count, 1), correct / max(count, 1)

    def state(self) -> list[float]:
        """Sums and last-read sums as plain floats, for a checkpoint taken mid-epoch."""
        self.flush()
        return [*self.sums.tolist(), *self._logged]

    def load_state(self, values: Sequence[float]) -> None:
        self.sums.copy_(torch.tensor(values[:3], dtype=torch.float64))
        self._logged = tuple(values[3:6])

    def compute_and_reset(self) -> tuple[Tensor, Tensor]:
        """Mean loss and accuracy of the epoch, as tensors for ``self.log(sync_dist=True)``."""
        self.flush()
        count = self.sums[2].clamp_min(1)
        result = (self.sums[0] / count).float(), (self.sums[1] / count).float()
        self.sums.zero_()
        self._logged = (0.0, 0.0, 0.0)
        return result


class Classifier(BlockTraining, L.LightningModule):
    """Classifier logging loss and accuracy per stage, and ``val/acc_best``.

    ``loss`` names an entry of :data:`dnnlab.model.losses.LOSSES` (cross-entropy by default).
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        input_shape: Sequence[int] = (28, 28),
        num_classes: int = 10,
        regularization: dict[str, Any] | None = None,
        clipping: dict[str, Any] | None = None,
        loss: str = "cross_entropy",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_optimizer(optimizer)  # fail before any data is loaded; built in configure_optimizers
        if scheduler:
            check_scheduler(scheduler)
        self.automatic_optimization = False
        self.loss_fn = lookup(LOSSES, "loss", loss)
        check_arguments(model, "model", build_mlp, passed=PASSED)
        sigmoid_head = loss in SIGMOID_HEAD_LOSSES
        self.net = build_mlp(
            math.prod(input_shape), num_classes, sigmoid_head=sigmoid_head, **model
        )
        self.regularization = Regularization.from_config(regularization)
        self.clipping = GradientClipping.from_config(clipping)
        self.dense = dense_layers(self.net)  # a plain list: the kernels penalties and max-norm see
        self._penalty_sum, self._penalty_steps = 0.0, 0  # since the last logged point
        accuracy = {"num_classes": num_classes, "average": "micro", "validate_args": False}
        self.train_totals = TrainingTotals()
        self.val_acc = MulticlassAccuracy(**accuracy)
        self.test_acc = MulticlassAccuracy(**accuracy)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self._compiled_losses: Any = None  # compile_step(): forward, loss and penalty as one graph
        self._compiled_updates: dict[int, Any] = {}  # id(optimizer) -> its compiled step

    def compile_step(self) -> None:
        """``torch.compile`` the training step between the per-step hooks: the forward, the
        loss and the penalty as one graph (with its backward, which AOTAutograd compiles
        with it), and the optimizer's update with the max-norm constraint that follows it as
        another. The hooks (divergence monitor, diagnostics, clipping) still run between them
        as in eager mode; the network's own ``forward`` is compiled for evaluation.

        The update is compiled only on the direct step path (:mod:`dnnlab.train.blocks`) and
        without a schedule, whose changing learning rate would recompile it.

        torch's compile caches are cleared first: torch recompiles these functions for every
        new model and optimizer and, past its limit of recompilations per function, runs them
        eagerly, so the later runs of one process (a sweep on the basic launcher) would train
        eagerly without a word.
        """
        torch.compiler.reset()
        self._compiled_losses = torch.compile(self._losses)
        self.net.forward = torch.compile(self.net.forward)

    def compiled_update(self, optimizer: Optimizer) -> Any:
        """The compiled ``optimizer.step`` + max-norm of :meth:`compile_step`, or ``None``."""
        if self._compiled_losses is None or self.hparams.scheduler:
            return None
        compiled = self._compiled_updates.get(id(optimizer))
        if compiled is None:
            dense, regularization = self.dense, self.regularization

            def update() -> None:
                optimizer.step()
                regularization.constrain(dense)

            compiled = self._compiled_updates[id(optimizer)] = torch.compile(update)
        return compiled

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    # ----------------------------------------------------------------------------- training
    def training_step(self, block: list[Batch], block_idx: int) -> None:
        # What every step of the block asks, looked up once per block; the steps themselves
        # run in dnnlab.train.blocks.train_block, which calls the methods below.
        self._per_step = [c for c in self.trainer.lr_scheduler_configs if c.interval == "step"]
        self._log_every = self.trainer.log_every_n_steps
        train_block(self, block)

    def step_objective(self, x: Tensor, y: Tensor) -> Tensor:
        """What one optimizer step minimizes on a batch; its loss joins the running totals."""
        logits, loss, penalty = self.losses(x, y)
        self.train_totals.update(loss, logits, y)
        if penalty is None:
            return loss
        self._penalty_sum += penalty.detach()
        self._penalty_steps += 1
        return loss + penalty

    def before_update(self, optimizer: Any) -> None:
        """Between backward and the update: gradient clipping."""
        if self.clipping.active:
            self.clipping(self, optimizer)

    def after_step(self, optimizer: Any, step: int, constrain: bool) -> None:
        """After the update of optimizer step ``step``: the max-norm constraint (unless the
        compiled update applied it), the log at every ``log_every_n_steps``-th step, then the
        per-step schedules."""
        if constrain:
            self.regularization.constrain(self.dense)
        if step % self._log_every == 0:  # before the schedule moves: the LR this step used
            self._log_training_step(optimizer, step)
        if self._per_step:
            self._step_schedulers(self._per_step, step)

    def after_block(self) -> None:
        self.train_totals.flush()

    def losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The logits, the loss, and the L1/L2 penalty (``None`` without one) of a batch.

        A training step minimizes the loss plus the penalty; ``train/loss`` is the loss alone.
        """
        if self._compiled_losses is not None:
            return self._compiled_losses(x, y)
        return self._losses(x, y)

    def _losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        logits = self(x)
        penalty = self.regularization.penalty(self.dense) if self.regularization.penalizes else None
        return logits, self.loss_fn(logits, y), penalty

    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        """What a training step minimizes on a batch (the LR finder tests the same)."""
        _, loss, penalty = self.losses(x, y)
        return loss if penalty is None else loss + penalty

    def _log_training_step(self, optimizer: Any, step: int) -> None:
        """Write the mean loss since the last write, and the LR and momentum, at ``global_step``.

        Written straight to the loggers at the optimizer step, not through ``self.log``: that
        would cost ~1 ms a call and put the point at Lightning's batch count, not the step.
        """
        loss, accuracy = self.train_totals.since_last_read()
        metrics = {"train/loss": loss, "train/acc_running": accuracy}
        if self._penalty_steps:  # train/loss is the cross-entropy; the objective adds this
            metrics["train/penalty"] = float(self._penalty_sum) / self._penalty_steps
            self._penalty_sum, self._penalty_steps = 0.0, 0
        for i, group in enumerate(optimizer.param_groups):
            suffix = "" if len(optimizer.param_groups) == 1 else f"_group{i}"
            metrics[f"train/lr{suffix}"] = group["lr"]
            momentum = group.get("momentum", group.get("betas", (None,))[0])
            if momentum is not None:
                metrics[f"train/momentum{suffix}"] = momentum
        log_scalars(self.loggers, metrics, step)

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        loss, accuracy = self.train_totals.compute_and_reset()
        self.log("train/loss_epoch", loss, sync_dist=True)
        self.log("train/acc", accuracy, sync_dist=True)
        self.log("step", float(self.global_step))  # x-axis: optimizer steps, as for train/loss
        # Here, not in a callback: callbacks' epoch-end hooks run before these values exist.
        started = getattr(self, "_epoch_started", None)
        log_epoch(self.trainer, time.perf_counter() - started if started else 0.0)
        per_epoch = [c for c in self.trainer.lr_scheduler_configs if c.interval == "epoch"]
        self._step_schedulers(per_epoch, self.current_epoch + 1)

    def _step_schedulers(self, configs: Sequence[LRSchedulerConfig], count: int) -> None:
        """Step schedulers ourselves (manual optimization), honouring frequency and monitor.

        ``count`` is the optimizer step for per-step schedules, the finished epochs otherwise.
        """
        for config in configs:
            if count % config.frequency:
                continue
            if isinstance(config.scheduler, ReduceLROnPlateau):
                # Lightning drops ``monitor`` from the configs under manual optimization.
                value = self.trainer.callback_metrics.get(self.hparams.scheduler["monitor"])
                if value is not None:
                    config.scheduler.step(value)
            else:
                config.scheduler.step()

    # --------------------------------------------------------------------------- evaluation
    def _evaluate(
        self, batch: Batch, loss_metric: MeanMetric, acc_metric: MulticlassAccuracy, stage: str
    ) -> None:
        x, y = batch
        logits = self(x)
        loss_metric.update(self.loss_fn(logits, y), weight=len(y))
        acc_metric.update(logits, y)
        self.log(f"{stage}/loss", loss_metric, prog_bar=True)
        self.log(f"{stage}/acc", acc_metric, prog_bar=True)

    def on_train_start(self) -> None:
        # The sanity check's few batches must not count towards the best validation accuracy.
        if self.global_step == 0:  # a resumed run keeps the best score of its checkpoint
            self.val_acc_best.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A run resumed mid-epoch needs the epoch's running sums and the best score (plain floats).
        best = self.val_acc_best.max_value.item()
        checkpoint["running_state"] = {
            "train_totals": self.train_totals.state(),
            "val_acc_best": best,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if state := checkpoint.get("running_state"):
            self.train_totals.load_state(state["train_totals"])
            self.val_acc_best.max_value.fill_(state["val_acc_best"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_acc, "val")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(self.val_acc.compute())
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
            self.log("step", float(self.global_step))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_acc, "test")

    def on_test_epoch_end(self) -> None:
        # A logged ``step`` is Lightning's x-axis for these metrics (and it then adds no
        # ``epoch`` scalar): the test sits at the last optimizer step, not at Lightning's count.
        self.log("step", float(self.global_step))

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch[0]).softmax(dim=-1)

    def make_optimizer(self) -> Optimizer:
        """The configured optimizer over the trainable parameters (training and the LR finder).

        Frozen (transferred) layers are left out; they join later as a param group of their own.
        """
        trainable = [p for p in self.parameters() if p.requires_grad]
        return build_optimizer(self.hparams.optimizer, trainable)

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer()
        scheduler = self.hparams.scheduler
        if not scheduler:
            return optimizer
        schedule = build_schedule(scheduler, optimizer, self.trainer)
        settings = {k: scheduler[k] for k in ("interval", "frequency") if k in scheduler}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, **settings}}
