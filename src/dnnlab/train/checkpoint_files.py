"""Reading a checkpoint file a user names: any damage becomes one line naming the key.

``torch.save`` writes a zip archive whose members carry CRC-32 checksums, but ``torch.load`` does
not check them: a flipped byte inside a tensor loads as a silently wrong weight, and one inside
the pickle fails deep in the unpickler. :func:`read_checkpoint` checks the archive first, then
loads with ``weights_only=True``, and refuses anything that is not a Lightning checkpoint.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dnnlab.building import current_targets
from dnnlab.errors import ConfigError, one_line

if TYPE_CHECKING:
    from dnnlab.train.module import Classifier

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


def require_file(path: Path, key: str, hint: str = "") -> None:
    """``path`` is a file; a folder (a run folder, most likely) or nothing is one line."""
    if path.is_dir():
        last = path / "checkpoints" / "last.ckpt"
        example = last if last.is_file() else path / "<file>.ckpt"
        raise checkpoint_error(key, path, f"is a folder; give a checkpoint file in it: {example}")
    if not path.is_file():
        raise checkpoint_error(key, path, f"no such checkpoint file{hint}")


def read_checkpoint(path: str | Path, key: str) -> dict[str, Any]:
    """The checkpoint at ``path`` (``key`` names the setting that gave it), loaded on the CPU
    with ``weights_only=True``; a :class:`ConfigError` in one line for anything else."""
    path = Path(path)
    require_file(path, key)
    problem = damage(path)
    if problem is None:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # the unpickler's many errors, all the same to the user
            first = one_line(str(err)).split(". ")[0][:200]
            problem = f"cannot be loaded ({type(err).__name__}: {first})"
        else:
            if isinstance(checkpoint, dict) and all(k in checkpoint for k in REQUIRED_KEYS):
                if "hyper_parameters" in checkpoint:
                    checkpoint["hyper_parameters"] = current_targets(checkpoint["hyper_parameters"])
                return checkpoint
            problem = "not a Lightning checkpoint (no state_dict inside)"
    raise checkpoint_error(key, path, f"{problem}; give a checkpoint that dnnlab wrote")


def first_error(err: BaseException) -> str:
    """The first line that says what went wrong (``load_state_dict`` opens with a header)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else " ".join(lines[:1])
    return f"{type(err).__name__}: {detail[:200]}" if detail else type(err).__name__


def restore_classifier(path: str | Path, key: str) -> tuple[Classifier, dict[str, Any]]:
    """The :class:`~dnnlab.train.module.Classifier` a checkpoint holds, rebuilt from its own
    (primitive) hyperparameters with its weights loaded, and the checkpoint; one line for a file
    that is not a dnnlab model: hyperparameters that do not build one, or weights that do not
    fit it.

    Not Lightning's ``load_from_checkpoint``: it reads the file again without the archive check
    and lets every mismatch through as a traceback.
    """
    from dnnlab.train.module import Classifier  # Lightning: only once a model is wanted

    path = Path(path)
    checkpoint = read_checkpoint(path, key)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict):
        raise checkpoint_error(
            key,
            path,
            "not a dnnlab model's checkpoint (no model settings in its hyper_parameters); "
            "give a checkpoint that dnnlab wrote",
        )
    try:
        model = Classifier(**hparams)
    except Exception as err:  # anything a file can hold: all the same to the user
        detail = str(err) if isinstance(err, ConfigError) else first_error(err)
        raise checkpoint_error(
            key, path, f"its hyper_parameters do not build a model ({one_line(detail)})"
        ) from None
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except Exception as err:
        raise checkpoint_error(
            key, path, f"its weights do not fit its own model settings ({first_error(err)})"
        ) from None
    return model, checkpoint
