"""Test-only callbacks that break a run: a SIGKILL no handler can soften, a bug in the code.

Injected from the command line: ``+callbacks.killer._target_=killer.KillAfterSteps
+callbacks.killer.step=N`` (or ``killer.KillAtEpoch`` with ``+callbacks.killer.epoch=E``, or
``killer.RaiseAtFitStart`` with ``+callbacks.killer.fail=...``) with ``tests/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class KillAfterSteps(Callback):
    """Kill the process at the first Lightning batch end at or past optimizer step ``step``.

    Lightning runs checkpoint callbacks after all others, so the block that reaches ``step`` is
    never checkpointed: the resumed run must redo it.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillAtEpoch(Callback):
    """Kill the process at the start or the end of training epoch ``epoch`` (from 0).

    ``at=end`` kills in ``on_train_epoch_end`` before the epoch-end checkpoint is written
    (Lightning calls checkpoint callbacks after all others), as a kill during that write would;
    ``at=start`` kills once it is written, as the next epoch begins.
    """

    def __init__(self, epoch: int, at: str = "end") -> None:
        if at not in ("start", "end"):
            raise ValueError(f"at={at!r}: start or end")
        self.epoch, self.at = epoch, at

    def _kill(self, trainer: L.Trainer, at: str) -> None:
        if at == self.at and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._kill(trainer, "start")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._kill(trainer, "end")


class RaiseAtFitStart(Callback):
    """Raise a ``RuntimeError`` when fitting starts if ``fail``: a bug, not a user's mistake."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.fail:
            raise RuntimeError("boom: a bug in a callback")
