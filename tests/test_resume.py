"""Reproducible and resumable: same seed, same numbers; a killed run resumes to the same end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import QUICK, ROOT, requires_fashion, write_idx_dataset
from dnnlab.checkpointing import AtomicCheckpointIO
from dnnlab.config import compose_config
from dnnlab.data import IdxDataModule
from dnnlab.diagnostics.callback import VERDICT_FILE
from dnnlab.errors import ConfigError
from dnnlab.resume import resolve_ckpt_path
from dnnlab.training import run

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
    with pytest.raises(ConfigError, match=r"data.batch_size=8 .* resume it with the same"):
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


@requires_fashion
def test_same_config_and_seed_give_identical_metrics(make_config) -> None:
    overrides = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "test=false"]
    configs = [make_config([*overrides, "trainer.deterministic=true"], run=r) for r in "ab"]
    first, second = (run(cfg) for cfg in configs)
    assert first == second and "val/acc" in first
    a, b = (weights(Path(c.paths.output_dir) / "checkpoints" / "last.ckpt") for c in configs)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@requires_fashion
def test_killed_run_resumes_mid_epoch_to_the_same_weights_and_metrics(tmp_path: Path) -> None:
    uninterrupted = compose_config(RESUMABLE, output_dir=tmp_path / "uninterrupted")
    expected = run(uninterrupted)

    # The same run in a process killed at the end of the block reaching step 240 (epoch 2, block
    # 5 of 10); its last checkpoint is from step 224, mid-epoch.
    env = {
        **os.environ,
        "DNNLAB_ROOT": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
    }
    killer = ["+callbacks.killer._target_=killer.KillAfterSteps", "+callbacks.killer.step=240"]
    killed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *RESUMABLE, *killer],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (folder,) = (tmp_path / "logs" / "runs" / "default").iterdir()
    assert torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 224
    assert not list(folder.glob("checkpoints/.*")), "no temporary checkpoint file is left"
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").iterdir()}

    resumed = compose_config(
        [*RESUMABLE, "ckpt_path=last", f"paths.log_dir={tmp_path / 'logs'}"],
        output_dir=tmp_path / "resumed",
    )
    got = run(resumed)
    for key in [*FINAL, "test/acc", "test/loss"]:
        assert got[key] == expected[key], key
    want = weights(tmp_path / "uninterrupted" / "checkpoints" / "last.ckpt")
    have = weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert all(torch.equal(want[k], have[k]) for k in want)
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").iterdir()}
    assert after == before, "the killed run's folder is left as it was"
    # The gradient diagnostics' history travels in the checkpoint: the verdict sees every step.
    whole, pieced = (
        json.loads((tmp_path / r / VERDICT_FILE).read_text()) for r in ("uninterrupted", "resumed")
    )
    for key in ("verdict", "epochs", "grad_norm_per_epoch", "weight_change_per_epoch"):
        assert pieced[key] == whole[key], key
