"""How checkpoints are written: atomically, every N optimizer steps, and across resumed runs.

* :class:`AtomicCheckpointIO`: Lightning's own save goes through an fsspec transaction whose
  temporary file lives in the system's temp folder, so on another file system the final move is a
  copy that a kill can cut short. Here the file is written next to its target, flushed to disk and
  renamed over it with ``os.replace``: a reader sees the old checkpoint or the new one, never half.
* :class:`RunCheckpoint`: a ``ModelCheckpoint`` whose ``every_n_train_steps`` fires at the first
  Lightning batch end at or past each multiple of N. A batch is a block of
  ``data.steps_per_block`` optimizer steps and epochs need not end on a block boundary, so
  Lightning's ``global_step % N == 0`` would rarely or never hold. A resumed run writes into a new
  folder; it still continues the best-so-far bookkeeping of the run it resumes (Lightning drops it
  when the folder changes), and Lightning never deletes files outside its own folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dnnlab.run_folders import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the same folder, ``fsync``, then ``os.replace``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction is the right tool there
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda f: torch.save(checkpoint, f))  # a fault names the target


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for blocks of optimizer steps and for runs resumed in a new folder."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        every = self._every_n_train_steps
        if every < 1 or trainer.global_step // every <= self._last_global_step_saved // every:
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self.monitor is None or self.monitor in candidates:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    @property
    def state_key(self) -> str:
        """Lightning's key, computed once: it formats the settings with ``repr`` and is read for
        every callback hook, several times per optimizer step under manual optimization."""
        cached = self.__dict__.get("_state_key")
        if cached is None:
            cached = self.__dict__["_state_key"] = super().state_key
        return cached

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The resumed run's folder is new: keep the best score and paths of the run it continues.
        super().load_state_dict({**state_dict, "dirpath": self.dirpath})
