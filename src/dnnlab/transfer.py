"""Transfer learning: reuse the lower layers of a trained run, freeze them, unfreeze them later.

The source checkpoint's network must match the new one up to the reused layers (same hidden sizes,
activation and BatchNorm placement); the head, sized for the new task, starts fresh. Freezing and
unfreezing use Lightning's ``BaseFinetuning`` callback.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from dnnlab.errors import ConfigError, lookup
from dnnlab.ranges import LEARNING_RATE, Rule, check_all, check_number, integers, or_null
from dnnlab.schedules import join_schedule

FROZEN_BN_MODES = {
    "inference": "frozen BN layers use their running statistics and never update them (Keras)",
    "batch_stats": "frozen BN layers normalize with batch statistics, running ones stay fixed",
    "train": "BN layers keep training while the other reused layers are frozen",
}


def layer_count(hidden: int | None = None) -> Rule:
    """How many hidden layers may be reused: at least one, at most the net's ``hidden``."""
    return or_null(integers("a number of reused hidden layers", 1, hidden), "all of them")


# transfer.<key> -> its rule. dnnlab.validation checks them (and frozen_bn against
# FROZEN_BN_MODES) on every config before any data is read, with or without freezing; the
# callback checks them again for library use. layers' upper bound needs the net: see
# reused_modules.
RULES: dict[str, Rule] = {
    "layers": layer_count(),
    "freeze_epochs": integers("a number of frozen epochs", 0),
    "unfreeze_lr": or_null(LEARNING_RATE, "the optimizer's"),
}


def reused_modules(net: nn.Sequential, layers: int | None) -> list[nn.Module]:
    """The modules of the first ``layers`` hidden layers (all hidden layers when None)."""
    dense = [i for i, m in enumerate(net) if isinstance(m, nn.Linear)]
    hidden = len(dense) - 1
    check_number("transfer.layers", layers, layer_count(hidden))
    return list(net[: dense[hidden if layers is None else layers]])


def load_lower_layers(net: nn.Sequential, ckpt_path: str | Path, layers: int | None) -> int:
    """Copy the reused layers' weights and buffers from a checkpoint; returns how many tensors."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"transfer.ckpt_path={str(path)!r} is not a checkpoint file")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    cut = len(reused_modules(net, layers))
    prefixes = tuple(f"net.{i}." for i in range(cut))
    wanted = {k.removeprefix("net."): v for k, v in state.items() if k.startswith(prefixes)}
    expected = {k for k in net[:cut].state_dict()}
    if set(wanted) != expected:
        raise ConfigError(
            f"transfer.ckpt_path={str(path)!r}: its lower layers do not match this model "
            f"(missing {sorted(expected - set(wanted))[:3]}); use the same model.* settings"
        )
    try:
        net[:cut].load_state_dict(wanted)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise ConfigError(f"transfer.ckpt_path={str(path)!r}: {first}") from None
    return len(wanted)


class FreezeReusedLayers(BaseFinetuning):
    """Freeze the reused layers for ``freeze_epochs`` epochs, then train them at ``unfreeze_lr``."""

    def __init__(
        self,
        layers: int | None,
        freeze_epochs: int,
        unfreeze_lr: float | None = None,
        frozen_bn: str = "inference",
    ) -> None:
        super().__init__()
        lookup(FROZEN_BN_MODES, "transfer.frozen_bn", frozen_bn)
        settings = {"layers": layers, "freeze_epochs": freeze_epochs, "unfreeze_lr": unfreeze_lr}
        check_all("transfer", RULES, settings)
        self.layers, self.freeze_epochs = layers, freeze_epochs
        self.unfreeze_lr, self.frozen_bn = unfreeze_lr, frozen_bn

    def _reused(self, pl_module: L.LightningModule) -> list[nn.Module]:
        return reused_modules(pl_module.net, self.layers)

    def _frozen_bn_layers(self, pl_module: L.LightningModule) -> list[_BatchNorm]:
        return [m for m in self._reused(pl_module) if isinstance(m, _BatchNorm)]

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self._reused(pl_module), train_bn=self.frozen_bn == "train")
        if self.frozen_bn == "inference":
            for bn in self._frozen_bn_layers(pl_module):
                bn.track_running_stats = True  # undo BaseFinetuning's batch-statistics mode

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        # Set on every block, both ways: Lightning 2.6 hands each submodule back the mode it had
        # before validation, so a layer put in eval mode here would stay there once unfrozen
        # (Keras trains BN again, batch statistics and moving averages, once it is trainable).
        if self.frozen_bn == "inference":
            frozen = trainer.current_epoch < self.freeze_epochs
            for bn in self._frozen_bn_layers(pl_module):
                bn.train(not frozen)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        built = [len(optimizer.param_groups) for optimizer in trainer.optimizers]
        super().on_fit_start(trainer, pl_module)  # a resumed run gets back the unfrozen groups
        for optimizer, count in zip(trainer.optimizers, built, strict=True):
            if len(optimizer.param_groups) > count:  # resumed after the unfreeze
                self.make_trainable(self._reused(pl_module))
                # Sized here, filled when Lightning loads the schedule's state next.
                join_schedules(trainer, optimizer, optimizer.param_groups[count:])

    def finetune_function(
        self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        reused = self._reused(pl_module)
        unfrozen = all(p.requires_grad for m in reused for p in m.parameters())
        if epoch == self.freeze_epochs and not unfrozen:  # not again in a resumed epoch
            lr = self.unfreeze_lr or optimizer.param_groups[0]["lr"]
            before = len(optimizer.param_groups)
            self.unfreeze_and_add_param_group(reused, optimizer, lr=lr)
            join_schedules(pl_module.trainer, optimizer, optimizer.param_groups[before:])


def join_schedules(trainer: L.Trainer, optimizer: Optimizer, groups: list[dict[str, Any]]) -> None:
    """The new param groups follow the optimizer's schedule, scaled from the LR they join with."""
    for config in trainer.lr_scheduler_configs:
        if config.scheduler.optimizer is optimizer:
            for group in groups:
                join_schedule(config.scheduler, group)


def transfer_callbacks(transfer: Any) -> Iterable[L.Callback]:
    """The freezing callback when a source checkpoint is set and layers start frozen."""
    if transfer and transfer.get("ckpt_path") and transfer.get("freeze_epochs", 0) > 0:
        yield FreezeReusedLayers(
            transfer.get("layers"),
            transfer["freeze_epochs"],
            transfer.get("unfreeze_lr"),
            transfer.get("frozen_bn", "inference"),
        )
