"""Sweep reports from a tiny real multirun."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import QUICK, requires_fashion, run_script
from dnnlab.app.cli import FAILED_FILE
from dnnlab.app.compose import CONFIG_DIR
from dnnlab.evaluate.report import load_members, write_report
from dnnlab.train.run import run, write_summary


@pytest.mark.slow
@requires_fashion
def test_multirun_writes_a_report_and_keeps_failed_members(tmp_path: Path) -> None:
    sweep_args = [
        *QUICK,
        "trainer.max_epochs=2",
        "test=false",
        "model.activation=relu,elu",
        "seed=1,2",
    ]
    result = run_script(tmp_path, "train.py", "-m", *sweep_args)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "multiruns" / "default").iterdir()
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [r["model.activation"] for r in rows] == ["relu", "elu"], "seeds pooled"
    assert set(rows[0]) >= {"val_acc_best", "val_acc", "val_loss", "epochs", "wall_time_s"}
    assert "seed" not in rows[0] and "trainer.max_epochs" not in rows[0], "only varied keys"
    assert rows[0]["runs"] == "2" and "±" in rows[0]["val_acc_best"]
    assert float(rows[0]["val_acc_best"].split(" ± ")[0]) > 0.3  # chance: 0.1
    assert (sweep / "val_curves.png").stat().st_size > 10_000
    # A member that died (no metrics.json) is reported as failed; the others keep their rows.
    (dead,) = sweep.glob("1_*")
    assert dead.name == "1_model.activation=relu,seed=2", "named by the swept setting"
    (dead / "metrics.json").unlink()
    (dead / FAILED_FILE).write_text("loss became NaN at step 12\n")
    write_report(sweep)
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert rows[0]["runs"] == "1" and f"failed: {dead.name}: loss became NaN" in rows[0]["status"]
    assert rows[1]["status"] == "ok" and rows[1]["runs"] == "2"
    assert "4 runs, 1 failed" in (sweep / "report.md").read_text()


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ],
)
def test_parallel_and_slurm_launchers_compose(launcher: str, target: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target


@pytest.mark.slow
@requires_fashion
def test_optuna_search_runs_trials_and_maximizes(tmp_path: Path) -> None:
    quick = [o for o in QUICK if not o.startswith("optimizer.lr")]  # the search sets lr
    args = [
        *quick,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "test=false",
        "trainer.limit_train_batches=32",
    ]
    result = run_script(tmp_path, "train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "multiruns" / "optuna").iterdir()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and 0.1 < best["best_value"] <= 1.0
    assert {"optimizer.lr", "data.batch_size", "model.activation"} == set(best["best_params"])


def test_report_reads_what_training_writes_and_why_the_others_failed(tmp_path: Path) -> None:
    """A finished run has training's metrics.json; any other folder is failed, with its reason."""
    for name in "0123":
        (tmp_path / name / ".hydra").mkdir(parents=True)
        overrides = [f"model.activation={name}"]
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "0")}})
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=3, global_step=30, loggers=[])
    write_summary(cfg, trainer, {"val/acc_best": 0.8, "test/acc": 0.75}, 12.0)
    (tmp_path / "1" / FAILED_FILE).write_text("loss became NaN at step 12\n")
    (tmp_path / "2" / "train.log").write_text("[t][dnnlab][ERROR] - out of memory\n")
    done, diverged, crashed, killed = load_members(tmp_path)
    assert done.ok and not done.error
    assert done.values == {"val_acc_best": 0.8, "test_acc": 0.75, "epochs": 3, "wall_time_s": 12.0}
    assert not diverged.ok and diverged.error == "loss became NaN at step 12"
    assert not crashed.ok and crashed.error == "out of memory"
    assert not killed.ok and killed.error == "no metrics.json: the run did not finish"


@pytest.mark.slow
@requires_fashion
def test_vanishing_report_takes_the_final_metrics_from_metrics_json(
    make_config, tmp_path: Path
) -> None:
    cfg = make_config(run="sweep/0")
    run(cfg)
    member = Path(cfg.paths.output_dir)
    (member / ".hydra").mkdir()
    (member / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    for events in member.glob("events.out.tfevents.*"):
        events.unlink()  # the final metrics must not come from TensorBoard
    result = run_script(tmp_path, "scripts/vanishing_report.py", str(member.parent))
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((member / "metrics.json").read_text())["metrics"]
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| 2 |")]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    expected = [final["train/acc"], final["val/acc_best"], final["test/acc"]]
    assert cells[2:5] == [f"{value:.3f}" for value in expected]
