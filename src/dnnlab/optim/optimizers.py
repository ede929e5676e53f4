"""Build the ``optimizer`` config node into a ``torch.optim`` optimizer, checking its values first.

torch's own checks name its argument ("Invalid learning rate: -1"), not the config key, and
some bad values (momentum 1.5, a decay rate above 1) it accepts and then diverges on; here each
known value is checked against its meaning and reported as one line naming ``optimizer.<key>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor
from torch.optim import SGD, Adagrad, Optimizer, RMSprop, SparseAdam

from dnnlab.building import build, check_arguments, target_of
from dnnlab.errors import ConfigError
from dnnlab.optim.keras import KerasOptimizer
from dnnlab.ranges import LEARNING_RATE, MOMENTUM, fraction, non_negative, positive
from dnnlab.settings import RuleTable, check_values

# Hyperparameter name (as torch.optim spells it) -> the rule its value must follow, for every
# optimizer the config may name; list hyperparameters -> the rule of each item (``key[i]``).
# The one table: dnnlab.app.checks checks the same rules on the config before any data is read.
SETTINGS = RuleTable(
    rules={
        "lr": LEARNING_RATE,
        "eps": positive("an epsilon"),
        "momentum": MOMENTUM,
        "dampening": fraction("a dampening"),
        "alpha": fraction("a decay rate (RMSprop's rho)"),
        "weight_decay": non_negative("a weight decay"),
        "initial_accumulator_value": non_negative("an initial accumulator value"),
        "lr_decay": non_negative("a learning-rate decay"),
        "momentum_decay": non_negative("a momentum decay"),
    },
    items={"betas": fraction("a decay rate (Adam's beta)")},
)


def optimizer_class(node: Mapping[str, Any], key: str = "optimizer") -> type[Optimizer]:
    """The class ``node['_target_']`` names; anything else is refused before any data is read
    (a dict or a function would only fail once Lightning asks for the optimizer)."""
    target = target_of(node, key)
    if not (isinstance(target, type) and issubclass(target, Optimizer)):
        raise ConfigError(
            f"{key}._target_={node.get('_target_')!r} must name a torch.optim.Optimizer subclass "
            "(e.g. torch.optim.SGD)"
        )
    closure = inspect.signature(target.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise ConfigError(
            f"{key}._target_={node.get('_target_')!r} needs a closure at every step (it "
            "re-evaluates the loss, as L-BFGS does); training takes one step per mini-batch: "
            "choose a first-order optimizer (e.g. torch.optim.SGD)"
        )
    if issubclass(target, SparseAdam):
        raise ConfigError(
            f"{key}._target_={node.get('_target_')!r} takes sparse gradients only; the MLP's "
            "are dense: use torch.optim.Adam"
        )
    return target


def state_tensors(node: Mapping[str, Any]) -> int:
    """How many tensors of each parameter's size the optimizer keeps (the memory estimate):
    exact for the book's nine (either parity's), two (Adam's moments) for any other."""
    cls = optimizer_class(node)
    if issubclass(cls, KerasOptimizer):
        return cls.state_tensors(node)
    momentum = int(bool(node.get("momentum")))
    if issubclass(cls, SGD):
        return momentum
    if issubclass(cls, RMSprop):
        return 1 + momentum + int(bool(node.get("centered")))
    if issubclass(cls, Adagrad):
        return 1
    return 2 + int(bool(node.get("amsgrad")))


def check_optimizer(node: Mapping[str, Any], key: str = "optimizer") -> None:
    """Raise a one-line ``ConfigError`` for a target that is no optimizer, a key it does not
    take, or the first value outside its meaning's range."""
    cls = optimizer_class(node, key)
    check_arguments(node, key, cls, passed=("params",))
    if issubclass(cls, KerasOptimizer):
        cls.check_config(node, key)
    betas = node.get("betas")
    if betas is not None and len(betas) != 2:
        raise ConfigError(f"{key}.betas={list(betas)} must be two decay rates (beta1, beta2)")
    # null: torch's own default
    check_values(key, SETTINGS, {name: v for name, v in node.items() if v is not None})
    if node.get("nesterov") and not node.get("momentum"):
        raise ConfigError(f"{key}.nesterov=true needs {key}.momentum > 0")


def build_optimizer(
    node: Mapping[str, Any], params: Iterable[Tensor], key: str = "optimizer"
) -> Optimizer:
    """The optimizer named by ``node['_target_']`` with the node's arguments, on ``params``."""
    check_optimizer(node, key)
    return build(node, key, params=params)
