"""Config checks that run before any data is read: value ranges, the named choices no builder
sees before the data, and the types of overrides.

Hydra's grammar types a command-line value (``0.1`` is a float, ``abc`` a string) but the configs
are plain YAML without schemas, so a wrong type would surface deep inside torch or Lightning.
Here the type a key has in the config *before* the command line's value overrides is the type the
user must give; ranges come from the book's definitions (rates are non-negative, a dropout rate
lies in [0, 1)). The rules and choices are read from the settings classes the modules check
their own settings with (:func:`settings_classes`: group -> classes), so a bound is written once.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dnnlab.app.compose import group_options
from dnnlab.errors import ConfigError, lookup
from dnnlab.ranges import BY_NAME, SEED, Rule, check, out_of_range
from dnnlab.settings import table

# fnmatch for "any item of the list" (leaves() names items ``key[i]``; ``[[]`` is a literal "[").
ITEM = "[[]*]"


@functools.cache
def settings_classes() -> dict[str, tuple[Any, ...]]:
    """Config path of a group -> the settings classes (or rule tables) that declare its keys:
    the one table of where each setting is checked. Built on first use, not at import: the
    cli (and through it the sweep report) imports this module for the type checks alone, and
    the data and transfer modules import Lightning, which takes seconds."""
    from dnnlab.callbacks.diagnostics import callback as diagnostics
    from dnnlab.callbacks.diagnostics import verdict
    from dnnlab.data import datamodule
    from dnnlab.evaluate import evaluation
    from dnnlab.model import hidden, initializers, mlp
    from dnnlab.optim import clipping, optimizers, regularization, schedules
    from dnnlab.train import lr_finder, transfer

    return {
        "model": (mlp.Layers, hidden.BatchNormChoice, hidden.DropoutChoice),
        "model.variance_scaling": (initializers.VarianceScaling,),
        "parity": (hidden.BatchNormChoice,),  # the library defaults model.bn_* interpolate
        "optimizer": (optimizers.SETTINGS,),  # any optimizer's arguments, by name
        "scheduler": (schedules.SchedulerSettings,),
        "scheduler.schedule": (schedules.SETTINGS,),  # any schedule's arguments, by name
        "regularization": (regularization.Regularization,),
        "clipping": (clipping.ClippingSettings,),
        "transfer": (transfer.TransferSettings,),
        "tune": (lr_finder.TuneSettings,),
        "data": (datamodule.DataSettings,),
        "mc_dropout": (evaluation.MCDropoutSettings,),
        "callbacks.gradient_diagnostics": (diagnostics.DiagnosticsSettings,),
        "callbacks.gradient_diagnostics.verdict": (verdict.Thresholds,),
    }


@functools.cache
def range_rules() -> dict[str, Rule]:
    """Full dotted key pattern -> its rule, derived from the settings classes (the objects the
    modules check the same values with), and the top-level settings; then the meanings
    :data:`dnnlab.ranges.BY_NAME` gives any key of theirs no class declares yet."""
    from dnnlab.train import threads

    rules: dict[str, Rule] = {"seed": SEED, "threads": threads.RULE}
    for group, sources in settings_classes().items():
        for source in map(table, sources):
            rules |= {f"{group}.{name}": rule for name, rule in source.rules.items()}
            rules |= {f"{group}.{name}{ITEM}": rule for name, rule in source.items.items()}
    return rules | {f"*{ending}": rule for ending, rule in BY_NAME.items()}


@functools.cache
def choices() -> dict[str, Collection[str]]:
    """Dotted key -> its valid names, from the same settings classes: also those whose builder
    runs only once the data is read, or not at all (``transfer.frozen_bn`` without freezing).
    Built on first use, as :func:`range_rules`."""
    from dnnlab.evaluate import evaluation

    named: dict[str, Collection[str]] = {"split": evaluation.SPLITS}  # eval.py's
    for group, sources in settings_classes().items():
        for source in map(table, sources):
            named |= {f"{group}.{name}": names for name, names in source.choices.items()}
    return named


def leaves(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf, list items as ``key[i]``, without resolving
    interpolations."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from leaves(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, f"{key}[{index}]")
    else:
        yield key, node


def check_ranges(cfg: DictConfig, rules: Mapping[str, Rule] | None = None) -> None:
    """Raise :class:`ConfigError` for the first number outside its valid range (``rules``:
    :func:`range_rules`), then for the first name outside its :func:`choices`, then for a
    scheduler setting without a schedule: on every config, whichever of its settings the
    run's builders will use."""
    rules = range_rules() if rules is None else rules
    for key, value in leaves(OmegaConf.to_container(cfg, resolve=False)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            continue  # types are check_override_types' job; text may be an interpolation
        for pattern, rule in rules.items():
            if not fnmatch.fnmatchcase(key, pattern):
                continue
            if value is None:  # null fits any type; only a rule that allows it accepts it
                if not rule.optional:
                    raise out_of_range(key, value, rule.expected)
            else:
                check(key, value, rule)
    check_choices(cfg)
    check_scheduler_node(cfg)


def check_scheduler_node(cfg: DictConfig) -> None:
    """The scheduler node's keys, and a schedule for its settings, naming the config's
    schedules (the library check, :func:`dnnlab.optim.schedules.check_scheduler_keys`, cannot
    know them)."""
    node = cfg.get("scheduler")
    if node:
        from dnnlab.optim.schedules import check_scheduler_keys

        plain_node = OmegaConf.to_container(node, resolve=False)
        check_scheduler_keys(plain_node, "scheduler", group_options("scheduler"))


def check_choices(cfg: DictConfig, valid: Mapping[str, Collection[str]] | None = None) -> None:
    """Raise :class:`ConfigError` for a set key whose value is not one of its names."""
    for key, names in (choices() if valid is None else valid).items():
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if value is not None:
            lookup(dict.fromkeys(names), key, value)


# Keys whose library accepts a string or a number alike (Lightning: devices=auto or devices=2).
ANY_SCALAR_KEYS = ("trainer.devices", "trainer.precision", "trainer.strategy")


# A value's kind in words: one of it, and several (a list's items).
KINDS = {
    "boolean": ("a boolean (true/false)", "booleans (true/false)"),
    "integer": ("an integer", "integers"),
    "number": ("a number", "numbers"),
    "list": ("a list", "lists"),
    "mapping": ("a mapping", "mappings"),
    "string": ("a string", "strings"),
}


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list | ListConfig):
        return "list"
    if isinstance(value, dict | DictConfig):
        return "mapping"
    return "string"


