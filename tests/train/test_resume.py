"""Reproducible and resumable: same seed, same numbers; a killed run resumes to the same end."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback, Checkpoint

from conftest import QUICK, ROOT, requires_fashion, tiny_task, write_idx_dataset
from dnnlab.app.compose import compose_config
from dnnlab.callbacks.diagnostics.callback import VERDICT_FILE
from dnnlab.data import IdxDataModule
from dnnlab.errors import ConfigError
from dnnlab.train.checkpointing import HOST, AtomicCheckpointIO
from dnnlab.train.resume import SETTINGS, resolve_ckpt_path
from dnnlab.train.run import run

# Two epochs of 10 blocks of 16 steps; last.ckpt at the block end reaching each multiple of 32.
RESUMABLE = [*QUICK, "callbacks.step_checkpoint.every_n_train_steps=32"]
FINAL = ["val/acc", "val/loss", "val/acc_best", "train/loss_epoch", "train/acc"]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


def test_loader_resumes_with_the_next_block_of_the_same_order(tmp_path: Path) -> None:
    folder = write_idx_dataset(tmp_path / "tiny", n_train=110, n_test=10)
    dm = IdxDataModule(name="mnist", root=str(folder), download=False, verify=False, val_size=10)
    dm.batch_size, dm.steps_per_block = 8, 3  # 100 images: 13 batches in 5 blocks
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(4)
    whole = [torch.cat([y for _, y in block]) for block in loader]
    blocks = iter(loader)
    next(blocks), next(blocks)  # two blocks trained on, then the process dies
    state = loader.state_dict()
    assert state["epoch"] == 4 and state["handed_out"] == 2
    fresh = dm.train_dataloader()  # a new process: epoch 0, nothing handed out
    fresh.load_state_dict(state)
    rest = [torch.cat([y for _, y in block]) for block in fresh]
    assert len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(rest, whole[2:], strict=True))
    assert len(list(fresh)) == 5, "the next pass starts the epoch from its first block"
    other = dm.train_dataloader()
    other.batch_size = 16
    with pytest.raises(
        ConfigError, match=r"data.batch_size: 8 -> 16; resume with the checkpoint's"
    ):
        other.load_state_dict(state)


def test_ckpt_path_last_is_the_newest_run_with_a_last_checkpoint(tmp_path: Path) -> None:
    runs = tmp_path / "logs" / "runs" / "default"
    for name, has_last in [("2026-01-01_10-00-00_000001", True), ("2026-01-02_10-00-00_0", True)]:
        (runs / name / "checkpoints").mkdir(parents=True)
        if has_last:
            (runs / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (runs / "2026-01-03_10-00-00_000000").mkdir()  # a newer run that never saved
    cfg = compose_config(
        ["ckpt_path=last", f"paths.log_dir={tmp_path / 'logs'}"],
        output_dir=runs / "2026-01-04_00-00-00_000000",
    )
    assert resolve_ckpt_path(cfg) == str(runs / "2026-01-02_10-00-00_0" / "checkpoints/last.ckpt")
    cfg.name = "other"
    with pytest.raises(ConfigError, match=r"ckpt_path=last: no run folder under .*runs/other"):
        resolve_ckpt_path(cfg)


def test_checkpoint_is_replaced_atomically(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, target)

    def half_written(obj, f) -> None:
        f.write(b"partial")
        raise KeyboardInterrupt  # killed in the middle of writing

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}, "the old checkpoint is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left"


def test_checkpoint_files_get_the_users_umask(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    previous = os.umask(0o022)
    try:
        for umask, mode in [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)]:
            os.umask(umask)
            target = tmp_path / f"{umask:o}.ckpt"
            io.save_checkpoint({"step": 1}, target)
            assert target.stat().st_mode & 0o777 == mode, oct(umask)
    finally:
        os.umask(previous)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporary_files_are_removed_where_a_checkpoint_is_first_written(
    tmp_path: Path,
) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "killed writer": f".last.ckpt.{HOST}.{dead_pid()}.0a1b2c3d.tmp",
            "live writer": f".last.ckpt.{HOST}.{live.pid}.0a1b2c3d.tmp",
            "this process": f".epoch_001.ckpt.{HOST}.{os.getpid()}.0a1b2c3d.tmp",
            "another host": f".last.ckpt.otherhost.{dead_pid()}.0a1b2c3d.tmp",
            "another host, a day old": ".last.ckpt.otherhost.1.0a1b2c3d.tmp",
            "earlier version's": ".last.ckpt.k2_x9qz1.tmp",
            "earlier version's, a day old": ".last.ckpt.a8_k2m0p.tmp",
            "not a checkpoint's": ".notes.tmp",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        old = time.time() - 25 * 3600
        for case in ("another host, a day old", "earlier version's, a day old"):
            os.utime(tmp_path / names[case], (old, old))
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
        left = {case for case, name in names.items() if (tmp_path / name).exists()}
    finally:
        live.kill()
        live.wait()
    assert left == {
        "live writer",
        "this process",
        "another host",
        "earlier version's",
        "not a checkpoint's",
    }


KILLED_MID_WRITE = """
import os, signal, sys, torch
from dnnlab.train.checkpointing import HOST, AtomicCheckpointIO

