"""``train.py``'s error handling: any mistake on the command line becomes one line and exit code 2.

Hydra prints its own errors (unknown group option, misspelled key, unparsable override) with a
hint about ``HYDRA_FULL_ERROR`` and exits with 1. :func:`entry_point` asks Hydra to let every
exception through instead and reports it as ``error: <one line>`` naming the key, the bad value
and the valid choices, with the exit code of the error's kind (2 for bad input, 3 for a diverged
run). ``HYDRA_FULL_ERROR=1`` still shows the full traceback.

A job's own error (:func:`run_job`) is reported the same way and marks its run folder with a
``FAILED`` file; so is a bug (with its traceback on stderr and in ``train.log``, exit code 1). In a
sweep (``-m``) the launcher then goes on with the next member, the sweep report lists the failed
members, and the exit code is non-zero if any member failed. A full or read-only disk is reported
in one line too (:func:`dnnlab.files.write_fault`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
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

from dnnlab.app.checks import check_override_types
from dnnlab.app.compose import CONFIG_DIR, group_options
from dnnlab.app.environment import ENVIRONMENT_FILE
from dnnlab.app.members import SWEPT, note_swept_keys
from dnnlab.app.run_folders import FolderInUse, Refused, check_name, check_new_folder
from dnnlab.console import FILE_ONLY, log_end_of_run
from dnnlab.errors import ConfigError, DnnlabError, invalid_choice, one_line, unknown_key
from dnnlab.evaluate.report import write_report
from dnnlab.files import FAILED_FILE, atomic_write_text, locate, write_fault

log = logging.getLogger("dnnlab")

FULL_ERROR = "HYDRA_FULL_ERROR"
BUG = 1  # the exit code of an error that is not the user's: a traceback goes with it


def _missing_option(err: MissingConfigException) -> str:
    missing = err.missing_cfg_file or ""
    group, _, option = missing.rpartition("/")
    if not group:
        return one_line(str(err).split("Config search path")[0])
    top, _, inner = group.partition("/")
    if inner and (CONFIG_DIR / group).is_dir():  # experiment=book/nope: an option in a subfolder
        return str(invalid_choice(top, f"{inner}/{option}", group_options(top)))
    if (CONFIG_DIR / group).is_dir():  # ours: the subfolders' options too (book/dropout)
        return str(invalid_choice(group, option, group_options(group)))
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
    return write_fault(err)  # a full, read-only or unwritable disk; None for anything else


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


def check_run_folder(cfg: DictConfig) -> None:
    """The job's folder holds no other run's files (Hydra's own, just written, aside)."""
    if cfg.get("name") is not None:
        check_name(cfg.name)
    folder = Path(str(cfg.paths.output_dir))
    own: tuple[str, ...] = ()
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if Path(hydra_cfg.runtime.output_dir).resolve() == folder.resolve():
            own = (str(hydra_cfg.output_subdir), f"{hydra_cfg.job.name}.log", ENVIRONMENT_FILE)
    check_new_folder(folder, "paths.output_dir", own)


def report_failure(cfg: DictConfig, message: str, code: int, mark: bool = True) -> None:
    """The one line on stderr and in ``train.log``, and a ``FAILED`` file in the run folder.

    ``FAILED`` holds the line and the exit code: a sweep's main process reads them back from the
    members a launcher ran in other processes.
    """
    folder = Path(str(cfg.paths.output_dir))
    line = f"{folder}: {message}" if _in_sweep() else message
    raising, logging.raiseExceptions = logging.raiseExceptions, False  # train.log on a full disk
    try:
        log.error(line, extra=FILE_ONLY)  # the console has it on stderr, once
    finally:
        logging.raiseExceptions = raising
    print(f"error: {line}", file=sys.stderr, flush=True)
    failed_jobs[str(folder.resolve())] = code
    if not mark:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / FAILED_FILE, f"{message}\nexit code {code}\n")
    except OSError:
        return  # the disk fault just reported, most likely; the line above says what failed
    log_end_of_run(folder, failed=True)


def _log_traceback(line: str, err: BaseException) -> None:
    """The traceback into the job's log files (``train.log``), not again onto the console."""
    exc_info = (type(err), err, err.__traceback__)
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, line, None, exc_info)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


failed_jobs: dict[str, int] = {}  # run folder -> exit code, for this process's failed jobs
sweeps: dict[str, bool] = {}  # sweep folders of this call -> whether their report is still due
run_folder = ""  # the run's (or sweep's) folder, once Hydra's callbacks have checked it
show_tracebacks = False  # HYDRA_FULL_ERROR=1: let every error through with its traceback


