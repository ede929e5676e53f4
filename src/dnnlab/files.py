"""Files a fault cannot leave half-written, and disk faults as one line.

Every file a report or a resumed run reads (checkpoints, ``metrics.json``, ``FAILED``, reports,
evaluation files, downloads) is written to a temporary file beside its target and renamed over
it, so a full disk or a kill leaves the old file or the new one, never half of one.
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

FAILED_FILE = "FAILED"  # written into a run folder whose job stopped with an error
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


HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
# .<target>.<host>.<pid>.<random>.tmp: the writer of a temporary file, so that what a killed
# writer left can be told from a live writer's
# (dnnlab.train.checkpointing.remove_stale_temporaries).
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
