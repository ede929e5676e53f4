"""Sweep member folders named by their setting: ``0_model.activation=elu``, not just ``0``.

Hydra names a member ``hydra.sweep.subdir``; :func:`member_dir` (the resolver ``member_dir``)
makes it the job number followed by the overrides that the sweep varies: those swept on the
command line (a comma list, ``range(...)``, ``choice(...)``; noted by :func:`note_swept_keys` in
the main process, and inherited by a parallel launcher's workers) and those of
``hydra.sweeper.params`` (an experiment's sweep, Optuna's search space). The constant overrides
of the command line stay in each member's ``.hydra/overrides.yaml``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from omegaconf import OmegaConf

SWEPT = "DNNLAB_SWEPT_KEYS"  # the command line's swept keys, for the jobs of this sweep
MOST_CHARACTERS = 120  # of a member folder's name (file systems allow 255 bytes)
UNSAFE = re.compile(r"[^\w.,=+\-\[\]]")  # a path separator, quote or space in a value


def swept_keys(arguments: Sequence[str]) -> list[str]:
    """The keys of the command line's sweep overrides (``key=a,b``), Hydra's own left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keys = []
    for argument in arguments:
        if argument.startswith("-"):
            continue
        try:
            override = parser.parse_override(argument)
        except Exception:  # Hydra reports a bad override itself, in one line
            continue
        if override.is_sweep_override() and not override.is_hydra_override():
            keys.append(override.key_or_group)
    return keys


def note_swept_keys(arguments: Sequence[str]) -> None:
    os.environ[SWEPT] = ",".join(swept_keys(arguments))


def member_dir(num: Any, overrides: Iterable[str] | None, sweeper_params: Any = None) -> str:
    """``<num>_<key>=<value>,...`` for the swept overrides of a job, or ``<num>`` without any."""
    swept = {k for k in os.environ.get(SWEPT, "").split(",") if k}
    if sweeper_params:
        swept |= {str(k) for k in sweeper_params}
    items = []
    for item in overrides or ():
        key = str(item).split("=", 1)[0].lstrip("+~")
        if key in swept:
            items.append(str(item).lstrip("+~"))
    if not items:
        return str(num)
    name = f"{num}_" + UNSAFE.sub("_", ",".join(items))
    return name if len(name) <= MOST_CHARACTERS else name[: MOST_CHARACTERS - 3] + "..."


def register() -> None:
    if not OmegaConf.has_resolver("member_dir"):
        OmegaConf.register_new_resolver("member_dir", member_dir)