def half_written(obj, f):
    f.write(b"partial")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = half_written
AtomicCheckpointIO().save_checkpoint({"step": 2}, sys.argv[1])
"""


def test_a_writer_killed_mid_write_leaves_a_file_that_the_next_write_removes(
    tmp_path: Path,
) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_WRITE, str(target)], env=env, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list(tmp_path.glob(".last.ckpt.*.tmp"))) == 1
    assert torch.load(target, weights_only=True) == {"step": 1}
    AtomicCheckpointIO().save_checkpoint({"step": 3}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# A tiny run on random images: 80 training images in 5 blocks of 2 steps of 8, one epoch.
def tiny_overrides(folder: Path) -> list[str]:
    return [
        "data=mnist",
        f"data.root={folder}",
        "data.search_dirs=[]",
        "data.verify=false",
        "data.download=false",
        "data.val_size=20",
        "data.batch_size=8",
        "data.steps_per_block=2",
        "data.eval_batch_size=50",
        "model.hidden=[16]",
        "optimizer.lr=0.05",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=none",
    ]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``tiny_run(*overrides)``: the overrides of a finished tiny run and its last checkpoint."""
    root = tmp_path_factory.mktemp("tiny")
    base = tiny_overrides(write_idx_dataset(root / "data", n_train=100, n_test=20))
    done: dict[tuple[str, ...], tuple[list[str], Path]] = {}

    def make(*overrides: str) -> tuple[list[str], Path]:
        if overrides not in done:
            folder = root / f"run{len(done)}"
            run(compose_config([*base, *overrides], output_dir=folder))
            done[overrides] = ([*base, *overrides], folder / "checkpoints" / "last.ckpt")
        return done[overrides]

    return make


def no_data_read(monkeypatch) -> None:
    def refuse(*args, **kwargs) -> None:
        raise AssertionError("data read before the resume was checked")

    monkeypatch.setattr(IdxDataModule, "prepare_data", refuse)
    monkeypatch.setattr(IdxDataModule, "setup", refuse)


