"""Reading a checkpoint file a user names: any damage becomes one line naming the key.

``torch.save`` writes a zip archive whose members carry CRC-32 checksums, but ``torch.load`` does
not check them: a flipped byte inside a tensor loads as a silently wrong weight, and one inside
the pickle fails deep in the unpickler. :func:`read_checkpoint` checks the archive first, then
loads with ``weights_only=True``, and refuses anything that is not a Lightning checkpoint.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from dnnlab.errors import ConfigError, one_line

REQUIRED_KEYS = ("state_dict",)


def checkpoint_error(key: str, path: Path, problem: str) -> ConfigError:
    return ConfigError(f"{key}={str(path)!r}: {problem}")


def damage(path: Path) -> str | None:
    """Why ``path`` is not an intact ``torch.save`` archive, or ``None`` when it is one."""
    if not zipfile.is_zipfile(path):
        return "not a checkpoint (not a torch.save archive: a text file, or cut short)"
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()  # reads every member and compares its CRC-32
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"a damaged checkpoint ({one_line(str(err))})"
    if broken is not None:
        return f"a damaged checkpoint (its member {broken} fails its CRC-32 check)"
    return None


def read_checkpoint(path: str | Path, key: str) -> dict[str, Any]:
    """The checkpoint at ``path`` (``key`` names the setting that gave it), loaded on the CPU
    with ``weights_only=True``; a :class:`ConfigError` in one line for anything else."""
    path = Path(path)
    if not path.is_file():
        raise checkpoint_error(key, path, "no such checkpoint file")
    problem = damage(path)
    if problem is None:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # the unpickler's many errors, all the same to the user
            first = one_line(str(err)).split(". ")[0][:200]
            problem = f"cannot be loaded ({type(err).__name__}: {first})"
        else:
            if isinstance(checkpoint, dict) and all(k in checkpoint for k in REQUIRED_KEYS):
                return checkpoint
            problem = "not a Lightning checkpoint (no state_dict inside)"
    raise checkpoint_error(key, path, f"{problem}; give a checkpoint that dnnlab wrote")
