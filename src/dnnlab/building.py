"""Hydra ``instantiate`` whose failures become one line naming the config key, not a traceback."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate

from dnnlab.errors import ConfigError, DnnlabError, one_line, unknown_key
from dnnlab.ranges import shown

# Keys Hydra's instantiate reads itself; never passed to the target.
HYDRA_KEYS = ("_target_", "_args_", "_partial_", "_convert_", "_recursive_")

# Where the targets a checkpoint's settings may name lived before the package got its folders:
# old prefix -> new. Checkpoints written then still resume, transfer and evaluate.
MOVED = {
    "dnnlab.schedules.": "dnnlab.optim.schedules.",
    "dnnlab.optimizers_keras.": "dnnlab.optim.keras.",
}


def current_targets(node: Any) -> Any:
    """``node`` (plain containers) with every ``_target_`` in a moved module renamed."""
    if isinstance(node, dict):
        renamed = {k: current_targets(v) for k, v in node.items()}
        target = renamed.get("_target_")
        for old, new in MOVED.items():
            if isinstance(target, str) and target.startswith(old):
                renamed["_target_"] = new + target[len(old) :]
        return renamed
    if isinstance(node, list):
        return [current_targets(item) for item in node]
    return node


def accepted_keys(builder: Callable[..., Any], passed: Collection[str] = ()) -> list[str] | None:
    """The keyword arguments a config node may give ``builder`` (``passed``: the ones the code
    gives itself); ``None`` when it takes any (``**kwargs``) or its signature is unknown."""
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):  # builtins and C extensions without a signature
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in named and p.name not in passed]


def check_arguments(
    node: Mapping[str, Any], key: str, builder: Callable[..., Any], passed: Collection[str] = ()
) -> None:
    """Refuse a key of ``node`` that ``builder`` does not take, listing the ones it does.

    A node splatted into a builder (``build_mlp(**model)``) would otherwise stop with a
    TypeError; ``+model.dropuot=0.2`` adds such a key past Hydra's own check of the names.
    """
    valid = accepted_keys(builder, passed)
    if valid is None:
        return
    for name, value in node.items():
        if name not in valid and name not in HYDRA_KEYS:
            raise unknown_key(f"{key}.{name}={shown(value)}", name, key, valid)


def target_of(node: Mapping[str, Any], key: str) -> Any:
    """The object ``node['_target_']`` names, or a one-line error against ``key._target_``."""
    target = node.get("_target_")
    try:
        return get_method(target)
    except Exception:
        raise ConfigError(f"{key}._target_={target!r} is not an importable callable") from None


def build(node: Mapping[str, Any], key: str, /, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` with plain containers (primitive, checkpoint-safe state).

    A ``DnnlabError`` raised by the target itself passes through unchanged; an unimportable
    ``_target_``, a key the target does not take, or arguments it rejects are reported against
    ``key``.
    """
    target = node.get("_target_")
    check_arguments(node, key, target_of(node, key), passed=kwargs)
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, DnnlabError):
            raise cause from None
        reason = one_line(str(cause)) or type(cause).__name__
        raise ConfigError(f"{key}: {target} rejects these arguments: {reason}") from None
