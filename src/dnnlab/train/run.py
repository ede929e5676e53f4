"""The work of ``train.py`` as a plain function: compose a config, call :func:`run`."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from dnnlab.app.checks import check_ranges
from dnnlab.building import build
from dnnlab.callbacks.summary import ParameterSummary
from dnnlab.console import configure_logging, log_end_of_run
from dnnlab.data import build_datamodule
from dnnlab.errors import ConfigError
from dnnlab.evaluate.evaluation import evaluate_split, require_dropout, write_evaluation
from dnnlab.files import atomic_write_text
from dnnlab.ranges import shown
from dnnlab.train import blocks
from dnnlab.train.checkpointing import remove_stale_temporaries
from dnnlab.train.lr_finder import tune_learning_rate
from dnnlab.train.memory import check_fits
from dnnlab.train.module import Classifier
from dnnlab.train.resume import ResumeSettings, check_resume, resolve_ckpt_path, run_settings
from dnnlab.train.threads import AUTO, ThreadChoice, check_threads, choose_threads
from dnnlab.train.transfer import load_lower_layers, transfer_callbacks

log = logging.getLogger(__name__)


def plain(node: Any) -> Any:
    """A config node as plain Python containers: the only form stored in checkpoints."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """Every named callback of the ``callbacks`` group; a null entry switches one off."""
    nodes = cfg.get("callbacks") or {}
    return [build(node, f"callbacks.{name}") for name, node in nodes.items() if node]


# Loggers of optional extras: _target_ suffix -> (module it needs, how to install it).
OPTIONAL_LOGGERS = {"MLFlowLogger": ("mlflow", 'pip install -e ".[mlflow]" (mlflow-skinny)')}


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Every logger of the ``logger`` group; one whose extra is not installed is one line."""
    import importlib.util

    nodes = cfg.get("logger") or {}
    for name, node in nodes.items():
        target = str((node or {}).get("_target_", ""))
        for suffix, (module, install) in OPTIONAL_LOGGERS.items():
            if target.endswith(suffix) and importlib.util.find_spec(module) is None:
                raise ConfigError(f"logger.{name}: {target} needs {module}: {install}")
    return [build(node, f"logger.{name}") for name, node in nodes.items() if node]


def build_model(cfg: DictConfig, datamodule: Any) -> Classifier:
    """The module of the config, refused in one line if the machine cannot hold it."""
    model_node, optimizer_node = plain(cfg.model), plain(cfg.optimizer)
    input_dim = math.prod(datamodule.input_shape)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    check_fits(model_node, optimizer_node, input_dim, datamodule.num_classes, accelerator)
    model = Classifier(
        model=model_node,
        optimizer=optimizer_node,
        scheduler=plain(cfg.get("scheduler")) or None,
        input_shape=list(datamodule.input_shape),
        num_classes=datamodule.num_classes,
        regularization=plain(cfg.get("regularization")),
        clipping=plain(cfg.get("clipping")),
        loss=cfg.get("loss", "cross_entropy"),
    )
    if cfg.get("compile"):
        model.compile_step()
    transfer = cfg.get("transfer")
    if transfer and transfer.ckpt_path:
        count = load_lower_layers(model.net, transfer.ckpt_path, transfer.layers, "transfer")
        log.info("reused %d tensors of the lower layers of %s", count, transfer.ckpt_path)
    return model


def _clip_instead(value: Any, cfg: DictConfig) -> str:
    algorithm = cfg.trainer.get("gradient_clip_algorithm") or "norm"
    return f"use clipping={algorithm} clipping.threshold={shown(value)}"


def _accumulate_instead(value: Any, cfg: DictConfig) -> str:
    batch = cfg.get("data", {}).get("batch_size")
    if isinstance(value, int) and value > 1 and isinstance(batch, int):
        larger = f"data.batch_size={value * batch}"
        return f"for {value} batches of {batch} per optimizer step use {larger}"
    return "use a larger data.batch_size instead"


# Trainer flags Lightning applies only under automatic optimization (at fit it refuses them
# under the module's manual optimization): flag -> (its values that are off, what to use).
MANUAL_OPTIMIZATION_FLAGS: dict[str, tuple[tuple[Any, ...], Callable[[Any, DictConfig], str]]] = {
    "gradient_clip_val": ((None, 0), _clip_instead),
    "gradient_clip_algorithm": ((None,), lambda v, cfg: f"use clipping={v} and clipping.threshold"),
    "accumulate_grad_batches": ((1,), _accumulate_instead),
}


