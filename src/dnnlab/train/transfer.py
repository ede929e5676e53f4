"""Transfer learning: reuse the lower layers of a trained run, freeze them, unfreeze them later.

The source checkpoint's network must match the new one up to the reused layers (same hidden sizes,
activation and BatchNorm placement); the head, sized for the new task, starts fresh. Freezing and
unfreezing use Lightning's ``BaseFinetuning`` callback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from dnnlab.errors import ConfigError
from dnnlab.model.hidden import DROPOUT_TYPES
from dnnlab.optim.schedules import join_schedule
from dnnlab.ranges import LEARNING_RATE, Rule, check_number, integers, or_null
from dnnlab.settings import check_fields, default_key, setting
from dnnlab.train.checkpoint_files import restore_classifier

FROZEN_BN_MODES = {
    "inference": "frozen BN layers use their running statistics and never update them (Keras)",
    "batch_stats": "frozen BN layers normalize with batch statistics, running ones stay fixed",
    "train": "BN layers keep training while the other reused layers are frozen",
}


def layer_count(hidden: int | None = None) -> Rule:
    """How many hidden layers may be reused: at least one, at most the net's ``hidden``."""
    return or_null(integers("a number of reused hidden layers", 1, hidden), "all of them")


@dataclass(frozen=True)
class TransferSettings:
    """The ``transfer`` group. dnnlab.app.checks checks its fields on every config before any
    data is read, with or without freezing; the callback checks them again for library use.
    ``layers``' upper bound needs the net: see :func:`reused_modules`."""

    ckpt_path: str | None = setting(doc="the source run's checkpoint (null: from scratch)")
    layers: int | None = setting(rule=layer_count(), doc="hidden layers reused, bottom up")
    freeze_epochs: int = setting(
        rule=integers("a number of frozen epochs", 0), doc="epochs the reused layers stay frozen"
    )
    unfreeze_lr: float | None = setting(
        rule=or_null(LEARNING_RATE, "the optimizer's"), doc="their LR once unfrozen"
    )
    frozen_bn: str = setting(choices=FROZEN_BN_MODES, doc="what frozen BatchNorm layers do")
    key: InitVar[str] = "transfer"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)


def layer_blocks(net: nn.Sequential) -> list[list[nn.Module]]:
    """The MLP cut before each dense layer: [input part, hidden layer 1, ..., n, head].

    A hidden layer's block is its Dense with the BatchNorm, activation and dropout that follow.
    """
    blocks: list[list[nn.Module]] = [[]]
    for module in net:
        if isinstance(module, nn.Linear):
            blocks.append([])
        blocks[-1].append(module)
    return blocks


def reused_modules(
    net: nn.Sequential, layers: int | None, key: str | None = None
) -> list[nn.Module]:
    """The modules of the first ``layers`` hidden layers (all hidden layers when None);
    ``key``: where the config holds the transfer settings."""
    blocks = layer_blocks(net)
    hidden = len(blocks) - 2
    check_number(f"{key or default_key(TransferSettings)}.layers", layers, layer_count(hidden))
    return [m for block in blocks[: 1 + (hidden if layers is None else layers)] for m in block]


def _kept(block: list[nn.Module]) -> list[nn.Module]:
    """A block without what holds no weights and leaves the function fixed at evaluation."""
    return [m for m in block if not isinstance(m, (nn.Flatten, *DROPOUT_TYPES))]


def _batch_norm_place(block: list[nn.Module]) -> str:
    kinds = ["bn" if isinstance(m, _BatchNorm) else "act" for m in _kept(block)[1:]]
    if "bn" not in kinds:
        return "none"
    return "before" if kinds.index("bn") < kinds.index("act") else "after"


def _activation(block: list[nn.Module]) -> str:
    (act,) = (m for m in _kept(block)[1:] if not isinstance(m, _BatchNorm))
    return f"{type(act).__name__}({act.extra_repr()})"


