"""The work of ``train.py`` as a plain function: compose a config, call :func:`run`."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from dnnlab.module import Classifier

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
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [instantiate(node) for node in (cfg.get("logger") or {}).values() if node]


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return instantiate(cfg.data, _convert_="all")


def build_model(cfg: DictConfig, datamodule: Any) -> Classifier:
    return Classifier(
        model=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")) or None,
        input_shape=list(datamodule.input_shape),
        num_classes=datamodule.num_classes,
        loss=cfg.get("loss", "cross_entropy"),
    )


def build_trainer(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> L.Trainer:
    callbacks = [*build_callbacks(cfg), *extra_callbacks]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg) or False)


def run(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns the final metrics as plain floats."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer = build_trainer(cfg, extra_callbacks)
    for lg in trainer.loggers:
        lg.log_hyperparams(plain(cfg))
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        if not best:
            log.warning("no best checkpoint was saved; testing the final weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics
