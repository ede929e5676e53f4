"""Short real training runs on slices of Fashion-MNIST: learning, checkpoints, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from conftest import requires_fashion, scalars, tiny_data
from dnnlab.train.module import Classifier
from dnnlab.train.run import run

pytestmark = requires_fashion


def test_short_run_learns_and_tests_the_best_checkpoint(make_config) -> None:
    cfg = make_config(["trainer.log_every_n_steps=10"])
    metrics = run(cfg)
    out = Path(cfg.paths.output_dir)
    logged = scalars(out)
    losses = [v for _, v in logged["train/loss"]]
    assert losses[-1] < 0.6 * losses[0], "the training loss falls"
    assert metrics["val/acc"] > 0.6 and metrics["test/acc"] > 0.6, "far above chance (0.1)"
    assert metrics["val/acc_best"] >= metrics["val/acc"]
    # x-axis in optimizer steps: 2 epochs x 10 blocks x 16 steps
    assert logged["train/loss"][-1][0] == 320 and logged["train/lr"][0][1] == pytest.approx(0.05)
    assert {"val/acc", "val/loss", "train/acc", "val/acc_best"} <= set(logged)
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_checkpoint_loads_weights_only_and_resumes(make_config, tmp_path: Path) -> None:
    cfg = make_config(["trainer.max_epochs=1", "test=false"])
    run(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)  # primitive hyperparameters only
    assert state["hyper_parameters"]["model"]["hidden"] == [300, 100]
    model = Classifier.load_from_checkpoint(last, weights_only=True)
    assert torch.equal(model.net[1].weight, state["state_dict"]["net.1.weight"])
    resumed = make_config(
        ["trainer.max_epochs=2", "test=false", f"ckpt_path={last}"], run="resumed"
    )
    run(resumed)
    again = torch.load(
        Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert state["global_step"] == 160 and again["global_step"] == 320
    assert again["epoch"] == 2  # last.ckpt is rewritten after the epoch ends: 2 epochs done


def only_the_optimizers_graph_breaks() -> bool:
    """torch.optim brackets an update with two graph breaks of its own (so that its body
    compiles as one no-grad graph); nothing else may break a graph."""
    return all("User-inserted graph break" in reason for reason in counters["graph_break"])


@pytest.mark.slow
def test_compiled_step_gives_the_eager_weights_with_every_hook_on(
    make_config, tmp_path: Path
) -> None:
    """compile=true compiles the forward, the loss and penalty, and the optimizer's update with
    the max-norm after it; clipping, the divergence monitor and the diagnostics' sampled steps
    still run between them: the same steps give the same weights within float tolerance."""
    overrides = [
        *tiny_data(tmp_path),
        "model.hidden=[32,16]",
        "data.steps_per_block=4",
        "trainer.max_epochs=2",  # 2 epochs of 7 batches of 8 (50 training images)
        "data.batch_size=8",
        "test=false",
        "optimizer=momentum",
        "regularization.l2=0.001",
        "regularization.max_norm=1.0",
        "clipping=norm",
        "clipping.threshold=0.5",
        "callbacks.gradient_diagnostics.every_n_steps=3",
    ]
    eager_cfg = make_config(overrides, quick=False, run="eager")
    run(eager_cfg)
    cfg = make_config([*overrides, "compile=true"], quick=False, run="compiled")
    counters.clear()
    run(cfg)
    assert counters["frames"]["ok"] >= 2, "the losses and the update were compiled"
    assert only_the_optimizers_graph_breaks()
    eager, compiled = (
        torch.load(Path(c.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
        for c in (eager_cfg, cfg)
    )
    assert compiled["global_step"] == eager["global_step"] == 14  # 7 batches of 8, 2 epochs
    for key, value in eager["state_dict"].items():
        assert torch.allclose(compiled["state_dict"][key], value, rtol=1e-4, atol=1e-6), key
    rows = eager["state_dict"]["net.1.weight"].norm(dim=1)
    assert rows.max() <= 1.0 + 1e-5, "max-norm applied (in the compiled update too)"


@pytest.mark.slow
def test_compiled_network_trains_like_the_eager_one_and_saves_plain_checkpoints(
    make_config,
) -> None:
    overrides = ["trainer.max_epochs=1", "test=false", "trainer.deterministic=true"]
    eager_cfg = make_config(overrides, run="eager")
    eager = run(eager_cfg)
    cfg = make_config([*overrides, "compile=true"], run="compiled")
    counters.clear()
    compiled = run(cfg)
    assert counters["frames"]["ok"] > 0, "torch.compile traced the network's forward"
    assert only_the_optimizers_graph_breaks(), "the diagnostics' hooks stay out of the graphs"
    # Same initial weights and batches; compiled kernels may round differently in the last bits.
    assert compiled["val/acc"] == pytest.approx(eager["val/acc"], abs=0.02)
    # The diagnostics' sampled passes still see the activations (they run eagerly).
    ours, theirs = scalars(Path(cfg.paths.output_dir)), scalars(Path(eager_cfg.paths.output_dir))
    acts = sorted(tag for tag in theirs if tag.startswith("z_act_mean/"))
    assert acts and all(len(ours[tag]) == len(theirs[tag]) > 1 for tag in acts)
    first = [ours[tag][0][1] for tag in acts], [theirs[tag][0][1] for tag in acts]
    assert first[0] == pytest.approx(first[1], rel=1e-4, abs=1e-6), "the same first sample"
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert not [k for k in state["state_dict"] if "_orig_mod" in k], "keys as without compile"
    Classifier.load_from_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_every_compiled_run_of_a_process_compiles_its_step(
    make_config, tmp_path: Path, monkeypatch
) -> None:
    """A sweep on Hydra's basic launcher (or the benchmark) runs member after member in one
    process. torch recompiles a function for each new model and optimizer and, past its limit
    of recompilations per function, runs it eagerly: from the 9th member on, compile=true
    would silently have trained eagerly. Each run starts with torch's compile caches cleared."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)  # the 2nd run hits it
    overrides = [*tiny_data(tmp_path), "model.hidden=[16]", "compile=true", "test=false"]
    overrides += ["trainer.max_epochs=1", "callbacks.gradient_diagnostics=null"]
    frames = []
    for member in ("first", "second"):
        counters.clear()
        run(make_config(overrides, quick=False, run=member))
        frames.append(counters["frames"]["ok"])
    assert frames[0] >= 2 and frames[1] == frames[0], "the second run compiled its step too"
