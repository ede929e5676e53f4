"""Evaluation beyond ``trainer.test``: MC dropout, predictive uncertainty, calibration, predictions.

MC dropout (Gal & Ghahramani, in the book's ch. 11): keep *only* the dropout layers stochastic at
test time and average many forward passes; BatchNorm stays in inference mode, so its running
statistics never change.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from dnnlab.data import IdxDataModule, build_datamodule
from dnnlab.errors import ConfigError, lookup, one_line
from dnnlab.files import atomic_write_text
from dnnlab.model.hidden import DROPOUT_TYPES
from dnnlab.ranges import check_number, integers
from dnnlab.settings import check_fields, default_key, setting
from dnnlab.train.checkpoint_files import restore_classifier

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)
PASSES = integers("a number of passes", 1)  # mc_dropout_proba's
MC_PROGRESS_FROM = 10  # fewer passes end before a progress line would help
SPLITS = {"test": "test", "val": "validate"}  # eval.py's split -> Lightning's loop for it


@dataclass(frozen=True)
class MCDropoutSettings:
    """The ``mc_dropout`` group: MC dropout after the test (eval.py's ``mc_samples``, ``seed``)."""

    samples: int = setting(
        rule=integers("a number of MC dropout passes (0: off)", 0),
        doc="stochastic passes with only dropout active (0: off)",
    )
    seed: int = setting(doc="seeds the dropout masks of those passes")
    key: InitVar[str] = "mc_dropout"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, DROPOUT_TYPES)]


@contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[None]:
    """Everything in eval mode except dropout layers; the previous modes are restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for layer in dropout_layers(model):
        layer.train()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


@torch.no_grad()
def predict_proba(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Softmax probabilities of one pass, in whatever mode the model is in."""
    return torch.cat([model(x).softmax(dim=-1) for x in images.split(batch_size)])


@torch.no_grad()
def mc_dropout_proba(
    model: nn.Module, images: Tensor, samples: int, batch_size: int = 1000, seed: int = 0
) -> Tensor:
    """``samples`` stochastic passes with only dropout active: shape (samples, N, classes).

    The book's 100 passes over the test set take minutes on a CPU: a line every tenth of them
    (console and log, with or without a progress bar) says how far they are.
    """
    check_number(f"{default_key(MCDropoutSettings)}.samples", samples, PASSES)
    devices = [images.device] if images.device.type == "cuda" else []
    every = max(1, samples // 10)
    started = time.perf_counter()
    passes = []
    with torch.random.fork_rng(devices=devices), mc_dropout_mode(model):
        torch.manual_seed(seed)
        for done in range(1, samples + 1):
            passes.append(predict_proba(model, images, batch_size))
            if samples >= MC_PROGRESS_FROM and (done % every == 0 or done == samples):
                elapsed = time.perf_counter() - started
                log.info(
                    "MC dropout: %d/%d passes over %d images (%.1f s)",
                    done,
                    samples,
                    len(images),
                    elapsed,
                )
    return torch.stack(passes)


def summarize(probabilities: Tensor, targets: Tensor, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, expected calibration error and mean predictive entropy of mean probabilities."""
    num_classes = probabilities.shape[-1]
    mean = probabilities.mean(dim=0) if probabilities.dim() == 3 else probabilities
    accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro").to(mean.device)
    ece = MulticlassCalibrationError(num_classes=num_classes, n_bins=n_bins, norm="l1")
    metrics = {
        "acc": float(accuracy(mean, targets)),
        "ece": float(ece.to(mean.device)(mean, targets)),
        "entropy": float(entropy(mean).mean()),
    }
    if probabilities.dim() == 3:
        picked = mean.argmax(dim=-1)
        std = probabilities.std(dim=0).gather(1, picked[:, None]).squeeze(1)
        metrics["std"] = float(std.mean())
    return metrics


def entropy(probabilities: Tensor) -> Tensor:
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=-1)


def write_predictions(
    path: Path, targets: Tensor, plain: Tensor, mc: Tensor | None, class_names: Sequence[str]
) -> None:
    """One row per test image: label, plain prediction and, with MC dropout, mean/std/entropy."""
    rows = [["index", "label", "label_name", "pred", "pred_name", "confidence", "entropy"]]
    mean = mc.mean(dim=0) if mc is not None else None
    if mean is not None:
        rows[0] += ["mc_pred", "mc_confidence", "mc_std", "mc_entropy"]
        mc_pred = mean.argmax(dim=-1)
        mc_std = mc.std(dim=0).gather(1, mc_pred[:, None]).squeeze(1)
        mc_entropy = entropy(mean)
    pred, plain_entropy = plain.argmax(dim=-1), entropy(plain)
    for i, label in enumerate(targets.tolist()):
        row = [i, label, class_names[label], int(pred[i]), class_names[int(pred[i])]]
        row += [f"{float(plain[i, pred[i]]):.6f}", f"{float(plain_entropy[i]):.6f}"]
        if mean is not None:
            k = int(mc_pred[i])
            row += [k, f"{float(mean[i, k]):.6f}", f"{float(mc_std[i]):.6f}"]
            row += [f"{float(mc_entropy[i]):.6f}"]
        rows.append(row)
    table = io.StringIO(newline="")
    csv.writer(table).writerows(rows)
    atomic_write_text(path, table.getvalue())  # whole or not at all (a full disk)


def require_dropout(model: nn.Module, samples: int, key: str | None = None) -> None:
    """MC dropout of a model without dropout would be the plain prediction ``samples`` times
    (``key``: where the config holds ``mc_dropout``)."""
    if not dropout_layers(model):
        raise ConfigError(
            f"{key or default_key(MCDropoutSettings)}.samples={samples} needs dropout layers in "
            "the model "
            "(set model.dropout > 0)"
        )


def plain_proba(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    """The deterministic prediction (eval mode); the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        return predict_proba(model, images, batch_size)
    finally:
        model.train(was_training)


def evaluate_split(
    model: nn.Module,
    datamodule: IdxDataModule,
    split: str,
    out_dir: Path,
    mc_samples: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Plain (and MC dropout) metrics of a set-up split; writes ``predictions.csv``.

    The one evaluation behind both ``train.py`` (after its test) and ``eval.py``, so both report
    the same numbers for the same weights. ``evaluation.json`` is left to the caller, which knows
    what else belongs in it.
    """
    if mc_samples:
        require_dropout(model, mc_samples)  # before the plain pass: fail fast
    images, targets = datamodule.inputs(split), datamodule.tensors[split][1]
    model.to(images.device)
    batch_size = datamodule.eval_batch_size
    plain = plain_proba(model, images, batch_size)
    metrics = {f"plain/{k}": v for k, v in summarize(plain, targets).items()}
    mc = None
    if mc_samples:
        mc = mc_dropout_proba(model, images, mc_samples, batch_size, seed)
        metrics.update({f"mc/{k}": v for k, v in summarize(mc, targets).items()})
        metrics["mc/samples"] = float(mc_samples)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(
        out_dir / "predictions.csv",
        targets.cpu(),
        plain.cpu(),
        None if mc is None else mc.cpu(),
        datamodule.classes,
    )
    return metrics


def write_evaluation(out_dir: Path, record: Mapping[str, Any]) -> None:
    """``evaluation.json``: written once per evaluation, by whoever ran it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "evaluation.json", json.dumps(record, indent=2) + "\n")


def saved_run_config(ckpt: Path, out_dir: Path) -> DictConfig:
    """The config of the run a checkpoint belongs to, writing into ``out_dir`` instead.

    ``<run>/checkpoints/<name>.ckpt`` sits beside ``<run>/.hydra/config.yaml``, which Hydra wrote
    when the run started. A file that is not such a config (edited, cut short) is one line.
    """
    from omegaconf import DictConfig, OmegaConf

    saved = ckpt.parent.parent / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt)!r} is not in a run folder (no {saved})")

    def unusable(problem: str) -> ConfigError:
        return ConfigError(
            f"ckpt_path={str(ckpt)!r}: the run folder's {saved} cannot be used: {problem}; "
            "evaluate a checkpoint inside the run folder train.py wrote"
        )

    try:
        cfg = OmegaConf.load(saved)
    except Exception as err:  # YAML's parser errors and OmegaConf's, all the same to the user
        raise unusable(f"it is not valid YAML ({one_line(str(err))[:200]})") from None
    if not isinstance(cfg, DictConfig):
        raise unusable("it is not a mapping of settings")
    if not isinstance(cfg.get("data"), DictConfig):
        raise unusable("it has no data settings (a data mapping)")
    OmegaConf.update(cfg, "paths.output_dir", str(out_dir), force_add=True)
    try:
        OmegaConf.to_container(cfg.data, resolve=True)
    except Exception as err:
        raise unusable(f"its data settings do not resolve ({one_line(str(err))[:200]})") from None
    return cfg


