"""Datasets held in memory and sliced into batches."""

from __future__ import annotations

from omegaconf import DictConfig

from dnnlab.building import build
from dnnlab.data.datamodule import IdxDataModule

__all__ = ["IdxDataModule", "build_datamodule"]


def build_datamodule(cfg: DictConfig) -> IdxDataModule:
    """The run's ``data`` config as its datamodule (``train.py`` and ``eval.py`` alike)."""
    return build(cfg.data, "data")