def check_trainer_flags(cfg: DictConfig) -> None:
    """Refuse a Lightning flag that manual optimization cannot honour, naming this project's
    way to get it, before the Trainer is built (Lightning only says so once fit starts)."""
    for flag, (off, instead) in MANUAL_OPTIMIZATION_FLAGS.items():
        value = cfg.trainer.get(flag)
        if flag in cfg.trainer and value not in off:
            raise ConfigError(
                f"trainer.{flag}={shown(value)} does not apply (training uses manual "
                f"optimization, a block of optimizer steps per Lightning batch); "
                f"{instead(value, cfg)}"
            )


def build_trainer(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """The Trainer of the config; its flags and process count are checked before it builds or
    launches anything, so a refusal is one line from one process."""
    check_trainer_flags(cfg)
    steps_per_block = cfg.data.get("steps_per_block", 1)
    # The user's limit_train_batches and val_check_interval count optimizer steps; Lightning's
    # count blocks (dnnlab.train.blocks).
    flags, step_settings = blocks.trainer_flags(cfg.trainer, steps_per_block)
    callbacks = [*build_callbacks(cfg), *extra_callbacks, step_settings]
    if cfg.trainer.get("enable_model_summary", True):  # in place of Lightning's own summary
        callbacks.append(ParameterSummary(max_depth=2))  # counts BN statistics as Keras does
    callbacks += blocks.progress_bar(callbacks, cfg.trainer.get("enable_progress_bar", True))
    loggers = build_loggers(cfg) or False
    trainer = build({**plain(cfg.trainer), **flags}, "trainer", callbacks=callbacks, logger=loggers)
    # DDP starts its other processes at fit: refuse now, in this process alone.
    blocks.check_block_for_processes(steps_per_block, trainer.world_size, "data")
    return trainer


def run(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns the final metrics as plain floats.

    With ``tune.lr_find=true`` the LR range test runs first; without ``tune.use_for`` it only
    reports its suggestion (the book: find the rate, then train with it). A resume
    (``ckpt_path``) that would change the run is refused before any data is read.
    """
    started = time.perf_counter()
    configure_logging()
    check_ranges(cfg)
    check_threads(cfg.get("threads", AUTO))  # auto or a count: text is refused here
    ckpt_path = resolve_ckpt_path(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg, "data")
    plan = check_resume(cfg, ckpt_path, datamodule) if ckpt_path else None
    if ckpt_path:  # what a writer killed mid-write left beside the checkpoint
        remove_stale_temporaries(Path(ckpt_path).parent)
    model = build_model(cfg, datamodule)  # its settings checked: the thread rule builds it too
    threads = run_threads(cfg, datamodule)
    samples = cfg.get("mc_dropout", {}).get("samples", 0) if cfg.get("test") else 0
    if samples:
        require_dropout(model, samples, "mc_dropout")  # now, not after the whole training
    settings = ResumeSettings(run_settings(cfg), plan)
    callbacks = [*extra_callbacks, *transfer_callbacks(cfg.get("transfer"), "transfer"), settings]
    trainer = build_trainer(cfg, callbacks)
    if cfg.get("tune") and cfg.tune.lr_find:
        suggestion = tune_learning_rate(cfg, model, datamodule, trainer)
        if not cfg.tune.use_for:  # find only; the printed override trains with it
            metrics = {"lr_find/suggestion": suggestion}
            write_summary(cfg, trainer, metrics, time.perf_counter() - started, {}, threads)
            log_end_of_run(cfg.paths.output_dir, metrics, seconds=time.perf_counter() - started)
            return metrics
    with blocks.lightning_counts_blocks():
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    tested: dict[str, Any] = {}
    if cfg.get("test"):
        best = tested_checkpoint(trainer, ckpt_path)
        tested = {"tested_checkpoint": best}  # null: the final weights
        # verbose=False: the end-of-run lines show the test metrics, not a second table
        trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if samples:
            metrics.update(evaluate_test_split(cfg, model, datamodule, trainer))
    metrics.pop("step", None)
    seconds = time.perf_counter() - started
    write_summary(cfg, trainer, metrics, seconds, tested, threads)
    if trainer.is_global_zero:
        epochs, steps = trainer.current_epoch, trainer.global_step
        log_end_of_run(cfg.paths.output_dir, metrics, epochs=epochs, steps=steps, seconds=seconds)
    return metrics


def run_threads(cfg: DictConfig, datamodule: Any) -> ThreadChoice:
    """Apply the ``threads`` setting for the configured network (:mod:`dnnlab.train.threads`)."""
    input_dim = math.prod(datamodule.input_shape)
    batch = int(cfg.data.get("batch_size", 32))
    model = plain(cfg.model)
    return choose_threads(cfg.get("threads", AUTO), model, input_dim, datamodule.num_classes, batch)


def tested_checkpoint(trainer: L.Trainer, resumed_from: str | None) -> str | None:
    """The best checkpoint to test, or ``None`` for the final weights.

    A resumed run keeps the best checkpoint of the run it continues; when that run's folder has
    moved since, the file of that name beside the resumed checkpoint is the one, and when it is
    gone too, the final weights are tested, with a warning, rather than failing after training.
    """
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    if not best:
        log.warning("no best checkpoint was saved; testing the final weights")
        return None
    if Path(best).is_file():
        return best
    beside = Path(resumed_from).parent / Path(best).name if resumed_from else None
    if beside is not None and beside.is_file():
        log.warning("the best checkpoint %s has moved; testing %s", best, beside)
        return str(beside)
    log.warning("the best checkpoint %s no longer exists; testing the final weights", best)
    return None


# Config groups that are the run's machinery, not its settings: never HParams columns.
MACHINERY_GROUPS = ("hydra", "paths", "trainer", "callbacks", "logger", "debug")
CURVES = ("train/", "val/", "test/")  # the tags HParams may show as metrics


def hparam_value(value: Any) -> bool | int | float | str:
    """A value TensorBoard's HParams tab can show (lists and null as text)."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def run_hparams(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The settings that tell runs apart: the chosen option of each config group, every
    command-line (or sweep) override with its resolved value, and the seed.

    The flattened config would be some 140 columns (``_target_``s, paths that differ in every
    run); these are what one compares, e.g. ``model.activation`` relu against elu. Outside a
    Hydra app (a config from :func:`dnnlab.app.compose.compose_config`) no choices are known.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hparams: dict[str, bool | int | float | str] = {}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        for group, option in hydra_cfg.runtime.choices.items():
            if option is not None and group.split("/")[0] not in MACHINERY_GROUPS:
                hparams[group] = str(option)
        parsed = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
        for override in parsed:
            key = override.key_or_group
            if key in hparams or override.is_delete() or override.is_hydra_override():
                continue
            value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
            hparams[key] = hparam_value(plain(value))
    hparams["seed"] = cfg.get("seed")
    return hparams


def write_summary(
    cfg: DictConfig,
    trainer: L.Trainer,
    metrics: dict[str, float],
    seconds: float,
    extra: dict[str, Any] | None = None,
    threads: ThreadChoice | None = None,
) -> None:
    """``metrics.json`` in the run folder (read by scripts/report.py) and TensorBoard's HParams.

    The HParams entry is written once, at the end, with the run's real final metrics. ``extra``
    (which checkpoint was tested) goes into ``metrics.json`` beside them, and so do the thread
    counts the run used (``threads``), also an HParams column (``threads_used``).
    ``metrics.json`` marks a finished run, so it is written whole or not at all (a full disk).
    """
    if not trainer.is_global_zero:
        return
    summary = {
        "status": "ok",
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(seconds, 3),
        **(extra or {}),
        **({"threads": threads.record()} if threads else {}),
        "metrics": metrics,
    }
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    hparams = run_hparams(cfg)
    if threads:
        hparams["threads_used"] = threads.threads
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            write_hparams(logger, hparams, [k for k in metrics if k.startswith(CURVES)])


def write_hparams(logger: TensorBoardLogger, hparams: dict[str, Any], metrics: list[str]) -> None:
    """TensorBoard's HParams entry, its metrics being the run's own curves (their last values);
    then the event file is flushed and closed.

    Lightning's ``log_hyperparams`` would log every metric again at step 0 (a point at the far
    left of each chart, in an ``hparam/`` group), and the entry is written after fit and test
    have closed their writers, so it goes into a new event file that nothing flushed: a process
    that ended before the writer's periodic flush lost it (one run in nine).
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    writer = logger.experiment._get_file_writer()  # reopens the file the test closed (private)
    for summary in hparams_summary(hparams, dict.fromkeys(metrics, 0.0)):
        writer.add_summary(summary)
    logger.hparams.update(hparams)  # hparams.yaml keeps them beside the module's
    logger.finalize("success")  # flush and close now, not whenever the process ends


def evaluate_test_split(
    cfg: DictConfig, model: Classifier, datamodule: Any, trainer: L.Trainer
) -> dict[str, float]:
    """MC dropout next to plain predictions on the test set (weights of the tested checkpoint).

    ``predictions.csv`` and ``evaluation.json`` go into the run folder, the metrics to the loggers.
    """
    if not trainer.is_global_zero:  # every DDP process holds the whole test set: one writes
        return {}
    out = Path(cfg.paths.output_dir)
    samples, seed = cfg.mc_dropout.samples, cfg.mc_dropout.seed
    metrics = evaluate_split(model, datamodule, "test", out, samples, seed)
    write_evaluation(out, metrics)
    for logger in trainer.loggers:
        logger.log_metrics({f"test/{k}": v for k, v in metrics.items()}, trainer.global_step)
    log.info("test set: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics
