"""Test-only callbacks that break a run: a SIGKILL no handler can soften, a bug in the code.

Injected from the command line: ``+callbacks.killer._target_=killer.KillAfterSteps
+callbacks.killer.step=N`` (or ``killer.RaiseAtFitStart`` with ``+callbacks.killer.fail=...``)
with ``tests/`` on ``PYTHONPATH``.
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


class RaiseAtFitStart(Callback):
    """Raise a ``RuntimeError`` when fitting starts if ``fail``: a bug, not a user's mistake."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.fail:
            raise RuntimeError("boom: a bug in a callback")
