"""Settings classes: one typed object per group, checked in one place under the key its builder
gives, and the table the config check before any data is read derives its rules from."""

from __future__ import annotations

import dataclasses
import re

import pytest

from dnnlab.app.checks import choices, settings_classes
from dnnlab.errors import ConfigError
from dnnlab.model.hidden import BatchNormChoice
from dnnlab.optim import schedules
from dnnlab.settings import RuleTable, check_values, docs, from_mapping
from dnnlab.train.transfer import FROZEN_BN_MODES, TransferSettings


def test_from_mapping_takes_config_names_and_refuses_an_unknown_key() -> None:
    settings = from_mapping(BatchNormChoice, {"batch_norm": "after", "bn_eps": 1e-3}, "net")
    assert settings.place == "after" and settings.eps == 1e-3
    message = (
        "net.bn_epsilon=0.1: unknown key 'bn_epsilon' in net; valid keys: batch_norm, bn_eps, "
        "bn_momentum, bn_moving_variance, input_batch_norm"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        from_mapping(BatchNormChoice, {"bn_epsilon": 0.1}, "net")


def test_a_choice_is_refused_under_the_given_key() -> None:
    with pytest.raises(ConfigError, match=r"^source\.frozen_bn='x' is not valid; choose one of: "):
        TransferSettings(None, None, 0, None, "x", key="source")


def test_a_rule_table_checks_the_names_it_knows_and_skips_the_others() -> None:
    check_values("sched", schedules.SETTINGS, {"_target_": "f", "gamma": -5, "s": 2})
    with pytest.raises(ConfigError, match=r"^sched\.s=0 is out of range; expected a decay "):
        check_values("sched", schedules.SETTINGS, {"s": 0})
    with pytest.raises(ConfigError, match=r"^t\.mode='up' is not valid; choose one of: max, min$"):
        check_values("t", schedules.SETTINGS, {"mode": "up"})


def test_every_setting_says_what_it_does() -> None:
    for group, sources in settings_classes().items():
        for source in sources:
            if isinstance(source, RuleTable):
                continue  # a torch class's arguments: torch documents them
            for name, doc in docs(source).items():
                assert doc and "\n" not in doc, f"{group}.{name}"
            assert all(f.type for f in dataclasses.fields(source)), group


def test_choices_come_from_the_settings_classes() -> None:
    named = choices()
    assert named["transfer.frozen_bn"] is FROZEN_BN_MODES
    assert named["scheduler.interval"] is schedules.INTERVALS
    assert "split" in named and "model.batch_norm" in named
