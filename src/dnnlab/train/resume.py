"""``ckpt_path``: a checkpoint file, or ``last`` for the newest run of this experiment.

``last`` looks in ``<paths.log_dir>/runs/<name>/`` for the newest run folder (folder names are
start times, so they sort in time order) that holds ``checkpoints/last.ckpt``, skipping the
current run's own, still empty, folder.

A resume continues the same run. :func:`check_resume` compares the settings now with those
the checkpoint was written with, before any data is read: a setting in :data:`REFUSED` (what
the run *is*) that differs is refused in one line; every other difference takes effect from the
resumed step on and is logged. Lightning restores the optimizer's param groups and the
schedule's whole state from the checkpoint, which would silently undo a changed learning rate
or schedule setting: :class:`ResumeSettings` writes the config's optimizer hyperparameters back
into the restored param groups, and schedule settings are refused, so what the run folder
records is what was trained.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from dnnlab.building import current_targets
from dnnlab.errors import ConfigError, describe, refusal
from dnnlab.train.checkpoint_files import checkpoint_error, read_checkpoint, require_file

log = logging.getLogger(__name__)

LAST = "last"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
KEY = "ckpt_path"
SETTINGS = "dnnlab_settings"  # checkpoint entry: the run's resolved config (primitives only)
RUN_FOLDER = "<run folder>"  # stands for each run's own paths.output_dir when comparing

# The rule, in one place. A key here (or any key under it) that differs between the checkpoint
# and the config now is refused: it changes what the run is, and a resume continues the run.
REFUSED: dict[str, str] = {
    "model": "the network",
    "input_shape": "the network's input (another dataset)",
    "num_classes": "the network's output (another label set: data.classes, another dataset)",
    "loss": "the objective",
    "optimizer._target_": "the optimizer's kind: its restored state would not fit",
    "optimizer.initial_accumulator_value": "read only when the optimizer state is created",
    "scheduler": "the schedule: its kind and settings live in its restored state",
    "data.name": "the dataset",
    "data.classes": "the label set",
    "data.batch_size": "the batches, and where in the epoch the loader resumes",
    "data.steps_per_block": "the blocks, and where in the epoch the loader resumes",
    "data.val_size": "the training/validation split",
    "data.val_split": "the training/validation split",
    "data.train_size": "the training set",
    "data.standardize": "the inputs",
    "data.seed": "the batch order (and a random split)",
    "trainer.limit_train_batches": "the length of an epoch",
    "transfer.ckpt_path": "the reused layers (and, once unfrozen, the optimizer's param groups)",
    "transfer.layers": "the reused layers (and, once unfrozen, the optimizer's param groups)",
    "transfer.freeze_epochs": "when the reused layers join the optimizer as a param group",
}
# Refused only with a schedule: the schedule's LR starts from optimizer.lr.
REFUSED_WITH_SCHEDULE: dict[str, str] = {"optimizer.lr": "the schedule's starting point"}
# Refused only with a schedule over the whole run (``total_steps: null``): its length.
REFUSED_WITH_WHOLE_RUN_SCHEDULE: dict[str, str] = {
    "trainer.max_epochs": "the length of the whole-run schedule",
    "trainer.max_steps": "the length of the whole-run schedule",
}
# Never compared: each run has its own folder and names the checkpoint it resumes.
IGNORED = ("hydra", "ckpt_path")
# The Classifier's hyperparameters in the checkpoint: what the network was built with.
MODULE_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "input_shape",
    "num_classes",
    "regularization",
    "clipping",
    "loss",
)
# What a checkpoint needs for ``trainer.fit`` to continue it (a weights-only save lacks them).
TRAINING_STATE = ("hyper_parameters", "optimizer_states", "loops")


class Unset:
    """A key one side does not have."""

    def __repr__(self) -> str:
        return "unset"


UNSET = Unset()


def was_fast_dev_run(folder: Path) -> bool:
    """The run in ``folder`` was a ``trainer.fast_dev_run`` check (its saved config says so)."""
    try:
        saved = OmegaConf.load(folder / ".hydra" / "config.yaml")
        return bool(OmegaConf.select(saved, "trainer.fast_dev_run", default=False))
    except (OSError, ValueError, yaml.YAMLError):  # unreadable: a plain run as far as we know
        return False


def latest_checkpoint(runs: Path, exclude: Path | None = None) -> Path | None:
    """``checkpoints/last.ckpt`` of the newest run folder under ``runs`` that has one, leaving
    out ``fast_dev_run`` checks (folders written before RunCheckpoint skipped them hold one)."""
    if not runs.is_dir():
        return None
    skip = exclude.resolve() if exclude is not None else None
    for folder in sorted((d for d in runs.iterdir() if d.is_dir()), reverse=True):
        if folder.resolve() == skip or was_fast_dev_run(folder):
            continue
        if (folder / LAST_CHECKPOINT).is_file():
            return folder / LAST_CHECKPOINT
    return None


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """The checkpoint file ``trainer.fit`` resumes from, or ``None`` for a fresh start."""
    value = cfg.get("ckpt_path")
    if value is None:
        return None
    if str(value) != LAST:
        require_file(Path(str(value)), KEY, " (or use ckpt_path=last)")
        return str(value)
    runs = Path(str(cfg.paths.log_dir)) / "runs" / str(cfg.name)
    found = latest_checkpoint(runs, exclude=Path(str(cfg.paths.output_dir)))
    if found is None:
        raise ConfigError(
            f"ckpt_path=last: no run folder under {runs} has {LAST_CHECKPOINT}; "
            "give a checkpoint file instead"
        )
    return str(found)


# ------------------------------------------------------------------------- the run's settings
def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, as stored in every checkpoint of the run."""
    return {
        str(k): OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in ((k, cfg[k]) for k in cfg if k not in IGNORED)
    }


