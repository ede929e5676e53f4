"""Datasets held in memory and sliced into batches."""

from dnnlab.data.datamodule import IdxDataModule

__all__ = ["IdxDataModule"]