# (the run resumed, the settings changed on resume, what the one line must say)
REFUSED_RESUMES = [
    ((), ["model.activation=tanh"], r"model.activation: 'leaky_relu' -> 'tanh'"),
    ((), ["model.hidden=[32]"], r"model.hidden: \[16\] -> \[32\]"),
    ((), ["optimizer=adam"], r"optimizer._target_: 'torch.optim.SGD' -> 'torch.optim.Adam'"),
    ((), ["data.classes=[0,1]"], r"data.classes: None -> \[0, 1\]; num_classes: 10 -> 2"),
    ((), ["data.name=fashion_mnist"], r"data.name: 'mnist' -> 'fashion_mnist'"),
    ((), ["loss=mse"], r"loss: 'cross_entropy' -> 'mse'"),
    ((), ["data.batch_size=16"], r"data.batch_size: 8 -> 16"),
    ((), ["data.steps_per_block=3"], r"data.steps_per_block: 2 -> 3"),
    ((), ["seed=7"], r"data.seed: 42 -> 7"),
    ((), ["trainer.limit_train_batches=2"], r"trainer.limit_train_batches: None -> 2"),
    (
        (),
        ["scheduler=exponential"],
        r"scheduler.schedule._target_: unset -> 'dnnlab.optim.schedules.exponential'",
    ),
    (("scheduler=exponential",), ["scheduler.schedule.s=5"], r"scheduler.schedule.s: 20 -> 5"),
    (("scheduler=exponential",), ["optimizer.lr=0.5"], r"optimizer.lr: 0.05 -> 0.5"),
    (
        ("scheduler=onecycle",),
        ["trainer.max_epochs=2"],
        r"trainer.max_epochs: 1 -> 2",
    ),
    # a transfer run's unfreeze adds a param group that a resume without it cannot load
    ((), ["transfer.freeze_epochs=2"], r"transfer.freeze_epochs: 0 -> 2"),
    ((), ["transfer.layers=1"], r"transfer.layers: None -> 1"),
    (
        ("optimizer=adagrad",),
        ["optimizer.initial_accumulator_value=0.1"],
        r"optimizer.initial_accumulator_value: 0.0 -> 0.1",
    ),
]


@pytest.mark.parametrize(("trained", "changed", "message"), REFUSED_RESUMES)
def test_a_resume_that_changes_the_run_is_refused_before_any_data_is_read(
    tiny_run, tmp_path: Path, monkeypatch, trained, changed, message
) -> None:
    overrides, checkpoint = tiny_run(*trained)
    no_data_read(monkeypatch)
    cfg = compose_config([*overrides, *changed, f"ckpt_path={checkpoint}"], output_dir=tmp_path)
    pattern = (
        rf"^ckpt_path='{checkpoint}': a resume continues the same run, but these settings differ "
        rf"from the checkpoint's \(checkpoint -> now\): .*{message}.*; resume with the "
        r"checkpoint's values, or start a new run without ckpt_path$"
    )
    with pytest.raises(ConfigError, match=pattern):
        run(cfg)


def test_an_older_checkpoint_refuses_another_batch_size_from_its_loader_state(
    tiny_run, tmp_path: Path, monkeypatch
) -> None:
    overrides, checkpoint = tiny_run()
    older = torch.load(checkpoint, weights_only=True)
    del older[SETTINGS]  # as written before the settings were stored
    torch.save(older, tmp_path / "older.ckpt")
    no_data_read(monkeypatch)
    cfg = compose_config(
        [*overrides, "data.batch_size=16", f"ckpt_path={tmp_path / 'older.ckpt'}"],
        output_dir=tmp_path / "run",
    )
    with pytest.raises(ConfigError, match=r"settings differ .*: data.batch_size: 8 -> 16; "):
        run(cfg)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text", r"not a checkpoint \(not a torch.save archive"),
        ("weights only", r"holds no training state \(optimizer_states, loops missing"),
    ],
)
def test_a_resume_from_a_file_that_cannot_be_resumed_is_one_line(
    tiny_run, tmp_path: Path, content: str, message: str
) -> None:
    overrides, checkpoint = tiny_run()
    path = tmp_path / "given.ckpt"
    if content == "text":
        path.write_text("not a checkpoint\n")
    else:
        saved = torch.load(checkpoint, weights_only=True)
        torch.save({k: saved[k] for k in ("state_dict", "hyper_parameters")}, path)
    cfg = compose_config([*overrides, f"ckpt_path={path}"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=rf"^ckpt_path='{path}': {message}"):
        run(cfg)


class OptimizerSettings(Callback):
    """The learning rate and momentum each training block starts with."""

    def __init__(self) -> None:
        self.seen: set[tuple[float, float]] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, idx) -> None:
        group = trainer.optimizers[0].param_groups[0]
        self.seen.add((group["lr"], group["momentum"]))


