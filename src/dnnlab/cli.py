"""``train.py``'s error handling: any mistake on the command line becomes one line and exit code 2.

Hydra prints its own errors (unknown group option, misspelled key, unparsable override) with a
hint about ``HYDRA_FULL_ERROR`` and exits with 1. :func:`entry_point` asks Hydra to let every
exception through instead and reports it as ``error: <one line>`` naming the key, the bad value
and the valid choices, with the exit code of the error's kind (2 for bad input, 3 for a diverged
run). ``HYDRA_FULL_ERROR=1`` still shows the full traceback.

A job's own error (:func:`run_job`) is reported the same way and marks its run folder with a
``FAILED`` file; in a sweep (``-m``) Hydra's launcher then goes on with the next member, and the
exit code is non-zero if any member failed.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from dnnlab.config import CONFIG_DIR, group_options
from dnnlab.errors import ConfigError, DnnlabError, invalid_choice, one_line, unknown_key
from dnnlab.members import SWEPT, note_swept_keys
from dnnlab.validation import check_override_types

log = logging.getLogger("dnnlab")

FAILED_FILE = "FAILED"  # written into a run folder whose job stopped with an error
FULL_ERROR = "HYDRA_FULL_ERROR"


class JobFailed(Exception):
    """A job's error in a launcher's worker process, already reported there: the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message, exit_code)  # both in args: the exception pickles back
        self.exit_code = exit_code


def _missing_option(err: MissingConfigException) -> str:
    missing = err.missing_cfg_file or ""
    group, _, option = missing.rpartition("/")
    if not group:
        return one_line(str(err).split("Config search path")[0])
    listed = re.search(r"Available options in '[^']*':\n((?:\t.*\n?)*)", str(err))
    options = listed.group(1).split() if listed else group_options(group)
    return str(invalid_choice(group, option, options))


def _bad_key(err: ConfigCompositionException) -> str:
    cause = err.__cause__
    text = str(err)
    override = re.search(r"use \+(\S+)", text)
    if isinstance(cause, OmegaConfBaseException) and "not in struct" in str(cause):
        if cause.full_key == cause.key and required_group(cause.key):  # ~optimizer optimizer.lr=1
            return str(removed_group(cause.key))
        parent = cause.parent_node
        valid = [str(k) for k in parent] if parent is not None else []
        given = override.group(1) if override else cause.full_key
        where = cause.full_key.rpartition(".")[0] or "the top level"
        return f"{unknown_key(given, cause.key, where, valid)} (to add a new key: +{given})"
    return one_line(text)


def _instantiation(err: InstantiationException) -> str:
    text = str(err).replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception.", "")
    key = re.search(r"full_key: (\S+)", text)
    head = text.split("\n")[0].rstrip(":")
    cause = err.__cause__
    reason = f"{type(cause).__name__}: {one_line(str(cause))}" if cause else one_line(text)
    return f"{key.group(1) + ': ' if key else ''}{head}: {reason}"


def user_message(err: BaseException) -> str | None:
    """One line for an error the user can fix from the command line; ``None`` for a bug."""
    if isinstance(err, DnnlabError):
        return str(err)
    if isinstance(err, MissingConfigException):
        return _missing_option(err)
    if isinstance(err, ConfigCompositionException):
        return _bad_key(err)
    if isinstance(err, OverrideParseException):
        detail = one_line(err.message.split("See https")[0])
        return f"cannot parse {err.override!r}: {detail}" if err.override else detail
    if isinstance(err, InstantiationException):
        return _instantiation(err)
    if isinstance(err, OmegaConfBaseException):  # the key, and the message without its context
        first = str(err).split("\n")[0]
        return f"{err.full_key}: {first}" if getattr(err, "full_key", None) else one_line(str(err))
    return None


def exit_code(err: BaseException) -> int:
    return err.exit_code if isinstance(err, DnnlabError) else 2


def required_group(name: str) -> bool:
    """A config group without a ``none`` option: removing it leaves the run without a part."""
    return (CONFIG_DIR / name).is_dir() and "none" not in group_options(name)


def removed_group(group: str) -> ConfigError:
    options = ", ".join(group_options(group))
    return ConfigError(f"~{group}: the {group} group cannot be removed; choose one of: {options}")


