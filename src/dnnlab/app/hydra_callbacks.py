"""Hydra callbacks: run folders checked before Hydra writes into them, a report after a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dnnlab.app import cli
from dnnlab.app.run_folders import Refused, check_member_folders, check_name, check_new_folder
from dnnlab.errors import ConfigError


def _folder(config: DictConfig, key: str) -> Path:
    """``config.<key>`` resolved as Hydra's job set-up will: with the Hydra config in place."""
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        return Path(str(OmegaConf.select(config, key)))
    finally:
        HydraConfig.instance().cfg = saved


class RunFolders(Callback):
    """Refuse a run or sweep folder that already holds files, before Hydra saves its config and
    opens its log there; a sweep's members must get a folder each.

    Hydra's job set-up writes ``.hydra/`` and ``<job>.log`` into the run folder before any job
    callback or the task itself runs: only the run-level hooks come early enough.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            if config.get("name") is not None:
                check_name(config.name)
            folder = _folder(config, "hydra.run.dir")
            check_new_folder(folder, "hydra.run.dir")
        except ConfigError as err:
            raise Refused(err) from err
        cli.run_folder = str(folder)  # named by a disk fault in Hydra's writes there

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = _folder(config, "hydra.sweep.dir")
        try:
            if config.get("name") is not None:
                check_name(config.name)
            check_new_folder(sweep, "hydra.sweep.dir")
            check_member_folders(str(OmegaConf.to_container(config.hydra.sweep)["subdir"]))
        except ConfigError as err:
            raise Refused(err) from err
        cli.sweeps.setdefault(str(sweep), False)  # its members' failures count in the exit code
        cli.run_folder = str(sweep)


class SweepReport(Callback):
    """After ``python train.py -m ...``, write report.md/.csv and val_curves.png in the sweep.

    Registered when the sweep starts, so that ``cli.entry_point`` still writes it if the sweep
    stops early.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        cli.sweeps[str(_folder(config, "hydra.sweep.dir"))] = True

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        cli.finish_sweep(str(_folder(config, "hydra.sweep.dir")))