def test_changed_optimizer_hyperparameters_take_effect_on_resume_and_are_logged(
    tiny_run, tmp_path: Path, caplog
) -> None:
    overrides, checkpoint = tiny_run()
    changed = ["optimizer.lr=0.5", "optimizer.momentum=0.9", "trainer.max_epochs=2"]
    cfg = compose_config(
        [*overrides, *changed, "logger=csv", f"ckpt_path={checkpoint}"], output_dir=tmp_path
    )
    seen = OptimizerSettings()
    with caplog.at_level(logging.INFO, logger="dnnlab.train.resume"):
        run(cfg, [seen])
    assert seen.seen == {(0.5, 0.9)}, "what the config says, not the checkpoint's 0.05 and 0.0"
    recorded = yaml.safe_load((tmp_path / "hparams.yaml").read_text())["optimizer"]
    assert (recorded["lr"], recorded["momentum"]) == (0.5, 0.9)
    assert re.search(
        rf"resuming {checkpoint} at step 10; changed since its checkpoint, in effect from here: "
        r"optimizer.lr: 0.05 -> 0.5; optimizer.momentum: 0.0 -> 0.9; trainer.max_epochs: 1 -> 2",
        caplog.text,
    )


def test_a_resume_from_a_moved_run_tests_the_best_checkpoint_that_exists(
    tiny_run, tmp_path: Path, caplog
) -> None:
    overrides, checkpoint = tiny_run()
    moved = tmp_path / "moved"
    shutil.copytree(checkpoint.parent.parent, moved)  # the original stays for the other tests
    best = torch.load(checkpoint, weights_only=True)["callbacks"]
    (old_best,) = {s["best_model_path"] for k, s in best.items() if s.get("best_model_path")}
    os.rename(old_best, tmp_path / "elsewhere.ckpt")  # the original folder no longer has it
    try:
        for case, run_dir in [("beside", "run1"), ("gone", "run2")]:
            if case == "gone":
                (moved / "checkpoints" / Path(old_best).name).unlink()
            cfg = compose_config(
                [
                    *overrides,
                    "trainer.max_epochs=2",
                    f"ckpt_path={moved / 'checkpoints' / 'last.ckpt'}",
                ],
                output_dir=tmp_path / run_dir,
            )
            metrics = run(cfg)
            summary = json.loads((tmp_path / run_dir / "metrics.json").read_text())
            assert "test/acc" in metrics and "test/acc" in summary["metrics"]
            tested = summary["tested_checkpoint"]
            if case == "beside":
                assert tested == str(moved / "checkpoints" / Path(old_best).name)
            else:
                assert tested is None, "the final weights"
                assert "no longer exists; testing the final weights" in caplog.text
    finally:
        os.rename(tmp_path / "elsewhere.ckpt", old_best)


@requires_fashion
def test_same_config_and_seed_give_identical_metrics(make_config) -> None:
    overrides = ["trainer.max_epochs=1", "trainer.limit_train_batches=64", "test=false"]
    configs = [make_config([*overrides, "trainer.deterministic=true"], run=r) for r in "ab"]
    first, second = (run(cfg) for cfg in configs)
    assert first == second and "val/acc" in first
    a, b = (weights(Path(c.paths.output_dir) / "checkpoints" / "last.ckpt") for c in configs)
    assert all(torch.equal(a[k], b[k]) for k in a)