def check_removals(config_name: str, removed: list[str], groups: list[str]) -> None:
    """``~group`` only for a group the run can do without: one with a ``none`` option (the same
    as choosing it) or one chosen only on demand (``experiment``, default null)."""
    required = [group for group in removed if required_group(group)]
    if not required:
        return
    defaults = compose(config_name=config_name, overrides=groups, return_hydra_config=True)
    for group in required:
        if defaults.hydra.runtime.choices.get(group) is not None:
            raise removed_group(group)


def check_resolves(cfg: DictConfig, overrides: dict[str, str]) -> None:
    """Each overridden value resolves: ``model.hidden=${oops}`` names its key, not just the
    missing target, and fails now rather than wherever the value is first read."""
    for key, line in overrides.items():
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except InterpolationResolutionError as err:
            raise ConfigError(f"{line}: cannot be resolved: {str(err).splitlines()[0]}") from None


def check_command_line(cfg: DictConfig) -> None:
    """A removed group is one the run can do without; each value override resolves and keeps
    the type its key has before the command line's values."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    # As typed: an interpolation in an override (``model.hidden=${oops}``) is resolved below.
    typed = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
    parsed = OverridesParser.create().parse_overrides(typed)
    groups = [o.input_line for o in parsed if o.key_or_group in choices]
    removed = [o.key_or_group for o in parsed if o.is_delete() and o.key_or_group not in choices]
    check_removals(hydra_cfg.job.config_name, removed, groups)
    values = {
        o.key_or_group: o
        for o in parsed
        if o.key_or_group not in choices and not (o.is_delete() or o.is_hydra_override())
    }
    check_resolves(cfg, {key: o.input_line for key, o in values.items()})
    keys = [key for key, o in values.items() if not (o.is_add() or o.is_force_add())]
    if keys:
        baseline = compose(config_name=hydra_cfg.job.config_name, overrides=groups)
        check_override_types(cfg, baseline, keys)


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def report_failure(cfg: DictConfig, message: str) -> None:
    """The one line on stderr and in ``train.log``, and a ``FAILED`` file in the run folder."""
    folder = Path(str(cfg.paths.output_dir))
    line = f"{folder}: {message}" if _in_sweep() else message
    log.error(line)
    print(f"error: {line}", file=sys.stderr, flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FAILED_FILE).write_text(message + "\n")


failed_jobs: list[int] = []  # exit codes of this process's failed jobs
show_tracebacks = False  # HYDRA_FULL_ERROR=1: let every error through with its traceback
MAIN_PID = "DNNLAB_MAIN_PID"  # entry_point's process, inherited by a launcher's workers


def run_job(cfg: DictConfig, work: Callable[[DictConfig], Any]) -> Any:
    """Run one job; a user error or divergence is reported, recorded, and the job returns None.

    Returning rather than raising keeps Hydra from printing its own report and lets a sweep's
    launcher go on with the next member. In a launcher's worker process (e.g. joblib) the job
    raises :class:`JobFailed` instead, so that its failure reaches the main process's exit code.
    """
    try:
        check_command_line(cfg)
        return work(cfg)
    except Exception as err:
        message = user_message(err)
        if message is None or show_tracebacks:
            raise
        report_failure(cfg, message)
        if os.environ.get(MAIN_PID, str(os.getpid())) != str(os.getpid()):
            raise JobFailed(message, exit_code(err)) from None
        failed_jobs.append(exit_code(err))
        return None


def entry_point(hydra_main: Callable[[], Any]) -> int:
    """Call a ``@hydra.main`` function; the process's exit code, every user error in one line."""
    global show_tracebacks
    failed_jobs.clear()  # this call's jobs only
    os.environ[MAIN_PID] = str(os.getpid())
    note_swept_keys(sys.argv[1:])  # member folders of a sweep are named by these
    previous = os.environ.get(FULL_ERROR)
    show_tracebacks = previous == "1"
    os.environ[FULL_ERROR] = "1"  # Hydra re-raises instead of printing its own report
    try:
        hydra_main()
    except JobFailed as err:  # reported by the worker that ran the job
        return err.exit_code
    except Exception as err:
        message = user_message(err)
        if message is None or show_tracebacks:
            raise
        print(f"error: {message}", file=sys.stderr)
        return exit_code(err)
    finally:
        os.environ.pop(MAIN_PID, None)
        os.environ.pop(SWEPT, None)
        if previous is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = previous
    if len(failed_jobs) > 1:
        print(f"error: {len(failed_jobs)} sweep members failed", file=sys.stderr)
    return failed_jobs[0] if failed_jobs else 0