def layer_difference(source: list[nn.Module], target: list[nn.Module], position: int) -> str:
    """What differs between two blocks of :func:`layer_blocks` (``position`` 0: the input part),
    in the settings' words; empty when they match."""
    if position == 0:
        has = [any(isinstance(m, _BatchNorm) for m in b) for b in (source, target)]
        return "" if has[0] == has[1] else f"model.input_batch_norm={has[0]} in the source"
    (source_dense, *_), (target_dense, *_) = source, target
    if source_dense.in_features != target_dense.in_features:
        return f"{source_dense.in_features} inputs in the source, {target_dense.in_features} here"
    if source_dense.out_features != target_dense.out_features:
        return (
            f"{source_dense.out_features} units in the source, {target_dense.out_features} here "
            "(model.hidden)"
        )
    places = _batch_norm_place(source), _batch_norm_place(target)
    if places[0] != places[1]:
        return f"model.batch_norm={places[0]} in the source, {places[1]} here"
    activations = _activation(source), _activation(target)
    if activations[0] != activations[1]:
        return f"{activations[0]} in the source, {activations[1]} here (model.activation)"
    return ""


def load_lower_layers(
    net: nn.Sequential, ckpt_path: str | Path, layers: int | None, key: str | None = None
) -> int:
    """Copy the reused layers' weights and buffers from a checkpoint; returns how many tensors.

    The source network is rebuilt from the checkpoint's own model settings, so its output layer
    can never pass for a hidden layer, and a reused layer must match the source's layer of the
    same depth in size, BatchNorm placement and activation (dropout may differ: it holds nothing).
    """
    group = key or default_key(TransferSettings)
    reused_modules(net, layers, group)  # this model's own bound, before the file is read
    source, _ = restore_classifier(ckpt_path, f"{group}.ckpt_path")
    where = f"{group}.ckpt_path={str(ckpt_path)!r}"
    ours, theirs = layer_blocks(net), layer_blocks(source.net)
    count, has = len(ours) - 2 if layers is None else layers, len(theirs) - 2
    if count > has:
        asked = f"null reuses all {count} hidden layers," if layers is None else f"{layers} reuses"
        raise ConfigError(
            f"{group}.layers={asked} more hidden layers than the source has: {where} has {has} "
            f"(model.hidden={source.hparams.model.get('hidden')}); set {group}.layers to at "
            f"most {has}"
        )
    copied = 0
    for position in range(count + 1):
        difference = layer_difference(theirs[position], ours[position], position)
        if difference:
            layer = "the input" if position == 0 else f"hidden layer {position}"
            raise ConfigError(
                f"{where}: {layer} does not match the source's: {difference}; reused layers "
                f"need the source's model settings (or set {group}.layers lower)"
            )
        for mine, its in zip(_kept(ours[position]), _kept(theirs[position]), strict=True):
            mine.load_state_dict(its.state_dict())
            copied += len(its.state_dict())
    return copied


class FreezeReusedLayers(BaseFinetuning):
    """Freeze the reused layers for ``freeze_epochs`` epochs, then train them at ``unfreeze_lr``."""

    def __init__(
        self,
        layers: int | None,
        freeze_epochs: int,
        unfreeze_lr: float | None = None,
        frozen_bn: str = "inference",
        key: str | None = None,
    ) -> None:
        super().__init__()
        self.key = key or default_key(TransferSettings)
        TransferSettings(None, layers, freeze_epochs, unfreeze_lr, frozen_bn, key=self.key)
        self.layers, self.freeze_epochs = layers, freeze_epochs
        self.unfreeze_lr, self.frozen_bn = unfreeze_lr, frozen_bn

    def _reused(self, pl_module: L.LightningModule) -> list[nn.Module]:
        return reused_modules(pl_module.net, self.layers, self.key)

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


def transfer_callbacks(transfer: Any, key: str | None = None) -> Iterable[L.Callback]:
    """The freezing callback when a source checkpoint is set and layers start frozen (``key``:
    where the config holds ``transfer``)."""
    if transfer and transfer.get("ckpt_path") and transfer.get("freeze_epochs", 0) > 0:
        yield FreezeReusedLayers(
            transfer.get("layers"),
            transfer["freeze_epochs"],
            transfer.get("unfreeze_lr"),
            transfer.get("frozen_bn", "inference"),
            key,
        )
