"""Hydra ``instantiate`` whose failures become one line naming the config key, not a traceback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate

from dnnlab.errors import ConfigError, DnnlabError, one_line


def build(node: Mapping[str, Any], key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` with plain containers (primitive, checkpoint-safe state).

    A ``DnnlabError`` raised by the target itself passes through unchanged; an unimportable
    ``_target_`` or arguments the target does not take are reported against ``key``.
    """
    target = node.get("_target_")
    try:
        get_method(target)
    except Exception:
        raise ConfigError(f"{key}._target_={target!r} is not an importable callable") from None
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, DnnlabError):
            raise cause from None
        reason = one_line(str(cause)) or type(cause).__name__
        raise ConfigError(f"{key}: {target} rejects these arguments: {reason}") from None
