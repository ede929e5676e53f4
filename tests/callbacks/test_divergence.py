"""A diverging run stops with one line naming the step and the layer; the last good state stays."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from conftest import QUICK, call_train, requires_fashion
from dnnlab.app.cli import FAILED_FILE
from dnnlab.callbacks.divergence import DivergenceMonitor
from dnnlab.errors import ConfigError, TrainingDiverged
from dnnlab.train.run import run

pytestmark = requires_fashion


class HugeLearningRate(Callback):
    """From Lightning batch ``block`` on, train with a learning rate that makes SGD blow up."""

    def __init__(self, block: int, lr: float = 1e8) -> None:
        self.block, self.lr = block, lr

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.block:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = self.lr


def test_huge_learning_rate_stops_with_step_layer_and_hint(make_config) -> None:
    # Blocks of 16 steps; last.ckpt every 32 steps; the LR jumps at the 4th block (steps 49-64).
    cfg = make_config(["callbacks.step_checkpoint.every_n_train_steps=32", "test=false"])
    with pytest.raises(TrainingDiverged) as info:
        run(cfg, extra_callbacks=[HugeLearningRate(block=3)])
    message = str(info.value)
    step = int(message.split("optimizer step ")[1].split()[0])
    assert step > 48, "the steps before the jump were fine"
    assert "\n" not in message and re.search(
        r"the gradient of net\.\d\.\w+ went non-finite first|"
        r"its update made net\.\d\.\w+ non-finite first|"
        r"the loss is nan while every weight is finite: the forward pass overflowed|"
        r"the loss is (nan|inf): the weights went non-finite in the update of step",
        message,
    )
    assert "lower optimizer.lr" in message and "clipping" in message
    assert TrainingDiverged.exit_code != 0
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert f"last good checkpoint: {last}" in message
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 32, "written before the jump, never overwritten after it"
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


class InfiniteGradient(Callback):
    """From Lightning batch ``block`` on, one parameter's gradient overflows in backpropagation."""

    def __init__(self, block: int, parameter: str) -> None:
        self.block, self.parameter = block, parameter

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.block:
            weight = dict(pl_module.named_parameters())[self.parameter]
            weight.register_hook(lambda grad: grad.add(1.0).mul(float("inf")))


@pytest.mark.parametrize(
    ("check_gradients", "expected"),
    [
        # On the CPU each loss is read: the next loss is nan, and the update of step 33 left
        # exactly that tensor non-finite.
        (
            "auto",
            "at optimizer step 33 (epoch 0): its update made net.3.weight non-finite first "
            "(1 of 6 parameter tensors",
        ),
        # Per-step gradient sums on the device (the GPU's way): the block's first step is named.
        ("true", "at optimizer step 33 (epoch 0): loss "),
    ],
)
def test_the_layer_whose_gradient_overflows_is_named(
    make_config, check_gradients: str, expected: str
) -> None:
    cfg = make_config(["test=false", f"callbacks.divergence.check_gradients={check_gradients}"])
    with pytest.raises(TrainingDiverged) as info:
        run(cfg, extra_callbacks=[InfiniteGradient(block=2, parameter="net.3.weight")])
    message = str(info.value)
    assert expected in message, message
    if check_gradients == "true":
        assert (
            "the gradient of net.3.weight went non-finite first (1 of 6 parameter tensors)"
            in message
        )


def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_first(tmp_path: Path) -> None:
    good = tmp_path / "last.ckpt"
    good.write_bytes(b"saved earlier")
    checkpoints = ModelCheckpoint(dirpath=tmp_path)
    checkpoints.last_model_path = str(good)
    trainer = SimpleNamespace(global_step=12, current_epoch=1, checkpoint_callbacks=[checkpoints])
    state = {"a.weight": torch.ones(3), "steps": torch.tensor([4]), "b.bias": torch.ones(2)}
    monitor = DivergenceMonitor()
    monitor.on_save_checkpoint(trainer, None, {"state_dict": state})  # finite: written
    state["b.bias"][1] = float("inf")
    state["c.weight"] = torch.full((2,), float("nan"))
    with pytest.raises(TrainingDiverged) as err:
        monitor.on_save_checkpoint(trainer, None, {"state_dict": state})
    assert str(err.value).startswith(
        "training diverged by optimizer step 12 (epoch 1): weights b.bias are not finite, "
        f"checkpoint not written; last good checkpoint: {good}; try a lower optimizer.lr"
    )


def test_check_gradients_must_be_auto_true_or_false() -> None:
    with pytest.raises(ConfigError, match=r"check_gradients='yes' is not valid; choose one of"):
        DivergenceMonitor(check_gradients="yes")


def test_train_py_reports_divergence_in_one_line_and_exits_3(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    code = call_train([*QUICK, "optimizer.lr=1e30", "test=false"], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 3 and len(lines) == 1, err[-2000:]
    assert re.match(r"error: training diverged at optimizer step \d+ \(epoch 0\): ", lines[0])
    assert "no checkpoint was written before" in lines[0] and "Traceback" not in err
    (folder,) = (tmp_path / "logs" / "runs" / "default").iterdir()
    assert "training diverged" in (folder / FAILED_FILE).read_text()
    assert not (folder / "checkpoints" / "last.ckpt").exists()


def test_train_py_reports_a_bad_check_gradients_in_the_callbacks_own_words(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    code = call_train(["callbacks.divergence.check_gradients=maybe"], monkeypatch, tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert lines == [
        "error: callbacks.divergence.check_gradients='maybe' is not valid; "
        "choose one of: auto, true, false"
    ], "no 'Error in call to target' prefix from Hydra"
