"""Run folders: always new, always under the log folder, and written so that a fault loses nothing.

A run never writes into a folder that already holds something (a pinned ``hydra.run.dir`` used
twice would otherwise replace the first run's checkpoints, ``metrics.json`` and saved config, and
mix the two runs' event files). ``name`` is one folder name, so runs stay under ``logs/``.
(Files are written atomically by :mod:`dnnlab.files`.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dnnlab.errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class FolderInUse(ConfigError):
    """A run would write into a folder that already holds files: none of them is touched."""


class Refused(BaseException):
    """A user error found by a Hydra callback, on its way to ``cli.entry_point``.

    Hydra turns an ``Exception`` raised in a callback into a warning and goes on to write the run
    folder; like ``SystemExit``, this one passes through and stops the run before that.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def check_name(name: object) -> None:
    """``name`` names one folder under ``runs/`` and ``multiruns/``: no path, no ``..``."""
    if not NAME.fullmatch(str(name)):
        raise ConfigError(
            f"name={str(name)!r} is not a plain folder name; use letters, digits, '_', '-' "
            "and '.' (not first), e.g. name=my_run"
        )


def shares_rank_zeros_folder() -> bool:
    """A process of local rank > 0: Lightning's DDP launcher starts it in rank 0's run folder."""
    return os.environ.get("LOCAL_RANK", "0") not in ("", "0")


def check_new_folder(folder: Path, key: str, own: tuple[str, ...] = ()) -> None:
    """Refuse ``folder`` if it holds anything but the entries named in ``own``."""
    if not folder.is_dir() or shares_rank_zeros_folder():
        return
    events = "events.out.tfevents."
    names = {p.name for p in folder.iterdir() if p.name not in own}
    found = sorted({f"{events}*" if n.startswith(events) else n for n in names})
    if not found:
        return
    shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
    last = folder / "checkpoints" / "last.ckpt"
    resume = f"; to continue that run: ckpt_path={last} with a new folder" if last.is_file() else ""
    raise FolderInUse(
        f"{key}={folder} already holds files ({shown}); a run never writes over another: "
        f"give a new {key} (or drop it for a new time-stamped folder){resume}"
    )


def check_member_folders(subdir: str) -> None:
    """A sweep's member folder must differ from member to member (``hydra.sweep.subdir``)."""
    per_member = ("job.num", "job.id", "job.override_dirname")  # job.name is the same for all
    if not any(f"hydra{sep}{key}" in subdir for key in per_member for sep in ".:"):
        raise ConfigError(
            f"hydra.sweep.subdir={subdir!r} names the same folder for every member; "
            "include ${hydra.job.num} (the default) or ${hydra.job.override_dirname}"
        )
