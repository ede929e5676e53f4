"""One rule per meaning: the rule objects, their one-line message, and that the config checks
use the very objects the settings classes check their own fields with."""

from __future__ import annotations

import re

import numpy as np
import pytest
from lightning.fabric.utilities.seed import max_seed_value, min_seed_value
from omegaconf import OmegaConf

from dnnlab.app.checks import check_ranges, range_rules, settings_classes
from dnnlab.app.compose import compose_config
from dnnlab.data.datamodule import DataSettings
from dnnlab.errors import ConfigError
from dnnlab.model.hidden import BatchNormChoice
from dnnlab.optim.regularization import Regularization
from dnnlab.ranges import (
    SEED,
    Rule,
    check_number,
    fraction,
    integers,
    interval,
    non_negative,
    or_null,
    positive,
    positive_int,
)
from dnnlab.settings import table as settings_table

SIZES = {"val_size": 10, "val_split": "last", "batch_size": 8, "eval_batch_size": 8}
SIZES |= {"steps_per_block": 1, "train_size": None}

# (rule, valid values, invalid values, its words)
RULES = [
    (positive("a rate"), [1e-9, 3], [0, -1], "a rate > 0"),
    (non_negative("a factor"), [0, 2.5], [-1e-9], "a factor >= 0"),
    (fraction("a rate"), [0, 0.5], [1, -0.1], "a rate in [0, 1)"),
    (interval("a momentum", 0, 1), [0, 1], [1.01, -0.1], "a momentum in [0, 1]"),
    (interval("a fraction", 0, 0.5, "()"), [0.25], [0, 0.5], "a fraction in (0, 0.5)"),
    (interval("a value", 0, 1, "(]"), [1], [0], "a value in (0, 1]"),
    (positive_int("a size"), [1, np.int64(7)], [0, 2.5, 2.0], "a size, an integer >= 1"),
    (integers("a count", 0), [0, 3], [-1, 0.5], "a count, an integer >= 0"),
    (integers("a layer count", 1, 3), [1, 3], [0, 4], "a layer count, an integer in [1, 3]"),
    (or_null(positive("a radius"), "off"), [None, 1], [0], "a radius > 0, or null (off)"),
]


@pytest.mark.parametrize(("rule", "good", "bad", "words"), RULES, ids=[r[3] for r in RULES])
def test_rules_accept_their_range_and_say_it(rule: Rule, good: list, bad: list, words) -> None:
    assert rule.expected == words
    for value in good:
        check_number("some.key", value, rule)
    for value in bad:
        with pytest.raises(ConfigError, match=rf"^some\.key={value} is out of range; expected "):
            check_number("some.key", value, rule)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(True, "true"), (False, "false"), (None, "null"), ("0.1", "'0.1'"), ([1], "[1]")],
)
def test_booleans_text_and_null_are_refused_in_the_same_line(value: object, shown: str) -> None:
    message = f"lr={shown} is out of range; expected a learning rate > 0"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        check_number("lr", value, positive("a learning rate"))


def declared_rules() -> list[tuple[str, Rule, bool]]:
    """(config key, rule, of each list item) of every field a settings class (or rule table)
    declares a rule for: read from the classes themselves, not copied here."""
    declared = []
    for group, sources in settings_classes().items():
        for source in map(settings_table, sources):
            declared += [(f"{group}.{name}", rule, False) for name, rule in source.rules.items()]
            declared += [(f"{group}.{name}", rule, True) for name, rule in source.items.items()]
    return declared


def test_the_check_before_any_data_holds_every_declared_rule() -> None:
    """A bound is written once: a value outside it fails the config check with the settings
    field's own words (-1e9 is outside every rule's range)."""
    declared = declared_rules()
    keys = [key for key, _, _ in declared]
    assert {"model.hidden", "clipping.threshold", "optimizer.betas", "parity.bn_eps"} <= set(keys)
    for key, rule, each in declared:
        cfg = OmegaConf.create()
        OmegaConf.update(cfg, key, [-1e9] if each else -1e9)
        shown = f"{key}[0]" if each else key
        message = f"{shown}=-1000000000.0 is out of range; expected {rule.expected}"
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            check_ranges(cfg, range_rules())


@pytest.mark.parametrize(
    ("cls", "kwargs", "key"),
    [
        (Regularization, {"l1": -1}, "regularization.l1"),
        (BatchNormChoice, {"momentum": 2}, "model.bn_momentum"),
        (DataSettings, dict(SIZES, batch_size=0), "data.batch_size"),
    ],
)
def test_a_settings_object_names_the_key_its_builder_gives(cls, kwargs, key) -> None:
    """The library names fields; the key prefix comes from where the group is built."""
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.* is out of range"):
        cls(**kwargs)
    name = key.rpartition(".")[2]
    with pytest.raises(ConfigError, match=rf"^elsewhere\.{name}=.* is out of range"):
        cls(**kwargs, key="elsewhere")


def test_the_seed_rule_is_the_range_seed_everything_accepts() -> None:
    for value in (min_seed_value, max_seed_value):
        check_number("seed", value, SEED)
    for value in (min_seed_value - 1, max_seed_value + 1, None, 4.5):
        with pytest.raises(ConfigError, match=r"^seed=.* is out of range; expected a seed, an "):
            check_number("seed", value, SEED)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "mc_dropout.samples=-1",
            "mc_dropout.samples=-1 is out of range; "
            "expected a number of MC dropout passes (0: off), an integer >= 0",
        ),
        (
            "model.hidden=[300,0]",
            "model.hidden[1]=0 is out of range; expected a layer size (units), an integer >= 1",
        ),
        (
            "callbacks.gradient_diagnostics.saturation_eps=0.5",
            "callbacks.gradient_diagnostics.saturation_eps=0.5 is out of range; "
            "expected a saturation margin in (0, 0.5)",
        ),
        (
            "tune.smoothing=1.0",
            "tune.smoothing=1.0 is out of range; expected a smoothing factor in [0, 1)",
        ),
    ],
)
def test_settings_used_after_training_are_checked_before_any_data(
    override: str, message: str, tmp_path
) -> None:
    """MC dropout runs after the test, the finder before training: a bad value must not wait."""
    cfg = compose_config([override], output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        check_ranges(cfg)