def lightning_metrics(model: nn.Module, datamodule: IdxDataModule, stage: str) -> dict[str, float]:
    """Lightning's own ``test``/``validate`` loop on one device: the metrics training logs."""
    import lightning as L

    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    results = getattr(trainer, stage)(model, datamodule=datamodule, verbose=False)[0]
    return {k: float(v) for k, v in results.items() if k != "step"}  # step: training's x-axis


def check_labels_fit(model: nn.Module, datamodule: IdxDataModule, ckpt: Path) -> None:
    """The checkpoint's model must predict the classes of its run folder's data, in its shape."""
    hparams = model.hparams
    saved = (hparams.num_classes, tuple(hparams.input_shape))
    data = (datamodule.num_classes, tuple(datamodule.input_shape))
    if saved != data:
        raise ConfigError(
            f"ckpt_path={str(ckpt)!r}: its model takes {saved[1]} images into {saved[0]} "
            f"classes, but its run folder's data (data.name={datamodule.name}, "
            f"data.classes={datamodule.class_ids}) has {data[0]} classes of {data[1]} images; "
            "evaluate it in the run folder it was trained in"
        )


def evaluate_checkpoint(
    ckpt_path: str | Path,
    out_dir: str | Path,
    split: str = "test",
    mc_samples: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Evaluate a saved run from its checkpoint alone: the data settings come from the run folder.

    The model comes from the checkpoint's own (primitive) hyperparameters. Returns Lightning's
    metrics, then :func:`evaluate_split`'s; ``evaluation.json`` holds them after the checkpoint
    and the split.
    """
    stage = lookup(SPLITS, "split", split)
    MCDropoutSettings(mc_samples, seed)  # train.py's rules, before any file
    ckpt, out = Path(ckpt_path), Path(out_dir)
    model, _ = restore_classifier(ckpt, "ckpt_path")
    if mc_samples:
        require_dropout(model, mc_samples)  # before Lightning's pass over the split
    datamodule = build_datamodule(saved_run_config(ckpt, out))
    check_labels_fit(model, datamodule, ckpt)
    metrics = lightning_metrics(model, datamodule, stage)
    metrics.update(evaluate_split(model, datamodule, split, out, mc_samples, seed))
    write_evaluation(out, {"ckpt_path": str(ckpt), "split": split, **metrics})
    return metrics
