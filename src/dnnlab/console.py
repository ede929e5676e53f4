"""What a run prints: the lines a learner needs, in the console and in ``train.log``.

Lightning reports through Python logging (its ``rank_zero`` loggers) and, once imported under
Hydra's logging set-up, would print every line twice: through Hydra's console handler and its own
stream handler on the ``lightning`` logger. :func:`configure_logging` keeps one path (Hydra's
handlers: console and ``train.log``) and drops, by a filter on Lightning's named loggers, the
lines that say nothing about this run (tips for cloud services, absent TPUs/HPUs, the device
probe, the note that our own parameter summary replaces Lightning's).

Every run ends with :func:`log_end_of_run`: where its files went, its final metrics and the
gradient diagnostics' verdict; a failed run says the same with its error.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("dnnlab")

# ``log.info(..., extra=FILE_ONLY)``: into train.log, not onto the console (the error line is
# already on stderr; the progress bar already shows an epoch's metrics).
FILE_ONLY = {"console": False}

# Lightning's info lines that carry nothing about the run: matched at the start of the message.
LIGHTNING_NOISE = (
    "💡 Tip:",  # litlogger / litmodels advertisements
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "IPU available:",
    "Trainer already configured with model summary callbacks",  # ours replaces Lightning's
    "Loaded model weights from the checkpoint",  # after "Restoring states from ...": the same file
)
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
QUIET_LOGGERS = {"alembic": logging.WARNING}  # Optuna's RDB storage migrations


class DropLines(logging.Filter):
    """Drop INFO-or-lower records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not record.getMessage().startswith(self.prefixes)


class ConsoleFilter(logging.Filter):
    """On a console handler: leave out records logged with ``extra=FILE_ONLY``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


def _add_once(target: logging.Logger | logging.Handler, kind: type, *args: Any) -> None:
    if not any(isinstance(f, kind) for f in target.filters):
        target.addFilter(kind(*args))


def configure_logging() -> None:
    """One console line per record, without Lightning's noise; call once Lightning is imported.

    Under Hydra (the root logger has its handlers) Lightning's own stream handlers are removed
    and its records go to the root's: the console once, and ``train.log``.
    """
    root = logging.getLogger()
    if root.handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if _is_console(h)]:
                logger.removeHandler(handler)
            logger.propagate = True
    for name in LIGHTNING_LOGGERS:
        _add_once(logging.getLogger(name), DropLines, LIGHTNING_NOISE)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for handler in root.handlers:
        if _is_console(handler):
            _add_once(handler, ConsoleFilter)
    # torch 2.13 deprecates an isinstance check that Lightning 2.6's data fetching still makes
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


# ------------------------------------------------------------------------- epoch and run lines
def epoch_line(epoch: int, max_epochs: int, metrics: Mapping[str, Any], seconds: float) -> str:
    """``epoch 3/10: train/loss_epoch=0.5123 train/acc=0.8211 val/loss=... (12.3 s)``."""
    keys = ("train/loss_epoch", "train/acc", "val/loss", "val/acc")
    shown = " ".join(f"{k}={shown_value(float(metrics[k]))}" for k in keys if k in metrics)
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    return f"epoch {epoch}{total}: {shown} ({tidy_seconds(seconds)})"


def log_epoch(trainer: Any, seconds: float) -> None:
    """An epoch's line into ``train.log`` (rank zero); onto the console too without a progress
    bar, which otherwise shows the same values."""
    if not trainer.is_global_zero or trainer.sanity_checking:
        return
    line = epoch_line(
        trainer.current_epoch + 1, trainer.max_epochs, trainer.callback_metrics, seconds
    )
    log.info(line, extra=FILE_ONLY if trainer.progress_bar_callback is not None else None)


def shown_value(value: float) -> str:
    """4 decimals for losses and accuracies, 4 significant digits for the very small or large."""
    return f"{value:.4f}" if 0.01 <= abs(value) < 1000 or value == 0 else f"{value:.4g}"


METRIC_GROUPS = ("train/", "val/", "test/", "plain/", "mc/", "test_eval/", "lr_find/")


def metric_lines(metrics: Mapping[str, float]) -> list[str]:
    """The metrics, one line per kind (train, val, test, MC dropout, ...)."""
    lines = []
    rest = dict(metrics)
    for prefix in METRIC_GROUPS:
        group = {k: rest.pop(k) for k in list(rest) if k.startswith(prefix)}
        if group:
            lines.append("  ".join(f"{k}={shown_value(v)}" for k, v in group.items()))
    if rest:
        lines.append("  ".join(f"{k}={shown_value(v)}" for k, v in rest.items()))
    return lines


def read_verdict(folder: Path) -> list[str]:
    """The gradient diagnostics' verdict written into the run folder (none when they were off)."""
    from dnnlab.callbacks.diagnostics.callback import VERDICT_FILE

    try:
        verdict = json.loads((folder / VERDICT_FILE).read_text()).get("verdict") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [str(line) for line in verdict]


def end_of_run(
    folder: Path,
    metrics: Mapping[str, float] | None = None,
    failed: bool = False,
    epochs: int | None = None,
    steps: int | None = None,
    seconds: float | None = None,
) -> str:
    """The closing lines of a run: how it ended, its folder, its metrics and the verdict."""
    facts = [f"{epochs} epochs"] if epochs is not None else []
    facts += [f"{steps} optimizer steps"] if steps is not None else []
    facts += [tidy_seconds(seconds)] if seconds is not None else []
    state = (
        "run failed (the error line above; FAILED in the run folder)" if failed else "run finished"
    )
    lines = [f"{state} ({', '.join(facts)})" if facts else state, f"  run folder: {folder}"]
    lines += [f"  {line}" for line in metric_lines(metrics or {})]
    lines += [f"  gradient diagnostics: {line}" for line in read_verdict(folder)]
    return "\n".join(lines)


def log_end_of_run(
    folder: str | Path, metrics: Mapping[str, float] | None = None, **facts: Any
) -> None:
    """Log :func:`end_of_run` (console and ``train.log``)."""
    log.info(end_of_run(Path(folder), metrics, **facts))


def tidy_seconds(seconds: float) -> str:
    """``16.2 s``, ``3 min 12 s``, ``1 h 4 min``: a duration as a person reads it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"