class EpochMetrics(Checkpoint):
    """Records each finished epoch's train/val metrics (a ``Checkpoint`` subclass runs after the
    module's ``on_train_epoch_end``, which logs the epoch's training metrics)."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, float]] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        keys = [k for k in metrics if k.startswith(("train/", "val/"))]
        self.epochs[trainer.current_epoch] = {k: float(metrics[k]) for k in keys}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict[str, float], dict[int, dict]]:
    """The run that the killed-and-resumed runs must reproduce exactly."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    recorder = EpochMetrics()
    metrics = run(compose_config(RESUMABLE, output_dir=folder), [recorder])
    return folder, metrics, recorder.epochs


# (case, killer overrides, global_step of the last.ckpt it leaves, epoch it dies in)
KILLS = [
    # At the end of the block reaching step 240 (epoch 2, block 5 of 10): mid-epoch.
    ("mid-epoch", ["killer.KillAfterSteps", "+callbacks.killer.step=240"], 224, 1),
    # After the epoch's last block (a step checkpoint falls due there: 160 = 5 x 32), before
    # its epoch-end checkpoint is written: Lightning would resume a checkpoint of that block as
    # a finished epoch, without its validation and epoch-end hooks.
    ("at the epoch's last block", ["killer.KillAtEpoch", "+callbacks.killer.epoch=0"], None, 0),
    # Once the epoch-end checkpoint is written, as the next epoch starts.
    (
        "after the epoch-end checkpoint",
        ["killer.KillAtEpoch", "+callbacks.killer.epoch=1", "+callbacks.killer.at=start"],
        160,
        1,
    ),
]


@pytest.mark.slow
@requires_fashion
@pytest.mark.parametrize(
    ("case", "killer", "saved_step", "epoch"), KILLS, ids=[k[0] for k in KILLS]
)
def test_killed_run_resumes_to_the_same_weights_and_metrics(
    tmp_path: Path, uninterrupted, case: str, killer: list[str], saved_step, epoch: int
) -> None:
    whole_folder, expected, expected_epochs = uninterrupted
    env = {
        **os.environ,
        "DNNLAB_ROOT": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
    }
    target, *settings = killer
    command = [sys.executable, str(ROOT / "train.py"), *RESUMABLE]
    killed = subprocess.run(
        [*command, f"+callbacks.killer._target_={target}", *settings],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (folder,) = (tmp_path / "logs" / "runs" / "default").iterdir()
    step = torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert saved_step is None or step == saved_step
    assert not list(folder.glob("checkpoints/.*")), "no temporary checkpoint file is left"
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").iterdir()}

    resumed = compose_config(
        [*RESUMABLE, "ckpt_path=last", f"paths.log_dir={tmp_path / 'logs'}"],
        output_dir=tmp_path / "resumed",
    )
    recorder = EpochMetrics()
    got = run(resumed, [recorder])
    for key in [*FINAL, "test/acc", "test/loss"]:
        assert got[key] == expected[key], key
    assert epoch in recorder.epochs, "the epoch it was killed in is finished, with its metrics"
    for finished, metrics in recorder.epochs.items():
        assert metrics == expected_epochs[finished], finished
    want = weights(whole_folder / "checkpoints" / "last.ckpt")
    have = weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert all(torch.equal(want[k], have[k]) for k in want)
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").iterdir()}
    assert after == before, "the killed run's folder is left as it was"
    # The gradient diagnostics' history travels in the checkpoint: the verdict sees every step.
    whole, pieced = (
        json.loads((f / VERDICT_FILE).read_text()) for f in (whole_folder, tmp_path / "resumed")
    )
    for key in ("verdict", "epochs", "grad_norm_per_epoch", "weight_change_per_epoch"):
        assert pieced[key] == whole[key], key


def test_last_checkpoint_is_the_last_epoch_even_when_it_is_not_the_best(
    tmp_path: Path, make_config
) -> None:
    """Lightning 2.6 rewrites last.ckpt at validation only with a new top-k checkpoint: with a
    monitor that never improves after epoch 1, last.ckpt stayed at epoch 1."""
    never_better = [
        "callbacks.model_checkpoint.monitor=step",  # grows every epoch: mode=min never improves
        "callbacks.model_checkpoint.mode=min",
    ]
    cfg = make_config([*tiny_task(tmp_path / "data"), "trainer.max_epochs=3", *never_better])
    run(cfg)
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    last = torch.load(folder / "last.ckpt", weights_only=True)
    best = torch.load(folder / "epoch_000.ckpt", weights_only=True)
    assert best["global_step"] == 4, "the best stays epoch 1"
    assert (last["epoch"], last["global_step"]) == (2, 12), "last.ckpt holds the run's end"


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        (["trainer.max_epochs=2"], "trainer.max_epochs=2"),
        (["trainer.max_epochs=1"], "trainer.max_epochs=1"),
        (["trainer.max_epochs=5", "+trainer.max_steps=8"], "trainer.max_steps=8"),
    ],
)
def test_a_resume_with_nothing_left_to_train_is_refused(
    limits: list[str], named: str, tmp_path: Path, make_config
) -> None:
    """Fewer epochs than done crashed after the data was read; as many trained nothing, exit 0."""
    task = tiny_task(tmp_path / "data")
    done = make_config([*task, "trainer.max_epochs=2"], run="done")
    run(done)
    last = Path(done.paths.output_dir) / "checkpoints" / "last.ckpt"
    again = make_config([*task, *limits, f"ckpt_path={last}"], run="again")
    expected = rf"has trained 2 epochs \(8 optimizer steps\), so {named} leaves nothing to train"
    with pytest.raises(ConfigError, match=expected):
        run(again)


