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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import InitVar, dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ExponentialLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
)

from dnnlab.building import build, check_arguments, target_of
from dnnlab.errors import ConfigError, lookup
from dnnlab.ranges import (
    LEARNING_RATE,
    MOMENTUM,
    integers,
    interval,
    non_negative,
    or_null,
    positive,
    positive_int,
    shown,
)
from dnnlab.settings import RuleTable, check_fields, check_known_keys, check_values, setting
from dnnlab.train import blocks

# Where the schedule functions' errors point when they are called outside a config (the
# builder's own checks name the node it is given).
KEY = "scheduler.schedule"
INTERVALS = ("step", "epoch")
# Metrics the module logs that a plateau schedule can watch, with the direction that is better.
MONITOR_MODES = {
    "val/loss": "min",
    "val/acc": "max",
    "val/acc_best": "max",
    "train/loss_epoch": "min",
    "train/acc": "max",
}


DIVISOR = positive("a division factor")  # 1cycle's div_factor and final_div_factor
# Where a piecewise boundary falls (PiecewiseConstantLR), and how a plateau's gain is measured.
SWITCHES = ("at", "after")
THRESHOLD_MODES = ("rel", "abs")
# Schedule argument -> the rule its value must follow, checked here (library use) and by
# dnnlab.app.checks on the config's schedule node before any data is read; list arguments ->
# the rule of each item (errors name ``key[i]``).
SETTINGS = RuleTable(
    rules={
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
    },
    items={"boundaries": positive_int("a boundary (scheduler step)"), "values": LEARNING_RATE},
    choices={"switch": SWITCHES, "mode": ("min", "max"), "threshold_mode": THRESHOLD_MODES},
)


@dataclass(frozen=True)
class SchedulerSettings:
    """The keys of a ``scheduler`` node (conf/scheduler/<name>.yaml): when the schedule steps.
    ``schedule`` is the torch object's node, its arguments checked against :data:`SETTINGS`."""

    schedule: Mapping[str, Any] | None = setting(None, doc="the schedule (_target_ and args)")
    interval: str = setting("epoch", choices=INTERVALS, doc="what the schedule counts")
    frequency: int = setting(
        1,
        rule=positive_int("a frequency (intervals per scheduler step)"),
        doc="intervals between two scheduler steps",
    )
    monitor: str | None = setting(None, doc="the metric a plateau schedule watches")
    key: InitVar[str] = "scheduler"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)


class PowerDecay:
    """The factor ``1 / (1 + t/s)^c`` of power scheduling, as an importable, picklable callable.

    ``LambdaLR`` saves a callable object's ``__dict__`` (here two floats) in its state.
    """

    def __init__(self, s: float, c: float = 1.0) -> None:
        check_values(KEY, SETTINGS, {"s": s, "c": c})
        self.s, self.c = float(s), float(c)

    def __call__(self, t: int) -> float:
        return (1.0 + t / self.s) ** -self.c


def power(optimizer: Optimizer, s: float, c: float = 1.0) -> LambdaLR:
    """Power scheduling: eta0 / (1 + t/s)^c (Keras' ``decay`` is c=1, s=1/decay)."""
    return LambdaLR(optimizer, PowerDecay(s, c))


def exponential(optimizer: Optimizer, s: float, decay_rate: float = 0.1) -> ExponentialLR:
    """Exponential scheduling: eta0 * decay_rate^(t/s), i.e. 10x lower every ``s`` steps."""
    check_values(KEY, SETTINGS, {"s": s, "decay_rate": decay_rate})
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
        boundaries, values = list(boundaries), list(values)
        check_values(KEY, SETTINGS, {"switch": switch, "boundaries": boundaries})
        self.switch = switch
        if any(b >= a for b, a in itertools.pairwise(boundaries)):
            raise ConfigError(f"{KEY}.boundaries={boundaries} must be strictly increasing")
        if len(values) != len(boundaries) + 1:
            raise ConfigError(
                f"{KEY}.values={values} needs one value more than boundaries={boundaries}"
            )
        check_values(KEY, SETTINGS, {"values": values})
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
    check_values(
        KEY,
        SETTINGS,
        {
            "mode": mode,
            "threshold_mode": threshold_mode,
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
    check_values(KEY, SETTINGS, numbers)
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


def check_scheduler_keys(node: Mapping[str, Any], key: str, options: Iterable[str] = ()) -> None:
    """A key the node lacks, or a setting without a schedule: ``scheduler=none`` is an empty
    node, and a key added to it (``+scheduler.interval=step``) has no schedule to act on
    (``options``: the config's schedules, named in that error)."""
    check_known_keys(SchedulerSettings, node, key)
    if not isinstance(node.get("schedule"), Mapping):
        name, value = next(iter(node.items()))
        listed = ", ".join(o for o in options if o != "none")
        raise ConfigError(
            f"{key}.{name}={shown(value)} needs a schedule: {key}=none has none"
            + (f"; choose one of: {listed}" if listed else "")
        )


def check_scheduler(
    node: Mapping[str, Any], key: str = "scheduler", options: Iterable[str] = ()
) -> SchedulerSettings:
    """The node's keys, its schedule's arguments, and the settings around it: when it steps.

    ``scheduler=none`` is an empty node; a key added to it (``+scheduler.interval=step``) has
    no schedule to act on (``options``: the config's schedules, to name in that error).
    """
    check_scheduler_keys(node, key, options)
    schedule = node["schedule"]
    where = f"{key}.schedule"
    check_arguments(schedule, where, target_of(schedule, where), passed=("optimizer",))
    return SchedulerSettings(**node, key=key)


def check_monitor(monitor: Any, mode: str, key: str = "scheduler") -> None:
    """A plateau schedule must watch a metric the module logs, in the direction that is better."""
    better = lookup(MONITOR_MODES, f"{key}.monitor", monitor)
    if mode != better:
        raise ConfigError(
            f"{key}.schedule.mode={mode!r} does not fit {key}.monitor={monitor!r} "
            f"(better is {better})"
        )


def build_schedule(
    node: Mapping[str, Any], optimizer: Optimizer, trainer: Any, key: str = "scheduler"
) -> LRScheduler:
    """The schedule of a ``scheduler`` node (at ``key``); a null ``total_steps`` becomes the
    run's length."""
    settings = check_scheduler(node, key)
    schedule = dict(node["schedule"])
    if "total_steps" in schedule and schedule["total_steps"] is None:
        schedule["total_steps"] = run_length(trainer, settings.interval)
    built = build(schedule, f"{key}.schedule", optimizer=optimizer)
    if isinstance(built, ReduceLROnPlateau):
        check_monitor(settings.monitor, built.mode, key)
    return built