def module_settings(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """What the Classifier would be built with now (as its hyperparameters are stored)."""
    settings = run_settings(cfg)
    return {
        "model": settings.get("model"),
        "optimizer": settings.get("optimizer"),
        "scheduler": settings.get("scheduler") or None,
        "input_shape": list(datamodule.input_shape),
        "num_classes": datamodule.num_classes,
        "regularization": settings.get("regularization"),
        "clipping": settings.get("clipping"),
        "loss": settings.get("loss", "cross_entropy"),
    }


def checkpoint_settings(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What the checkpoint's run was configured with, as far as the checkpoint tells.

    Checkpoints of this version hold the whole resolved config; older ones the Classifier's
    hyperparameters and the training loader's batch layout.
    """
    settings = current_targets(dict(checkpoint.get(SETTINGS) or {}))
    if not settings:
        loaders = checkpoint["loops"].get("fit_loop", {}).get("state_dict", {})
        layout = (loaders.get("combined_loader") or [{}])[0]
        if "batch_size" in layout:
            spb = layout.get("steps_per_block") or None
            settings["data"] = {"batch_size": layout["batch_size"], "steps_per_block": spb}
    hparams = checkpoint["hyper_parameters"]
    settings.update({k: hparams[k] for k in MODULE_KEYS if k in hparams})
    if "input_shape" in settings:
        settings["input_shape"] = list(settings["input_shape"])
    return settings


def in_run_folder(value: Any, folder: str | None) -> Any:
    """``value`` with the run's own folder replaced by a placeholder (strings, nested)."""
    if folder and isinstance(value, str):
        return value.replace(folder, RUN_FOLDER)
    if isinstance(value, dict):
        return {k: in_run_folder(v, folder) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [in_run_folder(v, folder) for v in value]
    return value


def differences(old: Any, new: Any, key: str = "") -> dict[str, tuple[Any, Any]]:
    """``dotted key -> (old, new)`` for every leaf that differs; a missing side is ``UNSET``.

    A missing or null section against a set one (no schedule, then one) counts as empty.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        found: dict[str, tuple[Any, Any]] = {}
        for name in [*old, *(k for k in new if k not in old)]:
            child = f"{key}.{name}" if key else str(name)
            found |= differences(old.get(name, UNSET), new.get(name, UNSET), child)
        return found
    if isinstance(old, dict) and (new is None or new is UNSET):
        return differences(old, {}, key)
    if isinstance(new, dict) and (old is None or old is UNSET):
        return differences({}, new, key)
    return {} if same(old, new) else {key: (old, new)}


def same(value: Any, other: Any) -> bool:
    """Equal values; a list and a tuple of the same items are equal (torch keeps tuples)."""
    if isinstance(value, (list, tuple)) and isinstance(other, (list, tuple)):
        return list(value) == list(other)
    return value == other


def refused_keys(settings: Mapping[str, Any]) -> dict[str, str]:
    """:data:`REFUSED`, with the keys a schedule adds to it for these settings."""
    rule = dict(REFUSED)
    scheduler = settings.get("scheduler")
    if scheduler:
        rule |= REFUSED_WITH_SCHEDULE
        schedule = scheduler.get("schedule") or {}
        if "total_steps" in schedule and schedule["total_steps"] is None:
            rule |= REFUSED_WITH_WHOLE_RUN_SCHEDULE
    return rule


def is_under(key: str, prefixes: Mapping[str, str]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


@dataclass
class ResumePlan:
    """What a resume keeps from its checkpoint and what it changes."""

    path: str
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # all take effect

    @property
    def optimizer_changes(self) -> dict[str, tuple[Any, Any]]:
        """``torch.optim`` hyperparameter name -> (checkpoint's, now) for the param groups."""
        return {
            key.split(".", 1)[1]: change
            for key, change in self.changes.items()
            if key.startswith("optimizer.") and key.count(".") == 1
        }


def check_resume(cfg: DictConfig, path: str, datamodule: Any) -> ResumePlan:
    """Refuse a resume whose settings change the run (one line); the changes that take effect.

    Called before any data is read: the checkpoint is read and checked with
    :func:`~dnnlab.train.checkpoint_files.read_checkpoint`, so a damaged file is one line too.
    """
    checkpoint = read_checkpoint(path, KEY)
    missing = [k for k in TRAINING_STATE if k not in checkpoint]
    if missing:
        raise checkpoint_error(
            KEY,
            Path(path),
            f"holds no training state ({', '.join(missing)} missing: a weights-only save); "
            "resume from a last.ckpt that train.py wrote, or evaluate it with eval.py",
        )
    old = checkpoint_settings(checkpoint)
    now = {**run_settings(cfg), **module_settings(cfg, datamodule)}
    old_folder = (old.get("paths") or {}).get("output_dir")
    old = in_run_folder(old, old_folder)
    now = in_run_folder(now, str(cfg.paths.output_dir))
    changes: dict[str, tuple[Any, Any]] = {}
    for name in old:  # only what the checkpoint tells; a newer config key is not a change
        changes |= differences(old[name], now.get(name, UNSET), name)
    rule = refused_keys(old) | refused_keys(now)
    refused = {k: v for k, v in changes.items() if is_under(k, rule)}
    if refused:
        raise checkpoint_error(KEY, Path(path), refusal(refused))
    step = checkpoint.get("global_step", 0)
    check_left_to_train(cfg, checkpoint, Path(path))
    check_not_cut_short(checkpoint, Path(path))
    if changes:
        log.info(
            "resuming %s at step %d; changed since its checkpoint, in effect from here: %s",
            path,
            step,
            describe(changes),
        )
    else:
        log.info("resuming %s at step %d with the same settings", path, step)
    return ResumePlan(path, changes)


def check_left_to_train(cfg: DictConfig, checkpoint: dict[str, Any], path: Path) -> None:
    """Refuse a resume whose ``trainer.max_epochs``/``max_steps`` the checkpoint has reached.

    Lightning would raise after the data is read (fewer epochs than done) or train nothing and
    end as if it had (as many): neither continues the run.
    """
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    epochs = progress.get("total", {}).get("processed", 0)  # finished, validation included
    steps = checkpoint.get("global_step", 0)
    limits = {
        "max_epochs": (cfg.trainer.get("max_epochs"), epochs),
        "max_steps": (cfg.trainer.get("max_steps"), steps),
    }
    for key, (limit, done) in limits.items():
        if limit is not None and limit >= 0 and limit <= done:
            raise checkpoint_error(
                KEY,
                path,
                f"the checkpoint has trained {epochs} epochs ({steps} optimizer steps), so "
                f"trainer.{key}={limit} leaves nothing to train; set trainer.{key} above {done} "
                "to train on",
            )


def check_not_cut_short(checkpoint: dict[str, Any], path: Path) -> None:
    """Refuse the last checkpoint of a run that stopped inside an epoch (``trainer.max_steps``,
    or a callback's stop).

    Lightning resumes a checkpoint written after its loop ended at the next epoch, so the rest
    of this one (the rest of a block, too: a block is one Lightning batch) would never be trained.
    A checkpoint written during the epoch (a step checkpoint) resumes where it was.
    """
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    progress = loop.get("epoch_progress", {}).get("current", {})
    ended = progress.get("processed", 0) > progress.get("completed", 0)
    loaders = loop.get("state_dict", {}).get("combined_loader") or []
    left = sum(state.get("steps_left", 0) for state in loaders if isinstance(state, dict))
    if ended and left > 0:
        raise checkpoint_error(
            KEY,
            path,
            f"that run stopped {checkpoint.get('global_step', 0)} optimizer steps in, {left} "
            f"before the end of epoch {checkpoint.get('epoch', 0) + 1} (trainer.max_steps, or a "
            "callback that stopped it); Lightning resumes such a checkpoint at the next epoch, "
            "and those steps would never be trained: resume from a checkpoint of an epoch's "
            "end or a step checkpoint of that run",
        )


class ResumeSettings(Callback):
    """Store the run's settings in every checkpoint; on resume, apply the changed optimizer
    hyperparameters to the param groups Lightning restored (which hold the checkpoint's)."""

    def __init__(self, settings: dict[str, Any], plan: ResumePlan | None = None) -> None:
        self.settings, self.plan = settings, plan

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[SETTINGS] = self.settings

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        changes = self.plan.optimizer_changes if self.plan is not None else {}
        applied: dict[str, tuple[Any, Any]] = {}
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for name, (old, new) in changes.items():
                    # A group with a value of its own (a transferred layer's unfreeze_lr) keeps it.
                    if (
                        name in group
                        and new is not UNSET
                        and (old is UNSET or same(group[name], old))
                    ):
                        group[name] = type(group[name])(new) if isinstance(new, list) else new
                        applied[f"optimizer.{name}"] = (old, new)
        if applied:
            log.info("applied to the restored optimizer: %s", describe(applied))
