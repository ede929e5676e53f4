"""What a run prints and leaves behind: fast --help, the closing lines, no library noise, the
epoch lines in train.log, no folder for a refused command line, environment.json."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import QUICK, ROOT, call_script, load_script, tiny_data, tiny_task
from dnnlab.app.compose import compose_config
from dnnlab.app.environment import ENVIRONMENT_FILE, environment, git_state
from dnnlab.callbacks.diagnostics.callback import VERDICT_FILE
from dnnlab.callbacks.summary import summary_table
from dnnlab.console import end_of_run, epoch_line, metric_lines
from dnnlab.evaluate.evaluation import mc_dropout_proba
from dnnlab.train.module import Classifier
from dnnlab.train.resume import latest_checkpoint
from dnnlab.train.run import plain

train_script = load_script("train.py")
eval_script = load_script("eval.py")

NOISE = (
    "Trainer already configured",
    "💡 Tip",
    "litlogger",
    "litmodels",
    "GPU available",
    "TPU available",
    "HPU available",
    "Total Flops",
    "FLOPs",
    "Loaded model weights",
    "LeafSpec",
)


# ------------------------------------------------------------------------------ --help is fast
@pytest.mark.parametrize("script", ["train.py", "eval.py"])
@pytest.mark.parametrize("flag", ["--help", "--cfg=job", "--info"])
def test_help_cfg_and_info_import_neither_torch_nor_lightning(script: str, flag: str) -> None:
    """-X importtime lists every module imported: none of torch, Lightning, torchmetrics."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = [sys.executable, "-X", "importtime", str(ROOT / script), *flag.split("=")]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "lightning", "torchmetrics")}
    assert not heavy, sorted(heavy)[:5]


# ------------------------------------------------------------------------------ setup.sh
def test_setup_sh_says_each_step_and_the_next_command(tmp_path: Path) -> None:
    """With a stand-in interpreter (pip does nothing), every step is one line, then the command."""
    calls = tmp_path / "calls"
    stub = tmp_path / "python"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {calls}\n'
        'if [ "$1" = -m ]; then exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    stub.chmod(0o755)
    env = {**os.environ, "PYTHON": str(stub)}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith(("setup: ", "next: ")) for line in lines), lines
    assert any("Fashion-MNIST" in line for line in lines)
    assert any("dnnlab and its dev tools" in line for line in lines)
    assert lines[-2].startswith("setup: done: torch ")
    assert lines[-1].startswith(f"next: {stub} train.py experiment=smoke")
    assert "-m pip install -q -e .[dev]" in calls.read_text()


# ------------------------------------------------------------------------------ closing lines
def test_end_of_run_names_folder_metrics_and_verdict(tmp_path: Path) -> None:
    verdict = {"verdict": ["vanishing gradients: layer 1's gradient is 0.001x the last layer's"]}
    (tmp_path / VERDICT_FILE).write_text(json.dumps(verdict))
    metrics = {"val/acc": 0.85751, "train/loss_epoch": 0.4, "test/acc": 0.862, "lr": 1e-5}
    text = end_of_run(tmp_path, metrics, epochs=2, steps=300, seconds=75.0)
    assert text.splitlines() == [
        "run finished (2 epochs, 300 optimizer steps, 1 min 15 s)",
        f"  run folder: {tmp_path}",
        "  train/loss_epoch=0.4000",
        "  val/acc=0.8575",
        "  test/acc=0.8620",
        "  lr=1e-05",
        "  gradient diagnostics: " + verdict["verdict"][0],
    ]
    failed = end_of_run(tmp_path / "missing", failed=True).splitlines()
    assert failed[0].startswith("run failed") and failed[1].endswith("missing")


def test_epoch_line_and_metric_lines() -> None:
    line = epoch_line(3, 10, {"train/acc": torch.tensor(0.5), "val/loss": 1.25}, 2.0)
    assert line == "epoch 3/10: train/acc=0.5000 val/loss=1.2500 (2.0 s)"
    assert metric_lines({}) == []


def train(args: list[str], monkeypatch, tmp_path: Path, capsys) -> tuple[int, str, str]:
    """``python train.py args`` in this process: exit code, stdout and stderr."""
    code = call_script(train_script, args, monkeypatch, tmp_path)
    out, err = capsys.readouterr()
    return code, out, err


def quiet_run(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *tiny_task(tmp_path / "data"),
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=true",
        *extra,
    ]


@pytest.mark.slow
def test_a_short_run_prints_its_epochs_and_closing_lines_and_no_noise(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """test=false and no progress bar printed nothing at all; Lightning printed its tips, the
    device probe and a FLOPs table beside our summary."""
    code, out, err = train(quiet_run(tmp_path, "name=quiet"), monkeypatch, tmp_path, capsys)
    assert code == 0, err[-2000:]
    (run,) = (tmp_path / "logs" / "runs" / "quiet").iterdir()
    assert [n for n in NOISE if n in out + err] == []
    assert "model summary:" in out and "Total params: " in out
    assert re.search(r"epoch 1/2: train/loss_epoch=\S+ train/acc=\S+ val/loss=\S+ val/acc=\S+", out)
    assert "run finished (2 epochs, 8 optimizer steps" in out
    assert f"  run folder: {run}" in out and "val/acc_best=" in out
    log_text = (run / "train.log").read_text()
    assert "epoch 2/2: train/loss_epoch=" in log_text and f"run folder: {run}" in log_text
    assert err == ""


@pytest.mark.slow
def test_epoch_lines_stay_in_train_log_under_a_progress_bar(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    args = quiet_run(tmp_path, "name=bar", "trainer.enable_progress_bar=true")
    code, out, _ = train(args, monkeypatch, tmp_path, capsys)
    assert code == 0
    (run,) = (tmp_path / "logs" / "runs" / "bar").iterdir()
    assert "epoch 1/2:" not in out and "epoch 1/2:" in (run / "train.log").read_text()


def test_a_failed_run_prints_its_error_once_and_its_folder(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A data error (found in the job): one error line on stderr, the folder on stdout."""
    args = [*QUICK, *tiny_data(tmp_path), "data.val_size=5000", "name=broken"]
    code, out, err = train(args, monkeypatch, tmp_path, capsys)
    assert code == 2
    (run,) = (tmp_path / "logs" / "runs" / "broken").iterdir()
    assert err.count("leaves no training images") == 1 and err.startswith("error: ")
    assert "leaves no training images" not in out
    assert "run failed" in out and f"run folder: {run}" in out
    assert "leaves no training images" in (run / "train.log").read_text()


# ------------------------------------------------------------------------------ model summary
def test_parameter_table_collapses_the_100_layer_net() -> None:
    cfg = compose_config(["experiment=selu_100_layers"])
    table = summary_table(Classifier(plain(cfg.model), plain(cfg.optimizer))).splitlines()
    assert len(table) <= 8, table
    assert any("x99" in line and "999,900" in line and "(10,100 each)" in line for line in table)
    assert table[-1].startswith("Total params: 1,079,410 | Trainable params: 1,079,410")


def test_parameter_table_counts_batch_norm_statistics_as_keras() -> None:
    cfg = compose_config(["model.batch_norm=before", "model.hidden=[300,100]"])
    model = Classifier(plain(cfg.model), plain(cfg.optimizer))
    table = summary_table(model)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    moving = sum(2 * m.num_features for m in bn)
    assert bn and f"Non-trainable params: {moving:,}" in table


# ------------------------------------------------------------------------------ MC dropout
def test_mc_dropout_passes_report_their_progress(caplog) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 3))
    with caplog.at_level(logging.INFO, logger="dnnlab.evaluate.evaluation"):
        mc_dropout_proba(model, torch.ones(5, 4), samples=20)
    lines = [r.getMessage() for r in caplog.records if r.name == "dnnlab.evaluate.evaluation"]
    assert len(lines) == 10 and lines[0].startswith("MC dropout: 2/20 passes over 5 images")
    assert lines[-1].startswith("MC dropout: 20/20 passes")


# ------------------------------------------------------------------------------ fast_dev_run
@pytest.mark.slow
def test_fast_dev_run_leaves_no_checkpoint_for_ckpt_path_last(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    real = quiet_run(tmp_path, "name=resumable", "callbacks.step_checkpoint=null")
    assert train(real, monkeypatch, tmp_path, capsys)[0] == 0
    assert train([*real, "+trainer.fast_dev_run=true"], monkeypatch, tmp_path, capsys)[0] == 0
    runs = tmp_path / "logs" / "runs" / "resumable"
    first, second = sorted(runs.iterdir())
    assert not (second / "checkpoints" / "last.ckpt").exists()
    assert latest_checkpoint(runs) == first / "checkpoints" / "last.ckpt"


def test_ckpt_path_last_skips_a_fast_dev_run_folder_of_an_older_version(tmp_path: Path) -> None:
    for name, fast in (
        ("2026-01-01_00-00-00_000000", "false"),
        ("2026-01-02_00-00-00_000000", "true"),
    ):
        folder = tmp_path / name
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(f"trainer:\n  fast_dev_run: {fast}\n")
    assert (
        latest_checkpoint(tmp_path)
        == tmp_path / "2026-01-01_00-00-00_000000" / "checkpoints" / "last.ckpt"
    )


# ------------------------------------------------------------------------------ refused early
@pytest.mark.parametrize(
    ("script", "args", "folder"),
    [
        (train_script, ["optimizer.lr=-1"], "runs"),
        (train_script, ["model.hidden=3"], "runs"),
        (train_script, ["~optimizer"], "runs"),
        (eval_script, ["ckpt_path=x.ckpt", "mc_dropout.samples=-1"], "evals"),
        (train_script, ["ckpt_path=nowhere.ckpt"], "runs"),
        (eval_script, ["ckpt_path=nowhere.ckpt"], "evals"),
        (eval_script, [], "evals"),  # no ckpt_path at all
    ],
)
def test_a_refused_command_line_leaves_no_run_folder(
    script, args: list[str], folder: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    assert call_script(script, args, monkeypatch, tmp_path) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert out == "" and "Warning" not in err
    assert not (tmp_path / "logs" / folder).exists()


# ------------------------------------------------------------------------------ environment
def test_environment_names_versions_device_threads_and_commit() -> None:
    env = environment()
    for key in ("python", "torch", "lightning", "hydra", "cpu", "torch_threads", "hostname"):
        assert env[key], key
    assert env["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert {"OMP_NUM_THREADS", "cuda_version", "cudnn_version", "gpus"} <= env.keys()
    assert set(env["git"]) >= {"commit", "dirty"}


def test_environment_says_when_git_is_missing(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    assert git_state() == {"commit": None, "dirty": None, "note": "git not found"}


def test_environment_json_is_in_the_run_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    args = [*QUICK, *tiny_data(tmp_path), "data.val_size=5000", "name=env"]  # fails in the job
    assert train(args, monkeypatch, tmp_path, capsys)[0] == 2
    (run,) = (tmp_path / "logs" / "runs" / "env").iterdir()
    recorded = json.loads((run / ENVIRONMENT_FILE).read_text())
    assert recorded["torch"] == torch.__version__ and "commit" in recorded["git"]
