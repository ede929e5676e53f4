"""Valid ranges of numeric settings: one rule per meaning, shared by the config checks that run
before any data is read (:mod:`dnnlab.app.checks`) and by the objects that use the values.

Every bad value reads the same way, ``KEY=V is out of range; expected <what is valid>``, whether
the config check or the object's own check (library use, tests) finds it.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from numbers import Integral, Real
from typing import NamedTuple

from dnnlab.errors import ConfigError


class Rule(NamedTuple):
    """What a number must be for one meaning, e.g. (``v > 0``, "a learning rate > 0")."""

    valid: Callable[[float], bool]  # the bound; only ever called with a number
    expected: str  # what is valid, in words, for the error line
    optional: bool = False  # null (None) is valid too: the setting is off or takes a default


def _rule(what: str, test: Callable[[float], bool], bound: str, integer: bool = False) -> Rule:
    """A rule named ``what`` with its ``bound`` in words; ``integer`` refuses fractions too."""
    if integer:
        return Rule(lambda v: isinstance(v, Integral) and test(v), f"{what}, an integer {bound}")
    return Rule(test, f"{what} {bound}")


def above(what: str, low: float) -> Rule:
    return _rule(what, lambda v: v > low, f"> {low}")


def positive(what: str) -> Rule:
    return above(what, 0)


def non_negative(what: str) -> Rule:
    return _rule(what, lambda v: v >= 0, ">= 0")


# An interval's brackets -> the comparison it makes at that end ("[" and "]" include the end).
_LOWER = {"[": operator.le, "(": operator.lt}
_UPPER = {"]": operator.le, ")": operator.lt}


def interval(what: str, low: float, high: float, bounds: str = "[]") -> Rule:
    """``what`` between ``low`` and ``high``; ``bounds`` is "[]", "[)", "(]" or "()"."""
    lower, upper = _LOWER[bounds[0]], _UPPER[bounds[1]]
    return _rule(
        what, lambda v: lower(low, v) and upper(v, high), f"in {bounds[0]}{low}, {high}{bounds[1]}"
    )


def fraction(what: str) -> Rule:
    return interval(what, 0, 1, "[)")


def integers(what: str, low: int, high: int | None = None) -> Rule:
    """Whole numbers from ``low`` (to ``high`` inclusive, when given): counts and sizes."""
    if high is None:
        return _rule(what, lambda v: v >= low, f">= {low}", integer=True)
    return _rule(what, lambda v: low <= v <= high, f"in [{low}, {high}]", integer=True)


def positive_int(what: str) -> Rule:
    return integers(what, 1)


def or_null(rule: Rule, means: str = "") -> Rule:
    """``rule``, or null: the setting's off switch or its "use the default"."""
    note = f" ({means})" if means else ""
    return rule._replace(expected=f"{rule.expected}, or null{note}", optional=True)


# Meanings used by more than one module.
PENALTY = non_negative("a penalty factor")  # regularization.l1, regularization.l2
DROPOUT_RATE = fraction("a dropout rate")
LEARNING_RATE = positive("a learning rate")  # optimizer.lr, schedules, transfer.unfreeze_lr
MOMENTUM = fraction("a momentum")  # optimizer.momentum, 1cycle's momentum range
# Key endings that say what a setting is wherever it sits: a group option added later (another
# regularizer's dropout.rate, another optimizer's l1) is checked before any settings class
# declares it.
BY_NAME: dict[str, Rule] = {
    "dropout": DROPOUT_RATE,
    "dropout_rate": DROPOUT_RATE,
    "dropout.rate": DROPOUT_RATE,
    "dropout.p": DROPOUT_RATE,
    ".l1": PENALTY,
    ".l2": PENALTY,
}
# seed: the range Lightning's seed_everything (NumPy's generator) accepts; null is refused, as
# its random pick would leave the run without the seed that reproduces it.
SEED = integers("a seed", 0, 2**32 - 1)


def shown(value: object) -> str:
    """``value`` as the config spells it: null, true, quoted text, plain numbers."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return repr(value) if isinstance(value, str) else str(value)


def out_of_range(key: str, value: object, expected: str) -> ConfigError:
    """The standard one-line error for a number outside its meaning's range."""
    return ConfigError(f"{key}={shown(value)} is out of range; expected {expected}")


def is_number(value: object) -> bool:
    """A real number; not a boolean, though Python counts ``True`` as 1."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check(key: str, value: float, rule: Rule) -> None:
    """Raise the standard error when a number, known to be one, breaks ``rule``."""
    if not rule.valid(value):
        raise out_of_range(key, value, rule.expected)


def check_number(key: str, value: object, rule: Rule) -> None:
    """:func:`check` for a value of any type (a caller's argument): text, booleans and null
    (unless the rule allows it) are refused with the same line instead of a TypeError, or a
    ``True`` that passes as 1."""
    if value is None and rule.optional:
        return
    if not is_number(value):
        raise out_of_range(key, value, rule.expected)
    check(key, value, rule)


def check_all(prefix: str, rules: dict[str, Rule], values: dict[str, object]) -> None:
    """:func:`check_number` of each of ``values`` under ``prefix.<name>`` against its rule."""
    for name, value in values.items():
        check_number(f"{prefix}.{name}", value, rules[name])


def check_items(key: str, values: list, rule: Rule) -> None:
    """Each item of a list setting, named ``key[i]`` in the error."""
    for index, value in enumerate(values):
        check_number(f"{key}[{index}]", value, rule)
