"""Errors a user can fix by changing the command line: reported as one line, never a traceback."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


class DnnlabError(Exception):
    """Base class: the message alone tells the user what is wrong and what is valid."""

    exit_code = 2  # train.py's exit status for this kind of error


class ConfigError(DnnlabError, ValueError):
    """A config value is unknown or out of range."""


class DataError(DnnlabError):
    """Data files are missing, truncated or fail their checksum."""


class TrainingDiverged(DnnlabError):
    """The loss or a gradient went NaN/inf: not bad input, but a run that cannot go on."""

    exit_code = 3


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, as one space."""
    return " ".join(text.split())


def invalid_choice(key: str, value: object, choices: Iterable[str]) -> ConfigError:
    """The standard one-line error for a name that is not in a registry."""
    valid = ", ".join(sorted(choices))
    return ConfigError(f"{key}={value!r} is not valid; choose one of: {valid}")


def unknown_key(given: str, name: str, where: str, valid: Iterable[str]) -> ConfigError:
    """The standard one-line error for a key that its node, or the builder it feeds, lacks:
    ``given`` is the setting as the user wrote it (``model.dropuot=0.2``)."""
    listed = ", ".join(sorted(valid))
    return ConfigError(f"{given}: unknown key {name!r} in {where}; valid keys: {listed}")


def describe(changes: Mapping[str, tuple[object, object]]) -> str:
    """``key: old -> new`` for each change, in one line."""
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


def refusal(refused: Mapping[str, tuple[object, object]]) -> str:
    """The one message form of a refused resume: the loader's state refuses another layout
    as the resume check refuses a changed setting."""
    return (
        "a resume continues the same run, but these settings differ from the checkpoint's "
        f"(checkpoint -> now): {describe(refused)}; resume with the checkpoint's values, "
        "or start a new run without ckpt_path"
    )


def lookup(registry: Mapping[str, T], key: str, name: str) -> T:
    """Registry access that fails with :func:`invalid_choice` instead of a KeyError."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise invalid_choice(key, name, registry) from None
