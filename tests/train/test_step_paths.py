"""The direct step path calls the same hooks, in the same order, and trains to the same weights
as the path through ``manual_backward`` and the Lightning optimizer; it is used only where that
path adds nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

import dnnlab.train.blocks
import dnnlab.train.module
from conftest import requires_fashion
from dnnlab.train.blocks import DirectStep, LightningStep
from dnnlab.train.run import run

pytestmark = requires_fashion

SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=12", "data.steps_per_block=4"]


class HookRecorder(L.Callback):
    """Records every per-step hook with the step it saw, and logs from inside one of them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_before_backward(self, trainer: L.Trainer, pl_module: Any, loss: torch.Tensor) -> None:
        self.calls.append(("before_backward", trainer.global_step, round(loss.item(), 6)))

    def on_after_backward(self, trainer: L.Trainer, pl_module: Any) -> None:
        grad = pl_module.net[1].weight.grad
        self.calls.append(("after_backward", trainer.global_step, round(grad.norm().item(), 6)))
        pl_module.log("probe/grad_norm", grad.norm())  # self.log is allowed in this hook

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: Any, optimizer) -> None:
        self.calls.append(("before_optimizer_step", trainer.global_step, type(optimizer).__name__))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        self.calls.append(("batch_end", trainer.global_step))


def train(make_config, monkeypatch, direct: bool, overrides=(), run_name="run"):
    """A short run; returns the recorder, the metrics, the final weights and the stepper types."""
    if not direct:
        monkeypatch.setattr(dnnlab.train.blocks, "direct_applies", lambda trainer: False)
    chosen: list[type] = []
    original = dnnlab.train.blocks.stepper

    def recording_stepper(module, optimizer, update=None):
        chosen.append(type(steps := original(module, optimizer, update)))
        return steps

    monkeypatch.setattr(dnnlab.train.blocks, "stepper", recording_stepper)
    cfg = make_config([*SHORT, "test=false", *overrides], run=run_name)
    recorder = HookRecorder()
    metrics = run(cfg, extra_callbacks=[recorder])
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    monkeypatch.undo()
    return recorder, metrics, last, chosen


def test_direct_path_matches_lightning_hook_for_hook_and_weight_for_weight(
    make_config, monkeypatch
) -> None:
    direct = train(make_config, monkeypatch, direct=True, run_name="direct")
    through = train(make_config, monkeypatch, direct=False, run_name="lightning")
    (rec_d, metrics_d, last_d, chosen_d), (rec_l, metrics_l, last_l, chosen_l) = direct, through
    assert set(chosen_d) == {DirectStep} and set(chosen_l) == {LightningStep}
    assert rec_d.calls == rec_l.calls
    # 3 blocks of 4 steps: 3 hooks per step, seen before the step is counted, then the block end
    assert len(rec_d.calls) == 3 * (4 * 3 + 1)
    assert [c[1] for c in rec_d.calls if c[0] == "before_backward"] == list(range(12))
    assert rec_d.calls[-1] == ("batch_end", 12)
    assert last_d["global_step"] == last_l["global_step"] == 12
    for name, tensor in last_l["state_dict"].items():
        assert torch.equal(last_d["state_dict"][name], tensor), name
    assert metrics_d["probe/grad_norm"] == pytest.approx(metrics_l["probe/grad_norm"])
    assert metrics_d["train/loss_epoch"] == metrics_l["train/loss_epoch"]


def test_the_module_own_step_hooks_run_on_the_direct_path(make_config, monkeypatch) -> None:
    seen: list[int] = []

    def on_after_backward(self) -> None:
        seen.append(self.global_step)

    monkeypatch.setattr(dnnlab.train.module.Classifier, "on_after_backward", on_after_backward)
    *_, chosen = train(make_config, monkeypatch, direct=True)
    assert set(chosen) == {DirectStep} and seen == list(range(12))


@pytest.mark.parametrize(
    "overrides",
    [["trainer.precision=bf16-mixed"], ["+trainer.profiler=simple"]],
    ids=["mixed-precision", "profiler"],
)
def test_lightning_path_where_it_does_more_than_dispatch_hooks(
    make_config, monkeypatch, overrides
) -> None:
    recorder, *_, chosen = train(make_config, monkeypatch, direct=True, overrides=overrides)
    assert set(chosen) == {LightningStep}
    assert [c[1] for c in recorder.calls if c[0] == "before_backward"] == list(range(12))
