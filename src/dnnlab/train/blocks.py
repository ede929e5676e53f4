"""A Lightning batch is a *block* of optimizer steps: everything that knows it lives here.

Lightning's per-batch machinery costs about as much as a whole optimizer step of the book's MLP on
a CPU, so the training loader hands Lightning one block of ``data.steps_per_block`` mini-batches
per batch and the module runs them as that many optimizer steps (manual optimization). The user
never sees a block: every count a user gives or reads is in optimizer steps.

* :class:`BlockPlan` cuts an epoch's steps into blocks. ``trainer.limit_train_batches`` (an int)
  is the epoch's number of optimizer steps, ``trainer.val_check_interval`` (an int) the steps
  between validations, ``trainer.overfit_batches`` the steps repeated every epoch; a fraction is
  a fraction of the epoch's steps. A block ends at every
  validation point, so an interval need not be a multiple of the block.
* :func:`trainer_flags` turns those settings into Lightning's (counted in blocks), and
  :class:`StepSettings` keeps the user's for the loader (:func:`plan_of`).
* :func:`train_block` is the loop over a block's steps; :func:`stepper` picks how one step goes
  through Lightning's hooks (:class:`DirectStep` or :class:`LightningStep`).
* :func:`progress_bar` is a progress bar whose training bar counts optimizer steps.
* :data:`PRIVATE_MEMBERS` lists every private Lightning and torch member the package uses;
  ``tests/train/test_private_api.py`` checks that the installed versions still have each one.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from itertools import islice
from typing import Any, Protocol

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor

from dnnlab.errors import ConfigError
from dnnlab.ranges import shown

# Every private member of Lightning or torch that dnnlab touches: "module:Class" -> members, each
# with where and why. An upgrade that drops one fails tests/train/test_private_api.py, not a run.
PRIVATE_MEMBERS: dict[str, dict[str, str]] = {
    "lightning.pytorch.core.optimizer:LightningOptimizer": {
        "_on_before_step": "DirectStep: the manual loop's step counter (global_step)",
        "_on_after_step": "DirectStep: the step counted as completed",
    },
    "lightning.pytorch:LightningModule": {
        "_current_fx_name": "DirectStep: what self.log inside a step hook reads; "
        "BlockTraining.__setattr__ sets it without nn.Module's checks",
    },
    "lightning.pytorch.callbacks:ModelCheckpoint": {
        "_every_n_train_steps": "RunCheckpoint: its step trigger at block ends",
        "_every_n_epochs": "RunCheckpoint: last.ckpt at an epoch's checkpoint",
        "_last_global_step_saved": "RunCheckpoint: the step trigger",
        "_should_skip_saving_checkpoint": "RunCheckpoint",
        "_should_save_on_train_epoch_end": "RunCheckpoint",
        "_save_topk_checkpoint": "RunCheckpoint: a step checkpoint",
        "_save_last_checkpoint": "RunCheckpoint: a step checkpoint, a missed last.ckpt",
        "_monitor_candidates": "RunCheckpoint: a step checkpoint",
    },
    "torch.utils.tensorboard:SummaryWriter": {
        "_get_file_writer": "dnnlab.scalars (many scalars as one event) and run.write_hparams "
        "(reopens the event file the test closed)",
    },
    "torch.optim.lr_scheduler:StepLR": {
        "_last_lr": "optim.schedules.join_schedule: get_last_lr() of a joined param group",
    },
    "torch.nn.init": {
        "_calculate_fan_in_and_fan_out": "model.initializers: Keras' fans",
    },
}


# ------------------------------------------------------------------------- steps and blocks
@dataclass(frozen=True)
class BlockPlan:
    """How an epoch's optimizer steps are cut into blocks (Lightning batches).

    ``limit`` is ``trainer.limit_train_batches`` and ``interval`` ``trainer.val_check_interval``
    as the user gives them: optimizer steps (int), or a fraction of the epoch (float); ``None``
    for all steps, and for validation at the epoch's end. Blocks hold ``steps_per_block`` steps
    and restart at every validation point, so each interval is the same number of blocks: the
    number Lightning is given (:meth:`interval_blocks`).
    """

    steps_per_block: int = 1
    limit: int | float | None = None
    interval: int | float | None = None
    same_steps: bool = False  # trainer.overfit_batches: the epoch's first steps, unshuffled

    def epoch_steps(self, batches: int) -> int:
        """The optimizer steps of an epoch of ``batches`` mini-batches, as ``limit`` leaves it."""
        if self.limit is None:
            return batches
        if isinstance(self.limit, int):
            return min(self.limit, batches)
        steps = int(batches * self.limit)
        if steps == 0 and self.limit > 0:
            raise ConfigError(
                f"trainer.limit_train_batches={self.limit} leaves none of the {batches} optimizer "
                f"steps of an epoch; give at least {1 / batches:.2g}, or a number of steps"
            )
        return steps

    def interval_steps(self, epoch_steps: int) -> int | None:
        """Optimizer steps between validations in the epoch, ``None`` for its end only."""
        if self.interval is None or (isinstance(self.interval, float) and self.interval == 1.0):
            return None
        if isinstance(self.interval, float):
            return max(1, int(epoch_steps * self.interval))
        return self.interval

    def _cycle(self, epoch_steps: int) -> tuple[int, int]:
        """Steps of the stretch after which the blocks restart, and its number of blocks."""
        steps = self.interval_steps(epoch_steps) or max(epoch_steps, 1)
        return steps, -(-steps // self.steps_per_block)

    def interval_blocks(self, epoch_steps: int) -> int | None:
        """Blocks between validations: Lightning's ``val_check_batch``."""
        if self.interval_steps(epoch_steps) is None:
            return None
        return self._cycle(epoch_steps)[1]

    def blocks(self, epoch_steps: int) -> int:
        """Blocks in an epoch of ``epoch_steps`` optimizer steps: the loader's length."""
        steps, blocks = self._cycle(epoch_steps)
        full, rest = divmod(epoch_steps, steps)
        return full * blocks + -(-rest // self.steps_per_block)

    def steps_through(self, blocks: int | float, epoch_steps: int) -> int:
        """Optimizer steps in the epoch's first ``blocks`` blocks (all of them for ``inf``)."""
        if blocks == math.inf:
            return epoch_steps
        steps, per_cycle = self._cycle(epoch_steps)
        full, rest = divmod(int(blocks), per_cycle)
        return min(epoch_steps, full * steps + min(rest * self.steps_per_block, steps))

    def cut(self, batches: Iterator[Any], epoch_steps: int, skip: int = 0) -> Iterator[list[Any]]:
        """The epoch's blocks after the first ``skip``, from ``batches`` starting at that point."""
        ends = [
            self.steps_through(i, epoch_steps) for i in range(skip, self.blocks(epoch_steps) + 1)
        ]
        for start, end in itertools.pairwise(ends):
            yield list(islice(batches, end - start))

    def check_interval(self, trainer: L.Trainer, epoch_steps: int) -> None:
        """An interval in steps must fit in the epoch (Lightning's rule, said in steps)."""
        validates = trainer.check_val_every_n_epoch is not None and trainer.limit_val_batches > 0
        checks = validates and not trainer.fast_dev_run  # which validates after one batch
        if checks and isinstance(self.interval, int) and self.interval > epoch_steps:
            raise ConfigError(
                f"trainer.val_check_interval={self.interval} is more than the {epoch_steps} "
                "optimizer steps of an epoch; give at most that many, or a fraction of the "
                "epoch (0.0-1.0)"
            )


def check_block_for_processes(steps_per_block: int, world_size: int, key: str = "data") -> None:
    """One optimizer step per Lightning batch with several processes: DDP averages gradients
    once per forward of the wrapped module, so a block of steps would train each process alone.
    """
    if world_size > 1 and steps_per_block > 1:
        raise ConfigError(
            f"{key}.steps_per_block={steps_per_block} must be 1 with {world_size} "
            "processes: DDP syncs gradients once per Lightning batch (trainer=ddp sets it)"
        )


def steps_of(value: Any, key: str, low: int) -> int | float | None:
    """A limit or interval in optimizer steps (int >= ``low``) or a fraction of the epoch."""
    if value is None:
        return None
    if isinstance(value, float) and value > 1 and value.is_integer():
        value = int(value)  # Lightning's reading of 5.0
    steps = isinstance(value, int) and value >= low
    ok = steps or (isinstance(value, float) and 0 <= value <= 1)
    if isinstance(value, bool) or not ok:
        raise ConfigError(
            f"trainer.{key}={shown(value)} is not valid; give a number of optimizer steps (an "
            f"integer >= {low}) or a fraction of the epoch (0.0-1.0)"
        )
    return value


class StepSettings(Callback):
    """The user's ``limit_train_batches``, ``val_check_interval`` and ``overfit_batches``, in
    optimizer steps.

    Lightning is given their block counts (:func:`trainer_flags`); the training loader reads the
    step counts here (:func:`plan_of`). A fraction of the epoch becomes a number of blocks only
    once the epoch's length is known: it is set at each epoch's start, after Lightning's own.
    """

    def __init__(self, plan: BlockPlan) -> None:
        self.plan = plan

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(self.plan.interval, float) or trainer.fast_dev_run:
            return  # fast_dev_run validates after its one batch
        blocks = self.plan.interval_blocks(int(epoch_steps_of(trainer)))
        if blocks is not None:
            trainer.val_check_batch = blocks


def trainer_flags(
    trainer: Mapping[str, Any], steps_per_block: int
) -> tuple[dict[str, Any], StepSettings]:
    """Lightning's ``limit_train_batches``, ``val_check_interval`` and ``overfit_batches`` for
    the user's, which count optimizer steps, and the callback that keeps the user's for the
    loader (``overfit_batches`` becomes the loader's unshuffled limit).

    The loader itself yields only the limited steps, so Lightning takes all of its blocks (or
    none, for a limit of 0). An interval is given in blocks; a fraction is passed on (Lightning
    reads ``val_check_interval != 1.0`` as "validation inside the epoch", e.g. for when
    ``ModelCheckpoint`` saves) and corrected in blocks by :class:`StepSettings`. A time interval
    (text or a mapping) is Lightning's own.
    """
    limit = steps_of(trainer.get("limit_train_batches"), "limit_train_batches", 0)
    # Lightning's overfit_batches would count blocks, and cannot turn off this loader's shuffling.
    overfit = steps_of(trainer.get("overfit_batches"), "overfit_batches", 0)
    flags: dict[str, Any] = {}
    if overfit:  # as Lightning: it replaces limit_train_batches and limits validation alike
        limit = overfit
        flags = {"overfit_batches": 0, "limit_val_batches": overfit}
    interval = trainer.get("val_check_interval")
    flags["limit_train_batches"] = 0 if limit == 0 else None
    if isinstance(interval, (str, Mapping)):
        interval = None
    else:
        interval = steps_of(interval, "val_check_interval", 1)
        if isinstance(interval, int):
            if trainer.get("check_val_every_n_epoch", 1) is None and steps_per_block > 1:
                raise ConfigError(
                    f"trainer.val_check_interval={interval} with "
                    "trainer.check_val_every_n_epoch=null counts Lightning batches across epochs, "
                    f"and a batch is a block of data.steps_per_block={steps_per_block} steps; set "
                    "trainer.check_val_every_n_epoch, or data.steps_per_block=1"
                )
            flags["val_check_interval"] = -(-interval // steps_per_block)
    return flags, StepSettings(BlockPlan(steps_per_block, limit, interval, bool(overfit)))


def plan_of(trainer: L.Trainer | None, steps_per_block: int) -> BlockPlan:
    """The block plan of the training loader: the run's step settings, if it has them."""
    settings = [c for c in trainer.callbacks if isinstance(c, StepSettings)] if trainer else []
    if not settings:  # a Trainer built without them: Lightning's flags count blocks
        return BlockPlan(steps_per_block)
    return replace(settings[0].plan, steps_per_block=steps_per_block)


def steps_in(trainer: L.Trainer, blocks: int | float) -> int | float:
    """Optimizer steps in the epoch's first ``blocks`` training batches, whatever the loader."""
    through = getattr(trainer.train_dataloader, "steps_through", None)
    return through(blocks) if through is not None else blocks  # else a batch is a step


def epoch_steps_of(trainer: L.Trainer) -> int | float:
    """Optimizer steps in a training epoch of ``trainer`` (``inf`` for a loader without end)."""
    return steps_in(trainer, trainer.num_training_batches)


def optimizer_steps_per_epoch(trainer: L.Trainer) -> int:
    """Optimizer steps in one training epoch, as ``limit_train_batches`` leaves it (for a
    schedule over the run: ``trainer.estimated_stepping_batches`` counts blocks)."""
    trainer.estimated_stepping_batches  # noqa: B018 - makes Lightning set up the train loader
    steps = epoch_steps_of(trainer)
    if steps == math.inf:
        raise ConfigError("the schedule needs the epoch length; the train loader has none")
    return int(steps)


@contextmanager
def lightning_counts_blocks() -> Iterator[None]:
    """Silence Lightning's warning that compares its batch count (blocks) with
    ``log_every_n_steps`` (optimizer steps): the module logs by optimizer step."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is")
        yield


def first_tensor(batch: Any) -> Tensor:
    """The first images of a batch or of a block of batches (to see where they live)."""
    return batch[0][0] if isinstance(batch, list) else batch[0]


def ends_epoch(trainer: L.Trainer, idx: int) -> bool:
    """Whether the block ``idx`` that just ended is the epoch's last one (or the run's)."""
    loop = trainer.fit_loop.epoch_loop
    last = loop.batch_progress.is_last_batch or idx + 1 >= trainer.num_training_batches
    return last or (
        trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps
    )


def crossed(every: int, before: int, now: int) -> bool:
    """Whether a multiple of ``every`` lies in ``(before, now]``: a step trigger fires at the
    first block end at or past it (a block seldom ends on the multiple itself)."""
    return every >= 1 and now // every > before // every


# ---------------------------------------------------------------------- one optimizer step
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


class Stepper(Protocol):
    def backward(self, loss: Tensor) -> None: ...

    def step(self) -> None: ...


class LightningStep:
    """Every step through ``manual_backward`` and the Lightning optimizer."""

    def __init__(self, module: L.LightningModule, optimizer: LightningOptimizer) -> None:
        self.module, self.optimizer = module, optimizer

    def backward(self, loss: Tensor) -> None:
        self.module.manual_backward(loss)

    def step(self) -> None:
        self.optimizer.step()


def overridden(owner: Any, name: str) -> Callable[..., Any] | None:
    """``owner``'s hook ``name`` if it does more than Lightning's no-op, else ``None``."""
    return getattr(owner, name) if is_overridden(name, owner) else None


class DirectStep:
    """The plain path's backward and step, calling only the hooks somebody overrides.

    On the plain path (32-bit precision, one device, no profiler) ``manual_backward`` and the
    Lightning optimizer's ``step`` do nothing but call three hooks on every callback and on the
    module, count the step, and call ``backward`` and the optimizer's ``step``; the dispatch of
    hooks nobody overrides costs about an eighth of a CPU step of the book's MLP. This does the
    same work in the same order: callbacks before the module for each hook; the step is counted
    as ready before ``on_before_optimizer_step`` and as completed after the update, through the
    Lightning optimizer's own step callbacks, so ``global_step``, ``max_steps``, checkpoints and
    progress are unchanged.
    """

    def __init__(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        optimizer: LightningOptimizer,
        update: Callable[[], None] | None = None,
    ) -> None:
        self.trainer, self.module, self.optimizer = trainer, module, optimizer
        self.hooks = {name: self._hooks(name) for name in STEP_HOOKS}
        # What follows the last hook: the optimizer's step (and what the module does right
        # after it), one compiled graph under compile=true.
        self.update = update or optimizer.optimizer.step

    def _hooks(self, name: str) -> list[Callable[..., Any]]:
        found = [overridden(cb, name) for cb in self.trainer.callbacks]
        callbacks = [partial(hook, self.trainer, self.module) for hook in found if hook]
        own = overridden(self.module, name)
        return callbacks + ([own] if own else [])

    def _call(self, name: str, *args: Any) -> None:
        hooks = self.hooks[name]
        if not hooks:
            return
        previous = self.module._current_fx_name  # what self.log inside a hook reads
        self.module._current_fx_name = name
        try:
            for hook in hooks:
                hook(*args)
        finally:
            self.module._current_fx_name = previous

    def backward(self, loss: Tensor) -> None:
        self._call("on_before_backward", loss)
        self.module.backward(loss)
        self._call("on_after_backward")

    def step(self) -> None:
        wrapped, optimizer = self.optimizer, self.optimizer.optimizer
        wrapped._on_before_step()  # the manual loop's step counter (global_step)
        self._call("on_before_optimizer_step", optimizer)  # the torch optimizer, as Lightning
        self.update()
        wrapped._on_after_step()


def direct_applies(trainer: L.Trainer) -> bool:
    """True where Lightning's per-step path only dispatches hooks and counts the step."""
    return (
        type(trainer.precision_plugin) is Precision  # 32-true: no scaler, no autocast in backward
        and type(trainer.strategy) is SingleDeviceStrategy  # DDP prepares its reducer per step
        and isinstance(trainer.profiler, PassThroughProfiler)  # a profiler times each hook
    )


def stepper(
    module: L.LightningModule,
    optimizer: LightningOptimizer,
    update: Callable[[], None] | None = None,
) -> Stepper:
    """The cheapest path that keeps Lightning's behaviour for this trainer; ``update`` (the
    optimizer's step as one compiled call) replaces the step where the direct path applies.
    The private members DirectStep needs are checked by tests/train/test_private_api.py."""
    trainer = module.trainer
    if direct_applies(trainer):
        return DirectStep(trainer, module, optimizer, update)
    return LightningStep(module, optimizer)


# ------------------------------------------------------------------------ a block of steps
class BlockModule(Protocol):
    """The model-side work :func:`train_block` asks of the module at each step."""

    trainer: L.Trainer

    def optimizers(self) -> Any: ...

    def compiled_update(self, optimizer: Any) -> Callable[[], None] | None: ...

    def step_objective(self, x: Tensor, y: Tensor) -> Tensor: ...

    def before_update(self, optimizer: Any) -> None: ...

    def after_step(self, optimizer: Any, step: int, constrain: bool) -> None: ...

    def after_block(self) -> None: ...


class BlockTraining:
    """Mixed into a LightningModule that trains a block of steps per batch: Lightning sets
    ``_current_fx_name`` twice per hook call, several hooks per step; the parameter, buffer and
    module checks of ``nn.Module.__setattr__`` are wasted on a plain string."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def note_untrained(trainer: L.Trainer, steps: int) -> None:
    """Tell the training loader (its checkpoint state) that ``steps`` of its last block were
    not trained, so that no resume silently skips them."""
    loader = trainer.train_dataloader
    if hasattr(loader, "untrained"):
        loader.untrained = steps


def train_block(module: BlockModule, block: Sequence[tuple[Tensor, Tensor]]) -> None:
    """The optimizer steps of one Lightning batch, stopping at ``trainer.max_steps``.

    Each step: the objective, ``zero_grad``, backward (with its hooks), the module's work
    before the update (clipping), the update (counted as a step), the module's work after it
    (max-norm, logging and per-step schedules).
    """
    trainer = module.trainer
    optimizer = module.optimizers()
    update = module.compiled_update(optimizer.optimizer)
    steps = stepper(module, optimizer, update)
    constrain = update is None or not isinstance(steps, DirectStep)  # else in the update
    max_steps = trainer.max_steps if trainer.max_steps not in (None, -1) else math.inf
    step = trainer.global_step
    for done, (x, y) in enumerate(block):
        if step >= max_steps:  # a block may run past it: the run ends at that step
            note_untrained(trainer, len(block) - done)
            break
        objective = module.step_objective(x, y)
        optimizer.zero_grad(set_to_none=True)
        steps.backward(objective)
        module.before_update(optimizer)
        steps.step()
        step += 1
        module.after_step(optimizer, step, constrain)
    module.after_block()


# --------------------------------------------------------------------------- progress bar
class StepCounting:
    """A progress bar whose training bar counts optimizer steps, not blocks (and so its rate is
    steps per second); evaluation bars count evaluation batches, as Lightning's do."""

    trainer: L.Trainer

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        total = epoch_steps_of(trainer)
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            total = min(total, trainer.max_steps - trainer.global_step)  # as Lightning does
        return total

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        self._block_start = trainer.global_step
        super().on_train_batch_start(trainer, pl_module, batch, idx)  # type: ignore[misc]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        # The steps before this block, and those of it that ran (max_steps may cut it short).
        done = steps_in(trainer, idx) + trainer.global_step - self._block_start
        super().on_train_batch_end(trainer, pl_module, outputs, batch, done - 1)  # type: ignore[misc]


class StepTQDMProgressBar(StepCounting, TQDMProgressBar):
    """Lightning's TQDM bar, counting optimizer steps."""


class StepRichProgressBar(StepCounting, RichProgressBar):
    """Lightning's Rich bar, counting optimizer steps."""


def progress_bar(callbacks: Sequence[Callback], enabled: bool) -> list[Callback]:
    """The step-counting bar Lightning's default would be (Rich when installed), unless the bar
    is off or the user gave one of their own."""
    if not enabled or any(isinstance(c, ProgressBar) for c in callbacks):
        return []
    try:
        return [StepRichProgressBar()]
    except ModuleNotFoundError:  # rich is not installed
        return [StepTQDMProgressBar()]
