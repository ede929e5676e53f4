"""Datasets held in memory and sliced into batches."""

from __future__ import annotations

from omegaconf import DictConfig

from dnnlab.building import build
from dnnlab.data.datamodule import IdxDataModule

__all__ = ["IdxDataModule", "build_datamodule"]


def build_datamodule(cfg: DictConfig, key: str = "data") -> IdxDataModule:
    """The run's ``data`` config (at ``key``) as its datamodule (``train.py`` and ``eval.py``
    alike); the datamodule's errors name ``key``."""
    return build(cfg[key], key, key=key)