def run_job(cfg: DictConfig, work: Callable[[DictConfig], Any]) -> Any:
    """Run one job; any error is reported and recorded, and in a sweep the job returns None.

    Returning rather than raising keeps Hydra from printing its own report and lets a sweep's
    launcher (in this process or another) go on with the next member. A bug in a single run is
    raised again after that: Python prints its traceback and exits with 1.
    """
    try:
        check_command_line(cfg)
        check_run_folder(cfg)
        return work(cfg)
    except Exception as err:
        if show_tracebacks:
            raise
        locate(err, cfg.paths.output_dir)
        message = user_message(err)
        if message is not None:
            report_failure(cfg, message, exit_code(err), mark=not isinstance(err, FolderInUse))
            return None
        message = f"{type(err).__name__}: {one_line(str(err))} (a bug: traceback in train.log)"
        _log_traceback(message, err)
        if not _in_sweep():
            report_failure(cfg, message, BUG)
            raise
        traceback.print_exception(err)
        report_failure(cfg, message, BUG)
        return None


def _read_exit_code(failed: Path) -> int:
    found = re.search(r"^exit code (\d+)$", failed.read_text(), re.MULTILINE)
    return int(found.group(1)) if found else BUG


def finish_sweep(sweep: str) -> None:
    """Count the sweep's failed members (from any process) and write its report if still due."""
    report_due = sweeps.pop(str(sweep), False)
    for failed in Path(str(sweep)).glob(f"*/{FAILED_FILE}"):
        failed_jobs.setdefault(str(failed.parent.resolve()), _read_exit_code(failed))
    if not report_due:
        return
    try:
        log.info("sweep report: %s", write_report(sweep))
    except FileNotFoundError as err:
        log.warning("no sweep report: %s", err)
    except OSError as err:
        log.warning("no sweep report: %s", write_fault(err) or err)


def _finish_sweeps() -> None:
    """Sweeps that stopped before Hydra's end-of-sweep callbacks: report them all the same."""
    for sweep in list(sweeps):
        finish_sweep(sweep)


def _exit_status() -> int:
    """0, or the exit code of the failed jobs: a bug's (1) first, else the first one's."""
    codes = list(failed_jobs.values())
    if len(codes) > 1:
        print(f"error: {len(codes)} sweep members failed", file=sys.stderr)
    return BUG if BUG in codes else (codes[0] if codes else 0)


def _quiet_write_faults(
    hook: Callable[[threading.ExceptHookArgs], Any],
) -> Callable[[threading.ExceptHookArgs], Any]:
    """A thread excepthook that logs a disk fault in one line instead of a traceback.

    TensorBoard writes its event files from a thread: the fault kills that thread (Python prints
    its traceback) and comes back in the main thread at the next write, reported there.
    """

    def excepthook(args: threading.ExceptHookArgs) -> None:
        fault = write_fault(args.exc_value) if args.exc_value is not None else None
        if fault is None:
            hook(args)
        else:
            log.warning("%s: %s", args.thread.name if args.thread else "a thread", fault)

    return excepthook


def entry_point(hydra_main: Callable[[], Any]) -> int:
    """Call a ``@hydra.main`` function; the process's exit code, every user error in one line.

    A sweep's report is written even when the sweep stops early (e.g. a member's worker died).
    """
    global show_tracebacks, run_folder
    failed_jobs.clear()  # this call's jobs only
    sweeps.clear()
    run_folder = ""
    note_swept_keys(sys.argv[1:])  # member folders of a sweep are named by these
    previous = os.environ.get(FULL_ERROR)
    show_tracebacks = previous == "1"
    os.environ[FULL_ERROR] = "1"  # Hydra re-raises instead of printing its own report
    thread_hook = threading.excepthook
    threading.excepthook = _quiet_write_faults(thread_hook)
    try:
        hydra_main()
    except Refused as stop:  # by a Hydra callback, before anything was written
        print(f"error: {user_message(stop.error)}", file=sys.stderr)
        return exit_code(stop.error)
    except Exception as err:
        in_sweep = bool(sweeps)
        _finish_sweeps()  # their failed members count below
        locate(err, run_folder)  # Hydra's own writes into the run folder (its saved config)
        message = user_message(err)
        if message is None and in_sweep and failed_jobs and not show_tracebacks:
            # e.g. Optuna's "No trials are completed yet": the members' errors, shown above
            reason = f"{type(err).__name__}: {one_line(str(err))}"
            print(f"error: the sweep stopped after its failed members: {reason}", file=sys.stderr)
            return _exit_status()
        if message is None or show_tracebacks:
            raise
        print(f"error: {message}", file=sys.stderr)
        return exit_code(err)
    finally:
        _finish_sweeps()
        threading.excepthook = thread_hook
        os.environ.pop(SWEPT, None)
        if previous is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = previous
    return _exit_status()
