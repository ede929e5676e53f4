"""The work of ``train.py`` as a plain function: compose a config, call :func:`run`."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dnnlab.building import build
from dnnlab.data import build_datamodule
from dnnlab.evaluation import evaluate_split, require_dropout, write_evaluation
from dnnlab.lr_finder import tune_learning_rate
from dnnlab.module import Classifier
from dnnlab.resume import resolve_ckpt_path
from dnnlab.run_folders import atomic_write_text
from dnnlab.summary import ParameterSummary
from dnnlab.transfer import load_lower_layers, transfer_callbacks
from dnnlab.validation import check_ranges

log = logging.getLogger(__name__)

# Lightning counts a block of data.steps_per_block optimizer steps as one batch in this warning;
# the module logs by optimizer step, so the comparison it makes does not apply.
warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def plain(node: Any) -> Any:
    """A config node as plain Python containers: the only form stored in checkpoints."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """Every named callback of the ``callbacks`` group; a null entry switches one off."""
    nodes = cfg.get("callbacks") or {}
    return [build(node, f"callbacks.{name}") for name, node in nodes.items() if node]


def build_loggers(cfg: DictConfig) -> list[Any]:
    nodes = cfg.get("logger") or {}
    return [build(node, f"logger.{name}") for name, node in nodes.items() if node]


def compile_forward(net: nn.Module) -> None:
    """``torch.compile`` the network's ``forward``; the module, and so its state_dict keys and
    the checkpoints, stay plain.

    Not ``net.compile()``: on torch 2.13 compiling ``__call__`` in place traced nothing here (no
    frame compiled, results bit-identical to eager). The compiled forward does not see hooks
    added later; the gradient diagnostics run their sampled pass eagerly for that.
    """
    net.forward = torch.compile(net.forward)


def build_model(cfg: DictConfig, datamodule: Any) -> Classifier:
    model = Classifier(
        model=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")) or None,
        input_shape=list(datamodule.input_shape),
        num_classes=datamodule.num_classes,
        regularization=plain(cfg.get("regularization")),
        clipping=plain(cfg.get("clipping")),
        loss=cfg.get("loss", "cross_entropy"),
    )
    if cfg.get("compile"):
        compile_forward(model.net)
    transfer = cfg.get("transfer")
    if transfer and transfer.ckpt_path:
        count = load_lower_layers(model.net, transfer.ckpt_path, transfer.layers)
        log.info("reused %d tensors of the lower layers of %s", count, transfer.ckpt_path)
    return model


def build_trainer(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> L.Trainer:
    callbacks = [*build_callbacks(cfg), *extra_callbacks]
    if cfg.trainer.get("enable_model_summary", True):  # in place of Lightning's own summary
        callbacks.append(ParameterSummary(max_depth=2))  # counts BN statistics as Keras does
    return build(cfg.trainer, "trainer", callbacks=callbacks, logger=build_loggers(cfg) or False)


def run(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns the final metrics as plain floats.

    With ``tune.lr_find=true`` the LR range test runs first; without ``tune.use_for`` it only
    reports its suggestion (the book: find the rate, then train with it).
    """
    started = time.perf_counter()
    check_ranges(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    samples = cfg.get("mc_dropout", {}).get("samples", 0) if cfg.get("test") else 0
    if samples:
        require_dropout(model, samples)  # now, not after the whole training
    trainer = build_trainer(cfg, [*extra_callbacks, *transfer_callbacks(cfg.get("transfer"))])
    if cfg.get("tune") and cfg.tune.lr_find:
        suggestion = tune_learning_rate(cfg, model, datamodule, trainer)
        if not cfg.tune.use_for:  # find only; the printed override trains with it
            metrics = {"lr_find/suggestion": suggestion}
            write_summary(cfg, trainer, metrics, time.perf_counter() - started)
            return metrics
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        if not best:
            log.warning("no best checkpoint was saved; testing the final weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if samples:
            metrics.update(evaluate_test_split(cfg, model, datamodule, trainer))
    metrics.pop("step", None)
    write_summary(cfg, trainer, metrics, time.perf_counter() - started)
    return metrics


def flat_hparams(node: Any, prefix: str = "") -> dict[str, Any]:
    """The config as flat ``a.b.c`` keys with TensorBoard-friendly values (lists as strings)."""
    flat: dict[str, Any] = {}
    for key, value in (plain(node) or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        else:
            is_scalar = isinstance(value, (int, float, str, bool))
            flat[name] = value if is_scalar else str(value)
    return flat


def write_summary(
    cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float], seconds: float
) -> None:
    """``metrics.json`` in the run folder (read by scripts/report.py) and TensorBoard's HParams.

    The HParams entry is written once, at the end, with the run's real final metrics.
    ``metrics.json`` marks a finished run, so it is written whole or not at all (a full disk).
    """
    if not trainer.is_global_zero:
        return
    summary = {
        "status": "ok",
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(seconds, 3),
        "metrics": metrics,
    }
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    hparams = {k: v for k, v in flat_hparams(cfg).items() if not k.startswith(("paths.", "hydra."))}
    hp_metrics = {f"hparam/{k}": v for k, v in metrics.items()}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, hp_metrics)
            logger.experiment.flush()  # on disk now: its writer thread would flush in 2 minutes


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
        logger.log_metrics({f"test_eval/{k}": v for k, v in metrics.items()}, trainer.global_step)
    log.info("test set: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics
