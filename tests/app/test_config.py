"""Every config file composes, and the objects it names can be built."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dnnlab.app.checks import check_ranges
from dnnlab.app.compose import CONFIG_DIR, compose_config
from dnnlab.train.run import build_callbacks, build_loggers

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONFIG_DIR / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.paths.output_dir == str(tmp_path)
    check_ranges(cfg)  # every shipped value is in its range
    build_callbacks(cfg)
    if (group, option) != ("logger", "mlflow") or importlib.util.find_spec("mlflow"):
        # an optional extra's logger: tests/train/test_debug_and_early_stopping.py
        build_loggers(cfg)
    instantiate(cfg.data)
    if cfg.trainer.accelerator != "gpu" or torch.cuda.is_available():
        instantiate(cfg.trainer)


def test_default_is_the_books_leaky_relu_mlp(tmp_path: Path) -> None:
    cfg = compose_config(output_dir=tmp_path)
    assert list(cfg.model.hidden) == [300, 100]
    assert cfg.model.activation == "leaky_relu" and cfg.model.init == "he_normal"
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 1e-3
    assert cfg.data.batch_size == 32 and cfg.data.val_size == 5000


def test_hydra_config_groups_present() -> None:
    expected = {"data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger"}
    assert expected | {"experiment", "hydra", "paths"} <= {p.name for p in CONFIG_DIR.iterdir()}


def test_an_empty_dnnlab_root_is_the_folder_you_run_from(monkeypatch) -> None:
    """DNNLAB_ROOT= (set, but empty) put data/ and logs/ at the file system's root (/logs)."""
    monkeypatch.setenv("DNNLAB_ROOT", "")
    assert compose_config([]).paths.log_dir == "./logs"
    monkeypatch.setenv("DNNLAB_ROOT", "/somewhere")
    assert compose_config([]).paths.log_dir == "/somewhere/logs"
