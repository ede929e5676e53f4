"""``ckpt_path``: a checkpoint file, or ``last`` for the newest run of this experiment.

``last`` looks in ``<paths.log_dir>/runs/<name>/`` for the newest run folder (folder names are
start times, so they sort in time order) that holds ``checkpoints/last.ckpt``, skipping the
current run's own, still empty, folder.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dnnlab.errors import ConfigError

LAST = "last"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def latest_checkpoint(runs: Path, exclude: Path | None = None) -> Path | None:
    """``checkpoints/last.ckpt`` of the newest run folder under ``runs`` that has one."""
    if not runs.is_dir():
        return None
    skip = exclude.resolve() if exclude is not None else None
    for folder in sorted((d for d in runs.iterdir() if d.is_dir()), reverse=True):
        if folder.resolve() != skip and (folder / LAST_CHECKPOINT).is_file():
            return folder / LAST_CHECKPOINT
    return None


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """The checkpoint file ``trainer.fit`` resumes from, or ``None`` for a fresh start."""
    value = cfg.get("ckpt_path")
    if value is None:
        return None
    if str(value) != LAST:
        if not Path(str(value)).is_file():
            raise ConfigError(
                f"ckpt_path={value!r}: no such checkpoint file (or use ckpt_path=last)"
            )
        return str(value)
    runs = Path(str(cfg.paths.log_dir)) / "runs" / str(cfg.name)
    found = latest_checkpoint(runs, exclude=Path(str(cfg.paths.output_dir)))
    if found is None:
        raise ConfigError(
            f"ckpt_path=last: no run folder under {runs} has {LAST_CHECKPOINT}; "
            "give a checkpoint file instead"
        )
    return str(found)
