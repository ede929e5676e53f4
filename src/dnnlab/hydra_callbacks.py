"""Hydra callbacks: a sweep report written when a multirun ends."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dnnlab.report import write_report

log = logging.getLogger(__name__)


class SweepReport(Callback):
    """After ``python train.py -m ...``, write report.md/.csv and val_curves.png in the sweep."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            path = write_report(config.hydra.sweep.dir)
        except FileNotFoundError as err:
            log.warning("no sweep report: %s", err)
            return
        log.info("sweep report: %s", path)
