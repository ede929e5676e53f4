"""How checkpoints are written: atomically, every N optimizer steps, and across resumed runs.

* :class:`AtomicCheckpointIO`: Lightning's own save goes through an fsspec transaction whose
  temporary file lives in the system's temp folder, so on another file system the final move is a
  copy that a kill can cut short. Here the file is written next to its target, flushed to disk and
  renamed over it with ``os.replace``: a reader sees the old checkpoint or the new one, never half.
  The temporary file is created with the user's umask, like every other output, and named after
  its writer (host and process id), so that the first write into a folder can remove what a
  killed writer left there without touching a live writer's file.
* :class:`RunCheckpoint`: a ``ModelCheckpoint`` whose ``every_n_train_steps`` fires at the first
  Lightning batch end at or past each multiple of N. A batch is a block of
  ``data.steps_per_block`` optimizer steps and epochs need not end on a block boundary, so
  Lightning's ``global_step % N == 0`` would rarely or never hold. A resumed run writes into a new
  folder; it still continues the best-so-far bookkeeping of the run it resumes (Lightning drops it
  when the folder changes), and Lightning never deletes files outside its own folder. A step
  checkpoint due at the epoch's last block is written at the epoch's end instead: Lightning
  resumes a checkpoint taken at the last batch of an epoch as a finished epoch, without its
  validation and ``on_train_epoch_end`` hooks (the epoch's metrics and schedule step).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dnnlab.files import HOST, TEMPORARY, atomic_write
from dnnlab.train.blocks import crossed, ends_epoch

# .<target>.<8 random characters>.tmp: tempfile.mkstemp's names, from earlier versions.
UNOWNED = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
UNOWNED_STALE_AFTER_S = 24 * 3600  # no writer takes a day over one checkpoint


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_stale(path: Path, now: float) -> bool:
    """A temporary checkpoint file no live writer can own.

    Ours: written on this host by a process that is gone. An earlier version's (no owner in
    the name), or one from another host sharing the folder: untouched for a day.
    """
    owned = TEMPORARY.fullmatch(path.name)
    if owned is not None and owned["host"] == HOST:
        pid = int(owned["pid"])
        return pid != os.getpid() and not process_alive(pid)
    if owned is None and UNOWNED.fullmatch(path.name) is None:
        return False
    try:
        return now - path.stat().st_mtime > UNOWNED_STALE_AFTER_S
    except FileNotFoundError:  # its writer renamed or removed it meanwhile
        return False


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary checkpoint files killed writers left in ``folder``; those removed."""
    if not folder.is_dir():
        return []
    now, removed = time.time(), []
    for path in folder.glob(".*.tmp"):
        if is_stale(path, now):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the same folder, ``fsync``, then ``os.replace``."""

    def __init__(self) -> None:
        super().__init__()
        self._cleaned: set[Path] = set()  # folders already rid of stale temporary files

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction is the right tool there
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent not in self._cleaned:
            remove_stale_temporaries(target.parent)
            self._cleaned.add(target.parent)
        atomic_write(target, lambda f: torch.save(checkpoint, f))  # a fault names the target


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for blocks of optimizer steps and for runs resumed in a new folder.

    Its private members are listed in :data:`dnnlab.train.blocks.PRIVATE_MEMBERS`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._save_at_epoch_end = False  # a step checkpoint fell due at the epoch's last block

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        last, now = self._last_global_step_saved, trainer.global_step
        if not crossed(self._every_n_train_steps, last, now):
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        if ends_epoch(trainer, idx):
            self._save_at_epoch_end = True
            return
        self._save_step_checkpoint(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Also the step checkpoint due at the epoch's last block, now that the epoch is done.

        Checkpoint callbacks run after the module's ``on_train_epoch_end``: the checkpoint
        holds the finished epoch, as the epoch-end checkpoint of ``ModelCheckpoint`` does.
        """
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)
        due, self._save_at_epoch_end = self._save_at_epoch_end, False
        if due and not self._should_skip_saving_checkpoint(trainer):
            self._save_step_checkpoint(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Lightning 2.6 saves a missing ``last.ckpt`` here even under ``fast_dev_run``, which
        otherwise suppresses checkpoints: ``ckpt_path=last`` then resumed that one-batch check
        instead of the real run before it."""
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer: L.Trainer) -> None:
        """``last.ckpt`` at an epoch's checkpoint that is not a new best.

        Lightning 2.6 writes ``last.ckpt`` there only when a top-k checkpoint was saved at the
        same step, so a run whose last epochs did not improve kept an older ``last.ckpt``:
        ``ckpt_path=last`` resumed (and ``eval.py`` evaluated) an earlier epoch than the run's end.
        """
        if (
            self.save_last
            and self._every_n_epochs >= 1
            and (trainer.current_epoch + 1) % self._every_n_epochs == 0
            and not self._should_skip_saving_checkpoint(trainer)  # also: saved at this step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_step_checkpoint(self, trainer: L.Trainer) -> None:
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
