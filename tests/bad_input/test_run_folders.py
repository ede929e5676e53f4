"""Run folders: never written over, kept under the log folder, and disk faults in one line.

Each run is ``python train.py ...`` in this process (``call_train``) on tiny synthetic data.
Faults are simulated (we run as root, so permissions do not stop a write): a regular file where a
folder must be, or a writer made to raise the ``OSError`` a full or read-only disk raises.
"""

from __future__ import annotations

import csv
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from tensorboard.compat.tensorflow_stub.io import gfile

from conftest import call_train, member_folder, run_script, write_idx_dataset
from dnnlab.app import cli
from dnnlab.app.compose import CONFIG_DIR

ELSEWHERE = r"write elsewhere with paths\.log_dir=<folder> \(or DNNLAB_ROOT=<folder>\)"
CRASH = ["+callbacks.crash._target_=killer.RaiseAtFitStart", "+callbacks.crash.fail=true,false"]


def tiny(tmp_path: Path) -> list[str]:
    """Overrides for a run of a few steps on 60 random images (no real data set needed)."""
    folder = write_idx_dataset(tmp_path / "data")
    return [
        *("data=mnist", f"data.root={folder}", "data.search_dirs=[]", "data.verify=false"),
        *("data.download=false", "data.val_size=10", "data.batch_size=10"),
        *("data.steps_per_block=1", "model.hidden=[8]", "callbacks.gradient_diagnostics=null"),
        *("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"),
        *("trainer.limit_test_batches=1", "trainer.enable_progress_bar=false"),
        "trainer.enable_model_summary=false",
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def error_line(err: str) -> str:
    """The one ``error:`` line on stderr, with no traceback beside it."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def the_run(tmp_path: Path) -> Path:
    (run,) = (tmp_path / "logs" / "runs" / "default").iterdir()
    return run


def test_a_pinned_run_folder_is_refused_and_left_as_it_was(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    pinned = tmp_path / "pinned"
    args = [*tiny(tmp_path), f"hydra.run.dir={pinned}"]
    assert call_train(args, monkeypatch, tmp_path) == 0
    before = snapshot(pinned)
    assert {"metrics.json", "checkpoints/last.ckpt", ".hydra/config.yaml", "train.log"} <= set(
        before
    )
    capsys.readouterr()
    code = call_train([*args, "seed=7"], monkeypatch, tmp_path)
    line = error_line(capsys.readouterr().err)
    assert code == 2
    last = pinned / "checkpoints" / "last.ckpt"
    assert re.fullmatch(
        rf"error: hydra\.run\.dir={pinned} already holds files \(\.hydra, checkpoints, "
        r"environment\.json, events\.out\.tfevents\.\*, \.\.\.\); a run never writes over another: "
        r"give a new hydra\.run\.dir \(or drop it for a new time-stamped folder\); "
        rf"to continue that run: ckpt_path={last} with a new folder",
        line,
    ), line
    assert snapshot(pinned) == before, "not one byte of the first run changed"


def test_an_output_dir_holding_a_run_is_refused_and_not_marked(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.json").write_text('{"status": "ok"}\n')
    code = call_train([*tiny(tmp_path), f"paths.output_dir={done}"], monkeypatch, tmp_path)
    line = error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"error: paths.output_dir={done} already holds files")
    assert snapshot(done) == {"metrics.json": b'{"status": "ok"}\n'}, "no FAILED file either"


def test_a_sweep_folder_used_twice_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("earlier: sweep\n")
    before = snapshot(sweep)
    code = call_train(
        ["-m", *tiny(tmp_path), f"hydra.sweep.dir={sweep}", "seed=1,2"], monkeypatch, tmp_path
    )
    line = error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"error: hydra.sweep.dir={sweep} already holds files")
    assert snapshot(sweep) == before and sorted(p.name for p in sweep.iterdir()) == [
        "0",
        "multirun.yaml",
    ]


@pytest.mark.parametrize("subdir", ["same", "${hydra.job.name}"])
def test_sweep_members_sharing_one_folder_are_refused(
    subdir: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """``${hydra.job.name}`` is the same for every member: the second rewrote the first's
    saved config beside the first's checkpoints before it was refused."""
    args = ["-m", *tiny(tmp_path), f"hydra.sweep.subdir={subdir}", "seed=1,2"]
    assert call_train(args, monkeypatch, tmp_path) == 2
    line = error_line(capsys.readouterr().err)
    assert f"hydra.sweep.subdir={subdir!r} names the same folder for every member" in line
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "/tmp/x"])
def test_name_is_one_plain_folder_name(name: str, tmp_path: Path, monkeypatch, capsys) -> None:
    for sweep in ([], ["-m", "seed=1,2"]):
        code = call_train([*sweep, *tiny(tmp_path), f"name={name}"], monkeypatch, tmp_path)
        line = error_line(capsys.readouterr().err)
        assert code == 2
        assert line == (
            f"error: name={name!r} is not a plain folder name; use letters, digits, '_', '-' "
            "and '.' (not first), e.g. name=my_run"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no folder made anywhere"


def crash_sweep_checks(sweep: Path, err: str) -> None:
    """Member 0 crashed (a bug), member 1 trained; the report lists both."""
    crashed, done = member_folder(sweep, 0), member_folder(sweep, 1)
    reason = "RuntimeError: boom: a bug in a callback (a bug: traceback in train.log)"
    assert (crashed / cli.FAILED_FILE).read_text().splitlines()[0] == reason
    assert "Traceback" in (crashed / "train.log").read_text() and "Traceback" in err
    assert f"error: {crashed}: {reason}" in err
    assert (done / "metrics.json").exists() and not (done / cli.FAILED_FILE).exists()
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [r["callbacks.crash.fail"] for r in rows] == ["True", "False"]
    assert [r["status"] for r in rows] == [f"failed: {crashed.name}: {reason}", "ok"]
    assert "2 runs, 1 failed" in (sweep / "report.md").read_text()
    assert (sweep / "val_curves.png").stat().st_size > 0


def test_a_crashing_sweep_member_is_listed_and_the_others_run(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    code = call_train(["-m", *tiny(tmp_path), *CRASH], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]
    (sweep,) = (tmp_path / "logs" / "multiruns" / "default").iterdir()
    crash_sweep_checks(sweep, err)


@pytest.mark.slow
def test_a_crashing_member_of_a_parallel_sweep_is_listed_too(tmp_path: Path) -> None:
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *tiny(tmp_path), *CRASH]
    result = run_script(tmp_path, "train.py", *args)
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "multiruns" / "default").iterdir()
    crash_sweep_checks(sweep, result.stderr)


