"""The book's learning-rate schedules on top of ``torch.optim.lr_scheduler``, and their builder.

``t`` counts scheduler steps: optimizer steps with ``scheduler.interval=step``, epochs with
``interval=epoch`` (times ``frequency``). Every schedule's state is primitive (numbers, lists,
strings), so checkpoints holding it still load with ``torch.load(weights_only=True)``.

- power:       eta(t) = eta0 / (1 + t/s)^c                  (LambdaLR with :class:`PowerDecay`)
- exponential: eta(t) = eta0 * decay_rate^(t/s)             (ExponentialLR)
- piecewise:   eta(t) = values[i] for boundaries[i-1] <= t < boundaries[i]  (PiecewiseConstantLR)
- performance: multiply by ``factor`` after ``patience`` epochs without gain (ReduceLROnPlateau)
- 1cycle:      linear up to max_lr, back down, then a few decades lower  (OneCycleLR, 3 phases)
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ExponentialLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
)

from dnnlab.app.compose import group_options
from dnnlab.building import build, check_arguments, target_of
from dnnlab.errors import ConfigError, lookup, unknown_key
from dnnlab.ranges import (
    LEARNING_RATE,
    MOMENTUM,
    Rule,
    check_all,
    check_items,
    check_number,
    integers,
    interval,
    non_negative,
    or_null,
    positive,
    positive_int,
    shown,
)
from dnnlab.train import blocks

KEY = "scheduler.schedule"
INTERVALS = ("step", "epoch")
# The keys of a ``scheduler`` node (conf/scheduler/<name>.yaml); ``schedule`` is the torch object.
SCHEDULER_KEYS = ("schedule", "interval", "frequency", "monitor")
# Metrics the module logs that a plateau schedule can watch, with the direction that is better.
MONITOR_MODES = {
    "val/loss": "min",
    "val/acc": "max",
    "val/acc_best": "max",
    "train/loss_epoch": "min",
    "train/acc": "max",
}


DIVISOR = positive("a division factor")  # 1cycle's div_factor and final_div_factor
# Schedule argument -> the rule its value must follow, checked here (library use) and by
# dnnlab.app.checks on ``scheduler.schedule.<name>`` before any data is read.
RULES: dict[str, Rule] = {
    "s": positive("a decay period s (steps or epochs)"),
    "c": positive("a decay power c"),
    "decay_rate": interval("a decay rate", 0, 1, "()"),
    "factor": interval("a reduction factor", 0, 1, "()"),
    "patience": positive_int("a patience in epochs"),
    "threshold": non_negative("an improvement threshold"),
    "cooldown": integers("a cooldown in epochs", 0),
    "min_lr": non_negative("a minimum learning rate"),
    "max_lr": LEARNING_RATE,
    "total_steps": or_null(positive_int("a run length in scheduler steps"), "the whole run"),
    "warmup_fraction": interval("a warm-up fraction of the run", 0, 0.5, "()"),
    "div_factor": DIVISOR,
    "final_div_factor": DIVISOR,
    "base_momentum": MOMENTUM,
    "max_momentum": MOMENTUM,
}
# List arguments -> the rule each item must follow (errors name ``key[i]``).
ITEM_RULES: dict[str, Rule] = {
    "boundaries": positive_int("a boundary (scheduler step)"),
    "values": LEARNING_RATE,
}
# Where a piecewise boundary falls (PiecewiseConstantLR), and how a plateau's gain is measured.
SWITCHES = ("at", "after")
THRESHOLD_MODES = ("rel", "abs")
# scheduler.frequency: how many intervals (steps or epochs) between two scheduler steps.
FREQUENCY = positive_int("a frequency (intervals per scheduler step)")


class PowerDecay:
    """The factor ``1 / (1 + t/s)^c`` of power scheduling, as an importable, picklable callable.

    ``LambdaLR`` saves a callable object's ``__dict__`` (here two floats) in its state.
    """

    def __init__(self, s: float, c: float = 1.0) -> None:
        check_all(KEY, RULES, {"s": s, "c": c})
        self.s, self.c = float(s), float(c)

    def __call__(self, t: int) -> float:
        return (1.0 + t / self.s) ** -self.c


def power(optimizer: Optimizer, s: float, c: float = 1.0) -> LambdaLR:
    """Power scheduling: eta0 / (1 + t/s)^c (Keras' ``decay`` is c=1, s=1/decay)."""
    return LambdaLR(optimizer, PowerDecay(s, c))


def exponential(optimizer: Optimizer, s: float, decay_rate: float = 0.1) -> ExponentialLR:
    """Exponential scheduling: eta0 * decay_rate^(t/s), i.e. 10x lower every ``s`` steps."""
    check_all(KEY, RULES, {"s": s, "decay_rate": decay_rate})
    return ExponentialLR(optimizer, gamma=decay_rate ** (1.0 / s))


class PiecewiseConstantLR(LRScheduler):
    """``values[i]`` from boundary ``i-1`` to boundary ``i``: the book's piecewise constant
    schedule. The values are learning rates, not factors; the first replaces ``optimizer.lr``.
    torch's ``MultiStepLR`` only multiplies by one constant ``gamma``.

    ``switch`` says where a boundary ``b`` falls: ``at`` starts the next value at ``t = b``
    (the book's per-epoch function, ``epoch < 5``); ``after`` at ``t = b + 1``, as Keras'
    ``PiecewiseConstantDecay`` (the book's per-step schedule: ``step <= b`` keeps the old value).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        boundaries: Sequence[int],
        values: Sequence[float],
        switch: str = "at",
        last_epoch: int = -1,
    ) -> None:
        lookup(dict.fromkeys(SWITCHES), f"{KEY}.switch", switch)
        self.switch = switch
        boundaries, values = list(boundaries), list(values)
        check_items(f"{KEY}.boundaries", boundaries, ITEM_RULES["boundaries"])
        if any(b >= a for b, a in itertools.pairwise(boundaries)):
            raise ConfigError(f"{KEY}.boundaries={boundaries} must be strictly increasing")
        if len(values) != len(boundaries) + 1:
            raise ConfigError(
                f"{KEY}.values={values} needs one value more than boundaries={boundaries}"
            )
        check_items(f"{KEY}.values", values, ITEM_RULES["values"])
        self.boundaries, self.values = boundaries, [float(v) for v in values]
        # Per param group, the factor on the values: 1 for the optimizer's own groups; a group
        # that joins later (unfrozen layers) keeps the ratio it joined with (join_schedule).
        self.scales = [1.0 for _ in optimizer.param_groups]
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        side = bisect.bisect_left if self.switch == "after" else bisect.bisect_right
        value = self.values[side(self.boundaries, self.last_epoch)]
        return [value * scale for scale in self.scales]


def performance(
    optimizer: Optimizer,
    mode: str = "min",
    factor: float = 0.5,
    patience: int = 5,
    threshold: float = 0.0,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
) -> ReduceLROnPlateau:
    """Performance scheduling: LR x ``factor`` once the metric has not improved for ``patience``
    epochs (the book's and Keras' meaning; torch's own ``patience`` waits one epoch more).

    A gain counts when it beats ``threshold``: a fraction of the best value (``rel``) or an
    amount (``abs``, Keras' ``min_delta``).
    """
    lookup(dict.fromkeys(("min", "max")), f"{KEY}.mode", mode)
    lookup(dict.fromkeys(THRESHOLD_MODES), f"{KEY}.threshold_mode", threshold_mode)
    check_all(
        KEY,
        RULES,
        {
            "factor": factor,
            "patience": patience,
            "threshold": threshold,
            "cooldown": cooldown,
            "min_lr": min_lr,
        },
    )
    return ReduceLROnPlateau(
        optimizer,
        mode=mode,
        factor=factor,
        patience=patience - 1,
        threshold=threshold,
        threshold_mode=threshold_mode,
        cooldown=cooldown,
        min_lr=min_lr,
    )


def one_cycle(
    optimizer: Optimizer,
    max_lr: float,
    total_steps: int,
    warmup_fraction: float = 0.45,
    div_factor: float = 10.0,
    final_div_factor: float = 1000.0,
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> OneCycleLR:
    """The book's linear 1cycle: from max_lr/div_factor up to ``max_lr`` over
    ``warmup_fraction`` of the run, back down over as many steps, then linearly to
    ``final_div_factor`` times lower than the start; momentum (or Adam's beta1) cycles the
    other way, max -> base -> max, when ``cycle_momentum``.
    """
    numbers = {
        "max_lr": max_lr,
        "total_steps": total_steps,
        "warmup_fraction": warmup_fraction,  # < 0.5: as many steps up as down
        "div_factor": div_factor,
        "final_div_factor": final_div_factor,
        "base_momentum": base_momentum,
        "max_momentum": max_momentum,
    }
    check_all(KEY, RULES, numbers)
    if cycle_momentum and base_momentum > max_momentum:
        raise ConfigError(
            f"{KEY}.base_momentum={base_momentum} must be <= {KEY}.max_momentum={max_momentum}"
        )
    if cycle_momentum and not any("momentum" in g or "betas" in g for g in optimizer.param_groups):
        raise ConfigError(
            f"{KEY}.cycle_momentum=true but {type(optimizer).__name__} has no momentum; "
            f"set {KEY}.cycle_momentum=false"
        )
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=warmup_fraction,
        anneal_strategy="linear",
        three_phase=True,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )


# 1cycle's per-group learning rates (scaled for a group that joins) and momentum bounds (copied).
ONE_CYCLE_RATES = ("initial_lr", "max_lr", "min_lr")
ONE_CYCLE_MOMENTA = ("base_momentum", "max_momentum")


def join_schedule(scheduler: LRScheduler, group: dict[str, Any]) -> None:
    """Let ``group``, added to the scheduler's optimizer after the scheduler was built (the
    unfrozen layers of transfer learning), follow the schedule from now on.

    Its LR keeps the ratio to the first group's that it joins with: the schedule scales it as it
    scales the others (torch's schedulers keep per-group lists and keys sized when they were
    built, and fail or ignore the group otherwise). Momentum that 1cycle cycles is the first
    group's. Everything added is a number, so the schedule's state stays primitive.
    """
    optimizer = scheduler.optimizer
    first = optimizer.param_groups[0]
    ratio = group["lr"] / first["lr"] if first["lr"] > 0 else 1.0
    if isinstance(scheduler, OneCycleLR):
        group.update({key: first[key] * ratio for key in ONE_CYCLE_RATES})
        if scheduler.cycle_momentum:
            group.update({key: first[key] for key in ONE_CYCLE_MOMENTA})
            if scheduler.use_beta1:
                group["betas"] = (first["betas"][0], *group["betas"][1:])
            else:
                group["momentum"] = first["momentum"]
    if isinstance(scheduler, ReduceLROnPlateau):  # chainable: it scales each group's LR as is
        scheduler.min_lrs.append(scheduler.min_lrs[0])  # a floor in learning rate, not a factor
    else:
        group.setdefault("initial_lr", first["initial_lr"] * ratio)
        scheduler.base_lrs.append(scheduler.base_lrs[0] * ratio)
    scheduler._last_lr.append(group["lr"])  # get_last_lr() until the next step (PRIVATE_MEMBERS)
    if isinstance(scheduler, LambdaLR):
        scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
    if isinstance(scheduler, PiecewiseConstantLR):
        scheduler.scales.append(scheduler.scales[0] * ratio)


def run_length(trainer: Any, interval: str) -> int:
    """Scheduler steps in the whole run: epochs, or optimizer steps (capped by max_steps)."""
    epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
    if interval == "epoch":
        if epochs is None:
            raise ConfigError("a whole-run schedule with interval=epoch needs trainer.max_epochs")
        return int(epochs)
    max_steps = trainer.max_steps if trainer.max_steps not in (None, -1) else None
    by_epochs = epochs * blocks.optimizer_steps_per_epoch(trainer) if epochs is not None else None
    lengths = [n for n in (max_steps, by_epochs) if n is not None]
    if not lengths:
        raise ConfigError("a whole-run schedule needs trainer.max_epochs or trainer.max_steps")
    return int(min(lengths))


def check_scheduler(node: Mapping[str, Any]) -> None:
    """The node's keys, its schedule's arguments, and the settings around it: when it steps.

    ``scheduler=none`` is an empty node; a key added to it (``+scheduler.interval=step``) has
    no schedule to act on.
    """
    for name, value in node.items():
        if name not in SCHEDULER_KEYS:
            raise unknown_key(f"scheduler.{name}={shown(value)}", name, "scheduler", SCHEDULER_KEYS)
    schedule = node.get("schedule")
    if not isinstance(schedule, Mapping):
        name, value = next(iter(node.items()))
        options = ", ".join(o for o in group_options("scheduler") if o != "none")
        raise ConfigError(
            f"scheduler.{name}={shown(value)} needs a schedule: scheduler=none has none; "
            f"choose one of: {options}"
        )
    check_arguments(schedule, KEY, target_of(schedule, KEY), passed=("optimizer",))
    lookup(dict.fromkeys(INTERVALS), "scheduler.interval", node.get("interval", "epoch"))
    check_number("scheduler.frequency", node.get("frequency", 1), FREQUENCY)


def check_monitor(monitor: Any, mode: str) -> None:
    """A plateau schedule must watch a metric the module logs, in the direction that is better."""
    better = lookup(MONITOR_MODES, "scheduler.monitor", monitor)
    if mode != better:
        raise ConfigError(
            f"{KEY}.mode={mode!r} does not fit scheduler.monitor={monitor!r} (better is {better})"
        )


def build_schedule(node: Mapping[str, Any], optimizer: Optimizer, trainer: Any) -> LRScheduler:
    """The schedule of a ``scheduler`` node; a null ``total_steps`` becomes the run's length."""
    check_scheduler(node)
    schedule = dict(node["schedule"])
    if "total_steps" in schedule and schedule["total_steps"] is None:
        schedule["total_steps"] = run_length(trainer, node.get("interval", "epoch"))
    built = build(schedule, KEY, optimizer=optimizer)
    if isinstance(built, ReduceLROnPlateau):
        check_monitor(node.get("monitor"), built.mode)
    return built