def type_name(value: Any) -> str:
    """``value``'s kind in words; a list names its items' kind (``fits`` checks them by the
    first item), so ``[1e9]`` for ``[300, 100]`` reads "a list of integers"."""
    name = kind(value)
    if name == "list" and len(value) > 0 and value[0] is not None:
        return f"a list of {KINDS[kind(value[0])][1]}"
    return KINDS[name][0]


def fits(expected: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``expected``: same kind, an integer where a number is asked."""
    if expected is None or value is None:
        return True
    if isinstance(expected, bool):
        return isinstance(value, bool)
    if isinstance(expected, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(expected, list | ListConfig):
        return isinstance(value, list | ListConfig) and (
            len(expected) == 0 or all(fits(expected[0], item) for item in value)
        )
    if isinstance(expected, dict | DictConfig):
        return isinstance(value, dict | DictConfig)
    return not isinstance(value, list | ListConfig | dict | DictConfig)  # strings take scalars


def check_override_types(cfg: DictConfig, baseline: DictConfig, keys: Iterable[str]) -> None:
    """Each overridden key keeps the type it has in ``baseline`` (the config before overrides)."""
    for key in keys:
        if key in ANY_SCALAR_KEYS:
            continue
        expected = OmegaConf.select(baseline, key, throw_on_resolution_failure=False)
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if isinstance(expected, str) and expected.startswith("${"):
            continue  # an interpolation: its type is whatever it points to
        if not fits(expected, value):
            raise ConfigError(
                f"{key}={as_written(value)!r} has the wrong type; expected {type_name(expected)} "
                f"like the default {key}={as_written(expected)!r}"
            )


def as_written(value: Any) -> Any:
    """A config value as the user wrote it: containers plain, interpolations unresolved."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
