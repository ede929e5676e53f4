"""Valid ranges of numeric settings: one rule per meaning, shared by the config checks that run
before any data is read (:mod:`dnnlab.validation`) and by the objects that use the values."""

from __future__ import annotations

from collections.abc import Callable

from dnnlab.errors import ConfigError

# (is the value valid?, what is valid, e.g. "a learning rate > 0")
Rule = tuple[Callable[[float], bool], str]


def positive(what: str) -> Rule:
    return (lambda v: v > 0, f"{what} > 0")


def non_negative(what: str) -> Rule:
    return (lambda v: v >= 0, f"{what} >= 0")


def fraction(what: str) -> Rule:
    return (lambda v: 0 <= v < 1, f"{what} in [0, 1)")


PENALTY = non_negative("a penalty factor")  # regularization.l1, regularization.l2
DROPOUT_RATE = fraction("a dropout rate")


def out_of_range(key: str, value: object, expected: str) -> ConfigError:
    """The standard one-line error for a number outside its meaning's range."""
    return ConfigError(f"{key}={value} is out of range; expected {expected}")


def check(key: str, value: float, rule: Rule) -> None:
    valid, expected = rule
    if not valid(value):
        raise out_of_range(key, value, expected)
