"""One optimizer step of manual optimization: through Lightning, or straight to the hooks.

Under manual optimization every step goes through ``manual_backward`` and the Lightning
optimizer's ``step``. On the plain path (32-bit precision, one device, no profiler) these do
nothing but call three hooks — ``on_before_backward``, ``on_after_backward`` and
``on_before_optimizer_step`` — on every callback and on the module, count the step, and call
``backward`` and the optimizer's ``step``. The dispatch costs about 0.1 ms per step, an eighth of
a CPU step of the book's MLP, and almost all of it is spent on hooks nobody overrides.

:class:`DirectStep` does the same work in the same order, calling only the hooks that a callback
or the module overrides, and counts the step through the Lightning optimizer's own step
callbacks, so ``global_step``, ``max_steps``, checkpoints and progress are unchanged.
:func:`stepper` picks it only where the Lightning path adds nothing; anywhere else (mixed
precision, DDP and other strategies, a profiler) :class:`LightningStep` goes through Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import lightning as L
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor

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

    The order is Lightning's: callbacks before the module for each hook; the step is counted as
    ready before ``on_before_optimizer_step`` and as completed after the update.
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
    optimizer's step as one compiled call) replaces the step where the direct path applies."""
    trainer = module.trainer
    if direct_applies(trainer) and hasattr(optimizer, "_on_before_step"):
        return DirectStep(trainer, module, optimizer, update)
    return LightningStep(module, optimizer)
