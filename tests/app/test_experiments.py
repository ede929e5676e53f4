"""Every study of the chapter is an experiment config; comparisons carry their own sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import QUICK, call_script, load_script, tiny_data
from dnnlab.app.compose import CONFIG_DIR, compose_config, group_options

EXPERIMENTS = group_options("experiment")  # subfolders too: book/dropout
BOOK = [e for e in EXPERIMENTS if e.startswith("book/")]
GROUPS = {"optimizer", "scheduler", "clipping", "regularization"}
NEEDS = {
    "transfer_b_on_a": ["transfer.ckpt_path=x.ckpt"],
    "book/transfer_b_on_a": ["transfer.ckpt_path=x.ckpt"],
}


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
        assert cfg.name == experiment.replace("/", "_")
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


def test_the_book_studies_are_found_in_their_subfolder() -> None:
    assert {"book/dropout", "book/optimizers", "book/schedule_onecycle"} <= set(BOOK)
    assert "book/_base" not in EXPERIMENTS  # a shared part, not a study


@pytest.mark.parametrize("experiment", BOOK)
def test_book_studies_use_keras_defaults_and_test_the_final_weights(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}", *NEEDS.get(experiment, [])], output_dir="/t")
    assert cfg.parity.adam_eps == 1e-7 and cfg.parity.bn_momentum == 0.01  # parity=keras
    assert cfg.callbacks.model_checkpoint.monitor is None
    assert (cfg.data.val_size, cfg.data.val_split) == (5000, "last")


def test_book_studies_hold_the_notebooks_settings() -> None:
    def cfg(name: str, *over: str):
        return compose_config([f"experiment=book/{name}", *over], output_dir="/t")

    dropout = cfg("dropout")
    assert (dropout.optimizer.lr, dropout.optimizer.momentum) == (0.01, 0.9)
    assert list(dropout.model.hidden) == [100, 100] and dropout.model.activation == "relu"
    assert (dropout.model.dropout, dropout.trainer.max_epochs) == (0.2, 10)
    assert cfg("mc_dropout").mc_dropout.samples == 100
    deep = cfg("selu_100_layers")
    assert len(deep.model.hidden) == 100 and deep.data.standardize and deep.optimizer.lr == 1e-3
    assert cfg("relu_100_layers").model.init == "he_normal"
    before = cfg("batch_norm_before")
    assert before.model.batch_norm == "before" and not before.model.input_batch_norm
    assert cfg("batch_norm_after").optimizer.lr == 0.01  # Keras' optimizer="sgd"
    onecycle = cfg("schedule_onecycle")
    assert onecycle.data.batch_size == 128 and onecycle.scheduler.schedule.max_lr == 0.1
    assert onecycle.scheduler.schedule.cycle_momentum is False
    assert list(cfg("schedule_piecewise").scheduler.schedule.boundaries) == [50000, 80000]
    assert cfg("schedule_power").scheduler.interval == "step"
    adagrad = cfg("optimizers", "optimizer=adagrad")
    assert adagrad.optimizer.initial_accumulator_value == 0.1  # Keras' Adagrad
    b_on_a = cfg("transfer_b_on_a", "transfer.ckpt_path=a.ckpt")
    assert list(b_on_a.data.classes) == [0, 2] and b_on_a.data.train_size == 200
    assert b_on_a.transfer.freeze_epochs == 4 and b_on_a.trainer.max_epochs == 20


@pytest.mark.slow
def test_a_book_study_runs_end_to_end(tmp_path: Path, monkeypatch) -> None:
    """book/mc_dropout on a tiny IDX set: fit, test of the final weights, MC dropout passes."""
    script = load_script("train.py")
    overrides = [
        "experiment=book/mc_dropout",
        *tiny_data(tmp_path),
        *QUICK,
        "trainer.limit_train_batches=32",
        "mc_dropout.samples=3",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    assert call_script(script, overrides, monkeypatch, tmp_path) == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"val/acc", "test/acc", "mc/acc"} <= set(summary["metrics"])
    assert summary["epochs"] == 2
    assert summary["tested_checkpoint"].endswith("epoch_001.ckpt")  # the last epoch, not a best
