"""Build the ``optimizer`` config node into a ``torch.optim`` optimizer, checking its values first.

torch's own checks name its argument ("Invalid learning rate: -1"), not the config key, and
some bad values (momentum 1.5, a decay rate above 1) it accepts and then diverges on; here each
known value is checked against its meaning and reported as one line naming ``optimizer.<key>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from dnnlab.building import build
from dnnlab.errors import ConfigError
from dnnlab.ranges import Rule, check, fraction, non_negative, positive

# Hyperparameter name (as torch.optim spells it) -> the rule its value must follow. The one
# table: dnnlab.validation checks the same rules on the config before any data is read.
RULES: dict[str, Rule] = {
    "lr": positive("a learning rate"),
    "eps": positive("an epsilon"),
    "momentum": fraction("a momentum"),
    "dampening": fraction("a dampening"),
    "alpha": fraction("a decay rate (RMSprop's rho)"),
    "weight_decay": non_negative("a weight decay"),
    "initial_accumulator_value": non_negative("an initial accumulator value"),
    "lr_decay": non_negative("a learning-rate decay"),
    "momentum_decay": non_negative("a momentum decay"),
}


def check_optimizer(node: Mapping[str, Any], key: str = "optimizer") -> None:
    """Raise a one-line ``ConfigError`` for the first value outside its meaning's range."""
    for name, rule in RULES.items():
        value = node.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}.{name}={value!r} must be a number")
        check(f"{key}.{name}", value, rule)
    betas = node.get("betas")
    if betas is not None and (
        len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas)
    ):
        raise ConfigError(f"{key}.betas={list(betas)} must be two numbers in [0, 1)")
    if node.get("nesterov") and not node.get("momentum"):
        raise ConfigError(f"{key}.nesterov=true needs {key}.momentum > 0")


def build_optimizer(
    node: Mapping[str, Any], params: Iterable[Tensor], key: str = "optimizer"
) -> Optimizer:
    """The optimizer named by ``node['_target_']`` with the node's arguments, on ``params``."""
    check_optimizer(node, key)
    return build(node, key, params=params)
