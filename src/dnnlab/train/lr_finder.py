"""The LR finder: the book's exponential learning-rate range test, on the run's own model and data.

The learning rate grows by a constant factor every optimizer step, from ``tune.min_lr`` to
``tune.max_lr`` over ``tune.num_steps`` steps (one epoch by default), and the test stops once the
loss explodes. The suggested learning rate is a fraction (a tenth, as the book advises) of the
rate at the lowest smoothed loss. Lightning's ``Tuner.lr_find`` needs automatic optimization
and counts Lightning batches (blocks of steps here: :mod:`dnnlab.train.blocks`), hence this
small loop over the loader's mini-batches one by one. The model's weights,
buffers and the random-number state are restored afterwards, and the optimizer used for the test
is thrown away, so the run that follows starts exactly as it would have without the test.
"""

from __future__ import annotations

import copy
import logging
import math
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.optim import Optimizer

from dnnlab.data.batches import EpochOrder
from dnnlab.errors import ConfigError
from dnnlab.ranges import LEARNING_RATE, above, fraction, integers, interval, or_null
from dnnlab.settings import check_fields, default_key, from_mapping, setting

log = logging.getLogger(__name__)

# tune.use_for -> the config key that receives the suggested learning rate before training.
TARGET_KEYS = {"lr": "optimizer.lr", "max_lr": "scheduler.schedule.max_lr"}


@dataclass
class RangeTest:
    """The curve of a range test and what it suggests."""

    lrs: list[float]
    losses: list[float]  # the raw mini-batch losses
    smoothed: list[float]  # their bias-corrected exponential moving average
    best_lr: float  # LR at the lowest smoothed loss
    suggestion: float  # the learning rate to train with
    diverged_lr: float | None  # LR at which the loss exploded; None if it never did


