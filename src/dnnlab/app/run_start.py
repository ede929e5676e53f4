"""Hydra callbacks at a run's start: refuse a bad config before its run folder exists, then set
up the console and record the environment in the folder.

Hydra's ``run_job`` creates the run folder and writes ``.hydra/`` before it calls the task (and
before ``on_job_start``), so a command line refused inside the task leaves a folder behind that
holds nothing but that refusal. ``on_run_start`` comes before ``run_job``: the checks that need
no data (:func:`dnnlab.app.cli.check_command_line`, :func:`dnnlab.app.checks.check_ranges`) run
there. Hydra turns an ``Exception`` raised in a callback into a warning and goes on, so a refusal
travels as :class:`Refused` (a ``BaseException``, as ``SystemExit`` is) to
:func:`dnnlab.app.cli.entry_point`, which reports it as the one ``error:`` line of any user error.
With ``HYDRA_FULL_ERROR=1``, or for an error that is a bug, nothing is raised here: the job runs
the same checks and raises with the traceback.

A multirun has no ``on_run_start``: each member is checked inside its job, and a refused member
keeps its folder, marked ``FAILED``, beside the others (the sweep goes on).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from dnnlab.app.run_folders import Refused
from dnnlab.errors import ConfigError


def task_config(config: DictConfig) -> DictConfig:
    """The config the task will get: Hydra's own node removed, as ``run_job`` does."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def check_before_run_folder(config: DictConfig) -> None:
    """The command line's checks that read no data, on the composed config (Hydra node
    included), before Hydra creates the run folder."""
    from dnnlab.app.checks import check_ranges
    from dnnlab.app.cli import check_command_line

    HydraConfig.instance().set_config(config)  # run_job sets it again, with the run folder
    task = task_config(config)
    check_command_line(task)
    check_ranges(task)
    check_named_checkpoint(task, resumes=config.hydra.job.config_name == "train")


def check_named_checkpoint(task: DictConfig, resumes: bool) -> None:
    """A ``ckpt_path`` given as a file (train.py's resume, eval.py's checkpoint) exists."""
    from pathlib import Path

    from dnnlab.train.checkpoint_files import require_file
    from dnnlab.train.resume import LAST

    if OmegaConf.is_missing(task, "ckpt_path"):  # eval.py's, which has no default
        raise ConfigError(
            "ckpt_path is required: give the checkpoint to evaluate, e.g. "
            "ckpt_path=logs/runs/<name>/<run>/checkpoints/last.ckpt"
        )
    value = task.get("ckpt_path")
    if isinstance(value, str) and value != LAST:
        hint = " (or use ckpt_path=last)" if resumes else ""
        require_file(Path(value), "ckpt_path", hint)


class RunStart(Callback):
    """Checks before the run folder exists; the console and ``environment.json`` in every job."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dnnlab.app import cli

        try:
            check_before_run_folder(config)
        except Exception as err:
            if cli.user_message(err) is not None and not cli.show_tracebacks:
                raise Refused(err) from err
            # a bug, or HYDRA_FULL_ERROR=1: the job repeats the checks and raises it

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dnnlab.app.environment import write_environment
        from dnnlab.console import configure_logging

        configure_logging()  # before the task: its first error line is printed once
        if os.environ.get("LOCAL_RANK", "0") == "0":  # DDP's other processes share the folder
            write_environment(config.hydra.runtime.output_dir)
