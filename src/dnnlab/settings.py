"""Each config group's settings as one typed object: a frozen dataclass declared next to the
code that uses it, whose fields carry their range rule (:mod:`dnnlab.ranges`), their choices
and a one-line doc. The checks happen here, in one place, for every group.

A field names the setting, not its config path: the object is given the path of its group
(``key``) where it is built, and every error names ``<key>.<name>``. The YAML files hold the
values a run uses; a settings class holds what a value must be. The config check that runs
before any data is read (:func:`dnnlab.app.checks.range_rules`) reads the same fields.

``_target_``-built torch objects (optimizers, schedules) keep their rules in a :class:`RuleTable`
keyed by argument name, checked by the same :func:`check_values`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import MISSING, field, fields
from typing import Any, NamedTuple, TypeVar

from dnnlab.errors import ConfigError, lookup, unknown_key
from dnnlab.ranges import Rule, check_items, check_number, shown

S = TypeVar("S")


def setting(
    default: Any = MISSING,
    *,
    rule: Rule | None = None,
    items: Rule | None = None,
    choices: Collection[Any] | None = None,
    boolean: bool = False,
    nullable: bool = False,
    name: str = "",
    doc: str = "",
) -> Any:
    """A settings field: ``rule`` for a number, ``items`` for each item of a list, ``choices``
    for a name (``nullable``: or null), ``boolean`` for true/false; ``name`` is the config key
    when it differs from the field's (``bn_momentum`` for ``BatchNormChoice.momentum``);
    ``doc`` says what it does."""
    metadata = {
        "rule": rule,
        "items": items,
        "choices": choices,
        "boolean": boolean,
        "nullable": nullable,
        "name": name,
        "doc": doc,
    }
    return field(default=default, metadata=metadata)


class RuleTable(NamedTuple):
    """The rules of a ``_target_``-built object's arguments, by argument name: the one home
    of the numeric rules of every optimizer (or schedule) the config may name."""

    rules: Mapping[str, Rule]
    items: Mapping[str, Rule] = {}  # list arguments: the rule of each item (``key[i]``)
    choices: Mapping[str, Collection[Any]] = {}


Source = type | RuleTable  # a settings dataclass, or a table


def config_name(f: dataclasses.Field) -> str:
    return f.metadata.get("name") or f.name


def table(source: Source) -> RuleTable:
    """A settings class's field rules as a table keyed by config name."""
    if isinstance(source, RuleTable):
        return source
    pick = {kind: {} for kind in ("rules", "items", "choices")}
    for f in fields(source):
        for kind, meta in (("rules", "rule"), ("items", "items"), ("choices", "choices")):
            if f.metadata.get(meta) is not None:
                pick[kind][config_name(f)] = f.metadata[meta]
    return RuleTable(pick["rules"], pick["items"], pick["choices"])


def check_value(key: str, value: Any, f: dataclasses.Field) -> None:
    """One field's value against its declaration; ``key`` names it in the error."""
    meta = f.metadata
    if meta.get("choices") is not None and not (value is None and meta.get("nullable")):
        choices = meta["choices"]
        lookup(choices if isinstance(choices, Mapping) else dict.fromkeys(choices), key, value)
    if meta.get("boolean") and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    if meta.get("rule") is not None:
        check_number(key, value, meta["rule"])
    if meta.get("items") is not None and value is not None:
        check_items(key, list(value), meta["items"])


def check_fields(obj: Any, key: str, skip: Collection[str] = ()) -> None:
    """Every declared field of the settings object ``obj`` (but those in ``skip``: unused as
    set), named ``<key>.<name>``, in the order the class declares them."""
    for f in fields(obj):
        if f.name in skip:
            continue
        check_value(f"{key}.{config_name(f)}", getattr(obj, f.name), f)


def check_values(key: str, source: Source, values: Mapping[str, Any]) -> None:
    """The values of ``values`` (argument name -> value) that ``source`` has a rule or choices
    for, named ``<key>.<name>``; a name it does not know is the target's own to check."""
    rules = table(source)
    for name, value in values.items():
        if name in rules.choices:
            lookup(dict.fromkeys(rules.choices[name]), f"{key}.{name}", value)
        if name in rules.rules:
            check_number(f"{key}.{name}", value, rules.rules[name])
        if name in rules.items and value is not None:
            check_items(f"{key}.{name}", list(value), rules.items[name])


def check_known_keys(cls: type, node: Mapping[str, Any], key: str) -> None:
    """Refuse a key of ``node`` that ``cls`` has no field for, listing the ones it has."""
    valid = [config_name(f) for f in fields(cls) if f.init]
    for name, value in node.items():
        if name not in valid:
            raise unknown_key(f"{key}.{name}={shown(value)}", name, key, valid)


def default_key(cls: type) -> str:
    """Where the shipped config holds ``cls``'s group: the ``key`` it checks under when its
    builder gives none (library use)."""
    return cls.__dataclass_fields__["key"].default


def from_mapping(cls: type[S], node: Mapping[str, Any] | None, key: str | None = None) -> S:
    """The settings object of a config node (keys as the config spells them) held at ``key``,
    checked; an unknown key is the standard unknown-key line."""
    node, key = dict(node or {}), key or default_key(cls)
    check_known_keys(cls, node, key)
    by_name = {config_name(f): f.name for f in fields(cls)}
    return cls(**{by_name[name]: value for name, value in node.items()}, key=key)


def docs(cls: type) -> dict[str, str]:
    """Config name -> the field's one-line doc: what the setting does."""
    return {config_name(f): f.metadata.get("doc", "") for f in fields(cls)}