def lr_range_test(
    model: nn.Module,
    optimizer: Optimizer,
    batches: Iterable[tuple[Tensor, Tensor]],
    objective: Callable[[Tensor, Tensor], Tensor] | None = None,
    min_lr: float = 1e-5,
    max_lr: float = 10.0,
    num_steps: int = 100,
    divergence: float = 4.0,
    smoothing: float = 0.95,
    suggest_fraction: float = 0.1,
) -> RangeTest:
    """Train ``model`` with an exponentially growing LR; restore its weights afterwards.

    Step ``i`` uses ``min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))``. The test stops at
    the first non-finite loss or smoothed loss above ``divergence`` times its lowest value.
    ``objective(x, y)`` is what each step minimizes (default: the cross-entropy of ``model(x)``).
    """
    if objective is None:

        def objective(x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(model(x), y)

    initial = copy.deepcopy(model.state_dict())
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"][:1]
    was_training = model.training
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    diverged_lr = None
    average = 0.0
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            for i, (x, y) in zip(range(num_steps), batches, strict=False):
                lr = min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = objective(x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = loss.item()
                lrs.append(lr)
                losses.append(value)
                average = smoothing * average + (1 - smoothing) * value
                smoothed.append(average / (1 - smoothing ** (i + 1)))
                if not math.isfinite(value) or smoothed[-1] > divergence * min(smoothed):
                    diverged_lr = lr
                    break
    finally:
        model.load_state_dict(initial)
        model.train(was_training)
    if not lrs:
        raise ConfigError("tune.lr_find: the training data gave no batch to test")
    usable = smoothed[:-1] if diverged_lr is not None and len(smoothed) > 1 else smoothed
    best = min(range(len(usable)), key=usable.__getitem__)
    if best == 0:
        log.warning("LR finder: the loss never fell; try a lower tune.min_lr")
    suggestion = max(float(f"{lrs[best] * suggest_fraction:.2g}"), min_lr)
    return RangeTest(lrs, losses, smoothed, lrs[best], suggestion, diverged_lr)


def plot_range_test(result: RangeTest) -> Figure:
    """Loss against learning rate (log scale), with the suggestion and the divergence marked."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, label="mini-batch loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed loss")
    ax.axvline(
        result.suggestion, color="tab:green", ls="--", label=f"suggested {result.suggestion:.2g}"
    )
    ax.axvline(
        result.best_lr, color="tab:orange", ls=":", label=f"lowest loss {result.best_lr:.2g}"
    )
    if result.diverged_lr is not None:
        ax.axvline(
            result.diverged_lr, color="tab:red", ls=":", label=f"diverged {result.diverged_lr:.2g}"
        )
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # cut the explosion off: the interesting part is the descent
        start = result.losses[0] if math.isfinite(result.losses[0]) else finite[0]
        ax.set_ylim(0.9 * min(finite), 1.3 * max(finite[0], start))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.legend()
    return figure


@dataclass(frozen=True)
class TuneSettings:
    """The ``tune`` group: the LR finder (also checked before any data is read)."""

    lr_find: bool = setting(boolean=True, doc="run the range test before training")
    min_lr: float = setting(rule=LEARNING_RATE, doc="LR of the first step")
    max_lr: float = setting(rule=LEARNING_RATE, doc="LR of the last step")
    num_steps: int | None = setting(
        rule=or_null(integers("a number of steps", 2), "one epoch"), doc="steps of the test"
    )
    divergence: float = setting(
        rule=above("a divergence factor (x the lowest smoothed loss)", 1),
        doc="stop once the smoothed loss exceeds this x its lowest",
    )
    smoothing: float = setting(
        rule=fraction("a smoothing factor"), doc="exponential smoothing of the loss"
    )
    suggest_fraction: float = setting(
        rule=interval("a fraction of the best LR", 0, 1, "(]"),
        doc="suggested LR = this x the LR at the lowest loss",
    )
    use_for: str | None = setting(
        choices=TARGET_KEYS, nullable=True, doc="what the suggestion sets (null: report only)"
    )
    key: InitVar[str] = "tune"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)
        if not self.max_lr > self.min_lr:
            raise ConfigError(
                f"{key}.max_lr={self.max_lr!r} must be above {key}.min_lr={self.min_lr}"
            )


def check_tune(tune: Mapping[str, Any], cfg: DictConfig, key: str | None = None) -> None:
    """One line for a setting of the finder that cannot work (``key``: where ``cfg`` holds it)."""
    key = key or default_key(TuneSettings)
    settings = from_mapping(TuneSettings, tune, key)
    target = TARGET_KEYS.get(settings.use_for)
    if target is not None and OmegaConf.select(cfg, target) is None:
        raise ConfigError(
            f"{key}.use_for={settings.use_for} needs a config with {target} "
            "(e.g. scheduler=onecycle)"
        )


def epochs_of_batches(loader: Any) -> Iterator[tuple[Tensor, Tensor]]:
    """The training mini-batches, epoch after epoch, in the run's own order."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader.batches()
        epoch += 1


def override_line(key: str, value: float) -> str:
    """The command that trains with ``key=value``: this run's overrides, the finder's left out."""
    from hydra.core.hydra_config import HydraConfig

    given: list[str] = []
    if HydraConfig.initialized():
        given = [o for o in HydraConfig.get().overrides.task if not o.startswith("tune.")]
        given = [o for o in given if not o.startswith(f"{key}=")]
    return " ".join(["python train.py", *map(shlex.quote, given), f"{key}={value:g}"])


def set_key(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for ``dotted`` = ``a.b.c`` (the module's plain hparams)."""
    *parents, leaf = dotted.split(".")
    for name in parents:
        tree = tree[name]
    tree[leaf] = value


def tune_learning_rate(cfg: DictConfig, model: Any, datamodule: Any, trainer: Any) -> float:
    """Run the range test for ``train.py``; report it, and apply it where ``tune.use_for`` says.

    The plot goes to ``<run folder>/lr_find.png`` and to TensorBoard (``lr_find``).
    """
    tune = OmegaConf.to_container(cfg.tune, resolve=True)
    check_tune(tune, cfg)
    if datamodule.trainer is None:
        datamodule.trainer = trainer  # so the data land on the training device, as in fit
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    if isinstance(loader.sampler, EpochOrder):
        # The whole training set in the seed's order, not this process's shard: every DDP
        # process then finds the same learning rate.
        order = loader.sampler
        loader.sampler = EpochOrder(order.size, order.shuffle, order.seed)
    model.to(trainer.strategy.root_device)
    result = lr_range_test(
        model,
        model.make_optimizer(),  # as training's, on the trainable parameters
        epochs_of_batches(loader),
        model.objective,  # the run's loss (and L1/L2 penalty), not always the cross-entropy
        min_lr=tune["min_lr"],
        max_lr=tune["max_lr"],
        num_steps=tune["num_steps"] or loader.num_batches,
        divergence=tune["divergence"],
        smoothing=tune["smoothing"],
        suggest_fraction=tune["suggest_fraction"],
    )
    figure = plot_range_test(result)
    path = Path(cfg.paths.output_dir) / "lr_find.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    for logger in trainer.loggers:
        logger.log_metrics({"lr_find/suggestion": result.suggestion}, step=0)
        # On disk now, even when no training follows (TensorBoard's save() would also freeze
        # its hparams file before the run's hyperparameters are logged).
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure("lr_find", figure, global_step=0, close=False)
            logger.experiment.flush()
        else:
            logger.save()

    use_for = tune["use_for"]
    key = TARGET_KEYS[
        use_for or ("max_lr" if OmegaConf.select(cfg, TARGET_KEYS["max_lr"]) else "lr")
    ]
    diverged = f"{result.diverged_lr:.2g}" if result.diverged_lr is not None else "never"
    report = (
        f"LR finder: lowest loss at lr={result.best_lr:.2g}, diverged at {diverged}; "
        f"suggested {key}={result.suggestion:g} (plot: {path})"
    )
    log.info(report)
    print(report)
    if use_for is None:
        print(f"train with it: {override_line(key, result.suggestion)}")
        return result.suggestion
    OmegaConf.update(cfg, key, result.suggestion)
    set_key(model.hparams, key, result.suggestion)  # saved with the checkpoints
    print(f"training with {key}={result.suggestion:g}")
    return result.suggestion
