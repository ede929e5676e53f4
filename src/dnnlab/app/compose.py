"""Compose the project's Hydra config outside ``train.py`` (tests, scripts, notebooks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"


def compose_config(
    overrides: Sequence[str] = (), output_dir: str | Path | None = None, name: str = "train"
) -> DictConfig:
    """The config ``train.py`` would see for these overrides, with the run folder set directly."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def group_options(group: str) -> list[str]:
    """The options of a config group: the files in ``conf/<group>/`` and its subfolders
    (``experiment=book/dropout``), less the ``_``-named parts other options include."""
    folder = CONFIG_DIR / group
    return sorted(
        p.relative_to(folder).with_suffix("").as_posix()
        for p in folder.rglob("*.yaml")
        if not p.name.startswith("_")
    )
