"""Stop a run whose loss or gradients went NaN/inf, saying where, and keep the last good checkpoint.

How each optimizer step is watched depends on ``check_gradients`` and the device:

* On the CPU (``auto``, the default), reading a value costs no device sync, so each step's loss
  is read at once. A non-finite gradient, or an update that overflows, leaves non-finite weights,
  and the next step's loss goes non-finite; only then are the weights checked tensor by tensor, to
  name the one the last update broke. No step pays for reading every gradient.
* On a GPU (``auto``), or anywhere with ``true``, each step stacks its loss and one sum per
  parameter tensor on the device (a sum is non-finite exactly when the tensor holds a NaN or an
  inf, or overflows); the check, the one host sync, runs once per Lightning batch (a block of
  ``data.steps_per_block`` steps) in ``on_train_batch_end``. ``false`` watches the loss only.

``on_train_batch_end`` runs before any ``ModelCheckpoint`` hook, so a checkpoint is only written
after its steps were checked, and ``on_save_checkpoint`` refuses one whose weights are not
finite: ``last.ckpt`` stays the last good state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor

from dnnlab.errors import ConfigError, TrainingDiverged

HINT = (
    "try a lower optimizer.lr, gradient clipping, or an initialization that suits the "
    "activation (model.init=auto)"
)


class DivergenceMonitor(Callback):
    """Raise :class:`TrainingDiverged` at the first non-finite loss or gradient."""

    def __init__(self, check_gradients: bool | str = "auto") -> None:
        if check_gradients not in (True, False, "auto"):
            raise ConfigError(
                f"callbacks.divergence.check_gradients={check_gradients!r} is not valid; "
                "choose one of: auto, true, false"
            )
        self.check_gradients = check_gradients
        self._names: list[str] = []
        self._params: list[Tensor] = []
        self._losses: list[Tensor] = []
        self._grad_sums: list[Tensor] = []
        self._first_step = 0
        self._immediate = False
        self._gradients_on = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        self._names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self._immediate = self.check_gradients == "auto" and pl_module.device.type == "cpu"
        # Under a loss scaler (16-bit mixed precision) inf gradients are expected and skipped.
        self._gradients_on = (
            bool(self.check_gradients)
            and not self._immediate
            and getattr(trainer.precision_plugin, "scaler", None) is None
        )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._first_step = trainer.global_step + 1
        self._losses.clear()
        self._grad_sums.clear()

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        if not self._immediate:
            self._losses.append(loss.detach())
        elif not math.isfinite(loss.item()):  # on the CPU: a plain read, no device sync
            raise TrainingDiverged(self._describe_update(trainer, loss))

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._gradients_on:
            sums = [p.grad.sum() for p in self._params if p.grad is not None]
            if len(sums) == len(self._params):
                self._grad_sums.append(torch.stack(sums))

    def _describe_update(self, trainer: L.Trainer, loss: Tensor) -> str:
        """The loss of the coming step is non-finite: name what the last update broke."""
        step = trainer.global_step  # the last update; this loss is step + 1's
        bad = [n for n, p in zip(self._names, self._params, strict=True) if not p.isfinite().all()]
        if bad:
            # Backpropagation runs from the output: the last flagged tensor went first.
            what = (
                f"its update made {bad[-1]} non-finite first ({len(bad)} of {len(self._names)} "
                f"parameter tensors: a non-finite or overflowing gradient), and the next loss is "
                f"{loss.item():g}"
            )
            return diverged(trainer, f"at optimizer step {step}", what)
        largest = [float(p.detach().abs().max()) for p in self._params]
        name, value = max(zip(self._names, largest, strict=True), key=lambda x: x[1])
        what = (
            f"the loss is {loss.item():g} while every weight is finite: the forward pass "
            f"overflowed (largest weight {value:.3g}, in {name})"
        )
        return diverged(trainer, f"at optimizer step {step + 1}", what)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if not self._losses:
            return
        losses = torch.stack(self._losses).float()
        bad = ~torch.isfinite(losses)
        grads = None
        if len(self._grad_sums) == len(self._losses):
            grads = ~torch.isfinite(torch.stack(self._grad_sums).float())
            bad = bad | grads.any(dim=1)
        if not bool(bad.any()):  # the block's one host sync
            return
        index = int(bad.nonzero()[0])
        raise TrainingDiverged(
            self._describe(trainer, self._first_step + index, losses[index], grads, index)
        )

    def _describe(
        self, trainer: L.Trainer, step: int, loss: Tensor, grads: Tensor | None, index: int
    ) -> str:
        if not bool(torch.isfinite(loss)):
            # Every earlier step, this one's gradients included, was checked and finite.
            what = (
                f"the loss is {loss.item():g}: the weights went non-finite in the update of "
                f"step {step - 1}, whose loss and gradients were still finite"
            )
        else:
            assert grads is not None
            flagged = [n for n, b in zip(self._names, grads[index].tolist(), strict=True) if b]
            # Backpropagation runs from the output: the last flagged tensor went first.
            what = (
                f"loss {loss.item():g}, but the gradient of {flagged[-1]} went non-finite first "
                f"({len(flagged)} of {len(self._names)} parameter tensors)"
            )
        return diverged(trainer, f"at optimizer step {step}", what)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        floats = {
            name: value
            for name, value in checkpoint.get("state_dict", {}).items()
            if value.is_floating_point()
        }
        if not floats:
            return
        flags = [value.isfinite().all() for value in floats.values()]
        if len({flag.device for flag in flags}) == 1:
            finite = torch.stack(flags).cpu()  # one host sync, not one per tensor
        else:
            finite = torch.tensor([bool(flag) for flag in flags])
        if bool(finite.all()):
            return
        first = next(name for name, ok in zip(floats, finite.tolist(), strict=True) if not ok)
        what = f"weights {first} are not finite, checkpoint not written"
        raise TrainingDiverged(diverged(trainer, f"by optimizer step {trainer.global_step}", what))


def diverged(trainer: L.Trainer, when: str, what: str) -> str:
    """The one-line report: when, what went non-finite, the last good checkpoint, what to try."""
    return (
        f"training diverged {when} (epoch {trainer.current_epoch}): {what}; "
        f"{last_good(trainer)}; {HINT}"
    )


def last_good(trainer: L.Trainer) -> str:
    """Where the newest checkpoint written before the divergence lies."""
    paths = [
        Path(path)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint)
        for path in (callback.last_model_path, callback.best_model_path)
        if path and Path(path).is_file()
    ]
    if not paths:
        return "no checkpoint was written before"
    newest = max(paths, key=lambda p: p.stat().st_mtime_ns)
    return f"last good checkpoint: {newest}"
