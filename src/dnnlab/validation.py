"""Config checks that run before any data is read: value ranges and the types of overrides.

Hydra's grammar types a command-line value (``0.1`` is a float, ``abc`` a string) but the configs
are plain YAML without schemas, so a wrong type would surface deep inside torch or Lightning.
Here the type a key has in the config *before* the command line's value overrides is the type the
user must give; ranges come from the book's definitions (rates are non-negative, a dropout rate
lies in [0, 1)).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dnnlab.errors import ConfigError
from dnnlab.optimizers import RULES as OPTIMIZER_RULES
from dnnlab.ranges import DROPOUT_RATE, PENALTY, Rule, check

# Full dotted key pattern -> (test, what is valid). Patterns match any group option that has the
# key, so optimizers and regularizers added later are checked without a change here.
RANGE_RULES: dict[str, Rule] = {
    **{f"optimizer.{name}": rule for name, rule in OPTIMIZER_RULES.items()},
    "*dropout": DROPOUT_RATE,  # model.alpha_dropout too
    "*dropout_rate": DROPOUT_RATE,
    "*dropout.rate": DROPOUT_RATE,
    "*dropout.p": DROPOUT_RATE,
    "*.l1": PENALTY,
    "*.l2": PENALTY,
}

# Keys whose library accepts a string or a number alike (Lightning: devices=auto or devices=2).
ANY_SCALAR_KEYS = ("trainer.devices", "trainer.precision", "trainer.strategy")


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf, without resolving interpolations."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    elif not isinstance(node, list):
        yield prefix.rstrip("."), node


def check_ranges(cfg: DictConfig, rules: dict[str, Rule] = RANGE_RULES) -> None:
    """Raise :class:`ConfigError` for the first number outside its valid range."""
    for key, value in leaves(OmegaConf.to_container(cfg, resolve=False)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        for pattern, rule in rules.items():
            if fnmatch.fnmatchcase(key, pattern):
                check(key, value, rule)


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, list | ListConfig):
        return "a list"
    if isinstance(value, dict | DictConfig):
        return "a mapping"
    return "a string"


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
                f"{key}={plain(value)!r} has the wrong type; expected {type_name(expected)} "
                f"like the default {key}={plain(expected)!r}"
            )


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
