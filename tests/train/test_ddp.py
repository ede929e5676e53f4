"""The DDP path on CPU: two processes, one run folder, one set of checkpoints, synced metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import QUICK, requires_fashion, run_script, write_idx_dataset
from dnnlab.app.compose import compose_config
from dnnlab.train.module import Classifier
from dnnlab.train.run import build_datamodule


@pytest.mark.slow
@requires_fashion
def test_two_process_cpu_ddp(tmp_path: Path) -> None:
    overrides = [
        *QUICK,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.steps_per_block=1",
        "trainer.limit_train_batches=10",  # optimizer steps
        "trainer.limit_val_batches=null",
        "trainer.max_epochs=1",
        "test=false",
    ]
    result = run_script(tmp_path, "train.py", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "runs" / "default").iterdir()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["epoch_000.ckpt", "last.ckpt"]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["global_step"] == 10  # 10 steps per process, gradients averaged
    # The logged val/acc is over all 5,000 validation images, both ranks' halves together.
    model = Classifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt", weights_only=True)
    datamodule = build_datamodule(compose_config(["data.download=false"], output_dir=tmp_path))
    datamodule.setup("fit")
    x, y = datamodule.inputs("val"), datamodule.tensors["val"][1]
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert summary["metrics"]["val/acc"] == pytest.approx(accuracy, abs=1e-4)


@pytest.mark.slow
def test_blocks_of_steps_with_two_processes_are_refused_in_one_line(tmp_path: Path) -> None:
    """Refused before the Trainer starts the second process: one line, not one per process and
    a ``[rank1]`` traceback."""
    folder = write_idx_dataset(tmp_path / "data")
    data = [f"data.root={folder}", "data.search_dirs=[]", "data.verify=false", "data.val_size=20"]
    overrides = [*QUICK, "data=mnist", *data, "trainer=ddp", "trainer.accelerator=cpu"]
    result = run_script(tmp_path, "train.py", *overrides, "data.steps_per_block=4")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: data.steps_per_block=4 must be 1 with 2 processes: DDP syncs gradients once per "
        "Lightning batch (trainer=ddp sets it)"
    ], result.stderr[-3000:]
    assert "[rank" not in result.stderr and "Traceback" not in result.stderr
