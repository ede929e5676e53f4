"""Every study of the chapter is an experiment config; comparisons carry their own sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dnnlab.config import CONFIG_DIR, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
GROUPS = {"optimizer", "scheduler", "clipping", "regularization"}
NEEDS = {"transfer_b_on_a": ["transfer.ckpt_path=x.ckpt"]}


def same(actual: object, written: str) -> bool:
    """A composed value equals what the sweep wrote (``0.2`` and ``0.20`` alike)."""
    try:
        return float(actual) == float(written)
    except (TypeError, ValueError):
        return str(actual) == written


def sweep_params(experiment: str) -> dict[str, str]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [f"experiment={experiment}"], return_hydra_config=True)
    return dict(cfg.hydra.sweeper.params or {})


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_member_of_every_experiment_composes(experiment: str, tmp_path: Path) -> None:
    params = sweep_params(experiment)
    parser = OverridesParser.create()
    members = [[]] + [
        [f"{key}={value}"]
        for key, values in params.items()
        for value in parser.parse_overrides([f"{key}={values}"])[0].sweep_string_iterator()
    ]
    for member in members:
        cfg = compose_config(
            [f"experiment={experiment}", *NEEDS.get(experiment, []), *member], output_dir=tmp_path
        )
        assert cfg.name == experiment
        for override in member:
            key, value = override.split("=", 1)
            if key not in GROUPS and not value.startswith(
                "["
            ):  # a group choice is checked by composing it
                assert same(OmegaConf.select(cfg, key), value), (key, value)


def test_the_chapters_comparisons_sweep_what_they_compare() -> None:
    assert sweep_params("activations") == {"model.activation": "leaky_relu,prelu,elu,selu"}
    assert sweep_params("optimizers")["optimizer"].split(",") == [
        "sgd",
        "momentum",
        "nesterov",
        "adagrad",
        "rmsprop",
        "adam",
        "adamax",
        "nadam",
        "adamw",
    ]
    assert sweep_params("schedules")["scheduler"].split(",")[1:] == [
        "power",
        "exponential",
        "piecewise",
        "performance",
        "onecycle",
    ]
    assert sweep_params("batch_norm") == {"model.batch_norm": "none,after,before"}
    assert sweep_params("clipping") == {"clipping": "none,value,norm,clipnorm"}
    cfg = compose_config(["experiment=schedules"], output_dir="/tmp")
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.lr == 0.01
    deep = compose_config(["experiment=deep_selu_vs_relu"], output_dir="/tmp")
    assert len(deep.model.hidden) == 100 and deep.model.init == "auto"
    assert compose_config(["experiment=mc_dropout"], output_dir="/tmp").mc_dropout.samples == 100