def test_a_bug_in_a_single_run_keeps_its_traceback_and_marks_the_folder(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    crash = ["+callbacks.crash._target_=killer.RaiseAtFitStart", "+callbacks.crash.fail=true"]
    with pytest.raises(RuntimeError, match="boom"):
        call_train([*tiny(tmp_path), *crash], monkeypatch, tmp_path)
    run = the_run(tmp_path)
    assert (run / cli.FAILED_FILE).read_text().startswith("RuntimeError: boom")
    assert "Traceback" in (run / "train.log").read_text()


@pytest.mark.parametrize("sweep", [[], ["-m", "seed=1,2"]], ids=["run", "sweep"])
def test_a_log_folder_under_a_file_is_one_line(
    sweep: list[str], tmp_path: Path, monkeypatch, capsys
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    args = [*sweep, *tiny(tmp_path), f"paths.log_dir={blocker}/logs"]
    assert call_train(args, monkeypatch, tmp_path) == 2
    line = error_line(capsys.readouterr().err)
    assert re.fullmatch(
        rf"error: cannot write {blocker}/logs/\S+: Not a directory; "
        rf"move the file that stands in that path, or {ELSEWHERE}",
        line,
    ), line
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize(
    ("code", "remedy"),
    [
        (errno.ENOSPC, "free space on that disk, or "),
        (errno.EROFS, ""),
        (errno.EACCES, "get write permission there, or "),
    ],
    ids=["ENOSPC", "EROFS", "EACCES"],
)
def test_a_run_folder_that_cannot_be_made_is_one_line(
    code: int, remedy: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    logs = tmp_path / "logs"
    mkdir = Path.mkdir

    def failing_mkdir(self: Path, *args, **kwargs) -> None:
        if self.is_relative_to(logs):
            raise OSError(code, os.strerror(code), str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", failing_mkdir)
    assert call_train(tiny(tmp_path), monkeypatch, tmp_path) == 2
    line = error_line(capsys.readouterr().err)
    reason = re.escape(os.strerror(code))
    assert re.fullmatch(
        rf"error: cannot write {logs}/runs/default/\S+: {reason}; {remedy}{ELSEWHERE}", line
    )
    assert not logs.exists()


def fail_fsync(monkeypatch, marker: str, after: int = 0) -> None:
    """``os.fsync`` raises ENOSPC for a file whose name holds ``marker``, after ``after`` calls."""
    fsync, calls = os.fsync, []

    def full(fd: int) -> None:
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            calls.append(fd)
            if len(calls) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)


def test_a_full_disk_at_metrics_json_is_one_line_and_no_half_file(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    fail_fsync(monkeypatch, ".metrics.json.")
    assert call_train(tiny(tmp_path), monkeypatch, tmp_path) == 2
    line, run = error_line(capsys.readouterr().err), the_run(tmp_path)
    assert line == (
        f"error: cannot write {run}/metrics.json: No space left on device; "
        "free space on that disk, or write elsewhere with paths.log_dir=<folder> "
        "(or DNNLAB_ROOT=<folder>)"
    )
    assert not list(run.glob("*metrics.json*")), "neither metrics.json nor its temporary file"
    assert (run / cli.FAILED_FILE).read_text().startswith("cannot write")


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    fail_fsync(monkeypatch, ".last.ckpt.", after=1)  # epoch 0 saves it, epoch 1 cannot
    code = call_train([*tiny(tmp_path), "trainer.max_epochs=2"], monkeypatch, tmp_path)
    line, run = error_line(capsys.readouterr().err), the_run(tmp_path)
    assert code == 2
    assert line.startswith(f"error: cannot write {run}/checkpoints/last.ckpt: No space left")
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and not list(run.rglob("*.tmp"))
    assert not (run / "metrics.json").exists()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_full_disk_under_tensorboard_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    write = gfile.LocalFileSystem._write

    def full(self, filename: str, content, mode: str) -> None:
        if b"tfevents" in os.fsencode(filename):  # its file names are bytes, as open() gives back
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        write(self, filename, content, mode)

    monkeypatch.setattr(gfile.LocalFileSystem, "_write", full)
    assert call_train(tiny(tmp_path), monkeypatch, tmp_path) == 2
    line, run = error_line(capsys.readouterr().err), the_run(tmp_path)
    assert re.fullmatch(
        rf"error: cannot write {run}/events\.out\.tfevents\.\S+: No space left on device; "
        rf"free space on that disk, or {ELSEWHERE}",
        line,
    ), line


@pytest.fixture
def optuna_quiet() -> Iterator[None]:
    """Without Optuna's own stderr handler: it keeps the stream of the test that imported Optuna
    (pytest closes it after that test)."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.disable_default_handler()
    yield
    optuna.logging.enable_default_handler()


@pytest.mark.usefixtures("optuna_quiet")
def test_the_optuna_example_searches_lists_of_hidden_sizes(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The overrides quoted in conf/hparams_search/optuna.yaml's comment run as they are."""
    comment = (CONFIG_DIR / "hparams_search" / "optuna.yaml").read_text().split("defaults:")[0]
    examples = re.findall(r"'([^']+)'", comment)
    assert any(e.startswith("model.hidden=choice([") for e in examples), comment
    quick = [o for o in tiny(tmp_path) if not o.startswith("model.hidden=")]
    args = [*quick, "hparams_search=optuna", "hydra.sweeper.n_trials=2", *examples]
    code = call_train(args, monkeypatch, tmp_path)
    assert code == 0, capsys.readouterr().err[-3000:]
    (sweep,) = (tmp_path / "logs" / "multiruns" / "optuna").iterdir()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert {"optimizer.lr", "model.hidden"} <= set(best["best_params"])
    for member in (0, 1):
        trained = OmegaConf.load(member_folder(sweep, member) / ".hydra" / "config.yaml")
        assert list(trained.model.hidden) in ([300, 100], [100, 100, 100]), "a list, not text"


@pytest.mark.usefixtures("optuna_quiet")
def test_a_search_whose_every_trial_failed_ends_in_one_line_with_its_report(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    args = [*tiny(tmp_path), "hparams_search=optuna", "hydra.sweeper.n_trials=2", "optimizer.lr=-1"]
    assert call_train(args, monkeypatch, tmp_path) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: the sweep stopped after its failed members: ValueError: No trials" in err
    (sweep,) = (tmp_path / "logs" / "multiruns" / "optuna").iterdir()
    assert "2 runs, 2 failed" in (sweep / "report.md").read_text()
