"""``python train.py`` end to end, as a user runs it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from conftest import QUICK, requires_fashion, train


@pytest.mark.slow
@requires_fashion
def test_train_py_writes_one_run_folder_with_config_events_and_checkpoints(tmp_path: Path) -> None:
    result = train(tmp_path, *QUICK, "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "runs" / "default").iterdir()
    assert (run / ".hydra" / "config.yaml").exists() and (run / "train.log").exists()
    assert list(run.glob("events.out.tfevents.*")) and (run / "checkpoints" / "last.ckpt").exists()
    again = train(tmp_path, *QUICK, "trainer.max_epochs=1", "test=false")
    assert again.returncode == 0
    assert len(list((tmp_path / "logs" / "runs" / "default").iterdir())) == 2, "a new folder"


@pytest.mark.slow
@requires_fashion
def test_multirun_members_sit_side_by_side(tmp_path: Path) -> None:
    result = train(tmp_path, "-m", *QUICK, "trainer.max_epochs=1", "model.activation=relu,elu")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "multiruns" / "default").iterdir()
    members = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert [p.name for p in members] == ["0_model.activation=relu", "1_model.activation=elu"]
    assert "model.activation=relu" in (members[0] / ".hydra" / "overrides.yaml").read_text()
    assert all(list(p.glob("events.out.tfevents.*")) for p in members)


@pytest.mark.slow
def test_missing_data_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = train(tmp_path, "data.search_dirs=[]", "data.download=false", "data=mnist")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "MNIST not found" in lines[0] and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer=adam", "optimizer.lr=-0.001"],
            "error: optimizer.lr=-0.001 is out of range; expected a learning rate > 0",
        ),
        (
            ["scheduler=piecewise", "scheduler.schedule.boundaries=[15,5]"],
            "error: scheduler.schedule.boundaries=[15, 5] must be strictly increasing",
        ),
    ],
)
@requires_fashion
def test_bad_optimizer_and_schedule_values_are_one_line(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    result = train(tmp_path, *QUICK, *overrides)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [message]


@pytest.mark.slow
@requires_fashion
def test_lr_find_prints_the_command_that_trains_with_its_suggestion(tmp_path: Path) -> None:
    finder = ["tune.lr_find=true", "tune.num_steps=150"]
    result = train(tmp_path, *QUICK, "optimizer=nadam", "model.hidden=[50]", *finder)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("train with it: ")]
    command = shlex.split(line.removeprefix("train with it: "))  # as the shell reads it
    assert command[:2] == ["python", "train.py"] and "optimizer=nadam" in command
    assert "model.hidden=[50]" in command and not any(c.startswith("tune.") for c in command)
    assert command[-1].startswith("optimizer.lr=")
    assert 1e-5 <= float(command[-1].split("=")[1]) <= 10
    (run,) = (tmp_path / "logs" / "runs" / "default").iterdir()
    assert (run / "lr_find.png").exists()