@pytest.mark.parametrize(
    ("steps_per_block", "max_steps", "left"), [(4, 3, 1), (2, 1, 3), (2, 2, 2), (1, 2, 2)]
)
def test_a_resume_after_max_steps_stopped_inside_an_epoch_is_refused(
    steps_per_block: int, max_steps: int, left: int, tmp_path: Path, make_config
) -> None:
    """max_steps inside a block (3 of 4, 1 of 2) or at a block's end inside the epoch (2 of 4):
    Lightning would resume at epoch 2, the rest of epoch 1 never trained."""
    task = [*tiny_task(tmp_path / "data"), f"data.steps_per_block={steps_per_block}"]
    limits = ["trainer.max_epochs=2", f"+trainer.max_steps={max_steps}"]
    done = make_config([*task, *limits], run="done")
    run(done)
    last = Path(done.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == max_steps
    again = make_config([*task, "trainer.max_epochs=2", f"ckpt_path={last}"], run="again")
    expected = (
        rf"^ckpt_path='.*last.ckpt': that run stopped {max_steps} optimizer steps in, {left} "
        r"before the end of epoch 1 \(trainer.max_steps, or a callback that stopped it\); "
        r"Lightning resumes such a checkpoint at the next epoch, and those steps would never be "
        r"trained: resume from a checkpoint of an epoch's end or a step checkpoint of that run$"
    )
    with pytest.raises(ConfigError, match=expected):
        run(again)


def test_a_resume_after_max_steps_at_an_epochs_end_trains_the_next(
    tmp_path: Path, make_config
) -> None:
    task = [*tiny_task(tmp_path / "data"), "data.steps_per_block=2"]
    done = make_config([*task, "trainer.max_epochs=2", "+trainer.max_steps=4"], run="done")
    run(done)
    last = Path(done.paths.output_dir) / "checkpoints" / "last.ckpt"
    again = make_config([*task, "trainer.max_epochs=2", f"ckpt_path={last}"], run="again")
    run(again)
    final = Path(again.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(final, weights_only=True)["global_step"] == 8, "2 epochs of 4 steps"
