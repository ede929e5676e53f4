"""The debug= presets and callbacks=early_stopping, on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import EarlyStopping

from conftest import tiny_task
from dnnlab.train.run import build_callbacks, run


@pytest.mark.parametrize(
    ("preset", "check"),
    [
        ("fast_dev_run", lambda cfg: cfg.trainer.fast_dev_run is True),
        ("limit", lambda cfg: cfg.trainer.limit_train_batches == 3),
        ("overfit", lambda cfg: cfg.trainer.overfit_batches == 2),
        ("profiler", lambda cfg: cfg.trainer.profiler._target_.endswith("SimpleProfiler")),
    ],
)
def test_debug_presets_compose_and_run(tmp_path: Path, make_config, preset: str, check) -> None:
    tiny = [o for o in tiny_task(tmp_path / "data") if not o.startswith("trainer.limit")]
    cfg = make_config([*tiny, f"debug={preset}"], quick=False)
    assert check(cfg)
    run(cfg)
    out = Path(cfg.paths.output_dir)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["status"] == "ok" and summary["global_step"] > 0
    if preset == "profiler":
        assert "Profiler Report" in (out / "fit-profile.txt").read_text()


def test_early_stopping_stops_a_run_that_stopped_improving(tmp_path: Path, make_config) -> None:
    overrides = [
        *tiny_task(tmp_path / "data"),
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=1",
        "optimizer.lr=1e-12",  # the weights hardly move: val/acc never improves on epoch 1
        "trainer.max_epochs=10",
        "test=true",
    ]
    cfg = make_config(overrides, quick=False)
    assert [type(c) for c in build_callbacks(cfg)].count(EarlyStopping) == 1
    assert cfg.callbacks.model_checkpoint is not None, "the default callbacks stay"
    run(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert summary["epochs"] == 2, "epoch 1 set the best, epoch 2 did not improve: stop"
    assert summary["tested_checkpoint"].endswith("epoch_000.ckpt"), "the best epoch's weights"


def test_early_stopping_is_off_by_default(make_config) -> None:
    assert not any(isinstance(c, EarlyStopping) for c in build_callbacks(make_config()))


def test_mlflow_logger_writes_an_offline_file_store(tmp_path: Path, make_config) -> None:
    pytest.importorskip("mlflow", reason='MLflow is an optional extra: pip install -e ".[mlflow]"')
    cfg = make_config([*tiny_task(tmp_path / "data"), "logger=[tensorboard,mlflow]"], quick=False)
    assert cfg.logger.mlflow.tracking_uri == f"file:{cfg.paths.log_dir}/mlflow"
    run(cfg)
    store = Path(str(cfg.paths.log_dir)) / "mlflow"
    assert list(store.rglob("val/acc")) or list(store.rglob("acc")), "val/acc in the file store"


def test_mlflow_logger_without_mlflow_is_one_line(tmp_path: Path, make_config) -> None:
    import importlib.util

    from dnnlab.errors import ConfigError
    from dnnlab.train.run import build_loggers

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("MLflow is installed")
    cfg = make_config(["logger=mlflow"])
    with pytest.raises(
        ConfigError,
        match=r'^logger.mlflow: .*MLFlowLogger needs mlflow: pip install -e "\.\[mlflow\]"',
    ):
        build_loggers(cfg)
