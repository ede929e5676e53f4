"""Run folders: always new, always under the log folder, and written so that a fault loses nothing.

A run never writes into a folder that already holds something (a pinned ``hydra.run.dir`` used
twice would otherwise replace the first run's checkpoints, ``metrics.json`` and saved config, and
mix the two runs' event files). ``name`` is one folder name, so runs stay under ``logs/``. Files a
report reads are replaced atomically, so a full disk or a kill leaves the old file or the new one.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO

from dnnlab.errors import ConfigError

FAILED_FILE = "FAILED"  # written into a run folder whose job stopped with an error
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
WRITE_FAULTS = {  # errno -> what to do about it, before writing elsewhere
    errno.ENOSPC: "free space on that disk, or ",
    errno.EDQUOT: "free space within your disk quota, or ",
    errno.EROFS: "",
    errno.EACCES: "get write permission there, or ",
    errno.EPERM: "get write permission there, or ",
    errno.ENOTDIR: "move the file that stands in that path, or ",
    errno.EEXIST: "move the file that stands in that path, or ",
}
ELSEWHERE = "write elsewhere with paths.log_dir=<folder> (or DNNLAB_ROOT=<folder>)"


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


HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
# .<target>.<host>.<pid>.<random>.tmp: the writer of a temporary file, so that what a killed
# writer left can be told from a live writer's (dnnlab.checkpointing.remove_stale_temporaries).
TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp")


def temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write`` into a temporary file beside ``path``, ``fsync``, then ``os.replace`` it.

    The temporary file is opened like any new file (not ``mkstemp``'s owner-only mode), so the
    result has the permissions ``path.write_bytes`` would give it.
    """
    temporary = temporary_name(path)
    try:
        with temporary.open("xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        temporary.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None:  # name the file meant, not ours
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _fault(err: BaseException | None) -> OSError | None:
    while err is not None and not (isinstance(err, OSError) and err.errno in WRITE_FAULTS):
        err = err.__cause__
    return err


def locate(err: BaseException, folder: object) -> None:
    """Name ``folder`` in a disk fault that names no file (a write into a file already open)."""
    fault = _fault(err)
    if fault is not None and not fault.filename:
        fault.filename = str(folder)


def write_fault(err: BaseException) -> str | None:
    """One line for a disk that cannot take the run's files (full, read-only, ...), else None.

    Follows ``__cause__``: logging reports a log file it cannot open as a ValueError from it.
    """
    fault = _fault(err)
    if fault is None:
        return None
    where = f" {os.fsdecode(fault.filename)}" if fault.filename else ""  # TensorBoard's: bytes
    reason = fault.strerror or os.strerror(fault.errno)
    return f"cannot write{where}: {reason}; {WRITE_FAULTS[fault.errno]}{ELSEWHERE}"
