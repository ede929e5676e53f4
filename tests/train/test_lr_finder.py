"""The LR finder on a real slice of Fashion-MNIST: range, divergence, restored weights, reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import requires_fashion, scalars
from dnnlab.errors import ConfigError
from dnnlab.optim.optimizers import build_optimizer
from dnnlab.train.lr_finder import epochs_of_batches, lr_range_test, tune_learning_rate
from dnnlab.train.run import build_datamodule, build_model, build_trainer, plain, run

pytestmark = requires_fashion

FIND = ["tune.lr_find=true", "tune.num_steps=200", "tune.min_lr=1e-4"]


def test_range_test_grows_the_lr_and_stops_below_divergence_leaving_weights_as_they_were(
    make_config,
) -> None:
    cfg = make_config()
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    result = lr_range_test(
        model,
        build_optimizer(plain(cfg.optimizer), model.parameters()),
        datamodule.train_dataloader().batches(),
        min_lr=1e-4,
        max_lr=10.0,
        num_steps=200,
    )
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert result.lrs[0] == pytest.approx(1e-4)
    assert ratios == pytest.approx([(1e5) ** (1 / 199)] * len(ratios)), "a constant factor"
    assert result.diverged_lr is not None and len(result.lrs) < 200, "stopped when it exploded"
    assert 1e-4 <= result.suggestion <= 10.0
    assert result.suggestion < result.best_lr < result.diverged_lr
    assert result.suggestion == pytest.approx(result.best_lr / 10, rel=0.05)
    assert min(result.smoothed) < 0.7 * result.smoothed[0], "the loss fell before it exploded"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "initial weights restored"
    assert torch.equal(torch.random.get_rng_state(), rng), "random state restored"


def test_lr_find_alone_reports_the_override_saves_the_plot_and_does_not_train(
    make_config, capsys
) -> None:
    cfg = make_config([*FIND, "optimizer=momentum"])
    metrics = run(cfg)
    out = Path(cfg.paths.output_dir)
    suggestion = metrics["lr_find/suggestion"]
    assert 1e-4 <= suggestion <= 10.0 and set(metrics) == {"lr_find/suggestion"}
    printed = capsys.readouterr().out
    assert f"train with it: python train.py optimizer.lr={suggestion:g}" in printed
    assert (out / "lr_find.png").stat().st_size > 10_000
    events = EventAccumulator(str(out))
    events.Reload()
    assert "lr_find" in events.Tags()["images"]
    assert not (out / "checkpoints").exists(), "find only: no training"


@pytest.mark.slow
def test_lr_find_feeds_max_lr_to_one_cycle_and_trains(make_config) -> None:
    cfg = make_config(
        [*FIND, "tune.use_for=max_lr", "scheduler=onecycle", "trainer.log_every_n_steps=1"]
    )
    metrics = run(cfg)
    assert metrics["val/acc"] > 0.6, "the finder ran, then the run trained"
    max_lr = cfg.scheduler.schedule.max_lr
    assert max_lr != 0.05 and 1e-4 <= max_lr <= 10, "the suggestion replaced the default"
    out = Path(cfg.paths.output_dir)
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["hyper_parameters"]["scheduler"]["schedule"]["max_lr"] == max_lr
    lrs = [v for _, v in scalars(out)["train/lr"]]
    assert max(lrs) == pytest.approx(max_lr, rel=0.02), "1cycle peaked at the suggestion"


def test_lr_find_with_use_for_lr_sets_the_optimizer_lr_on_the_initial_weights(
    make_config,
) -> None:
    cfg = make_config([*FIND, "tune.use_for=lr", "trainer.max_epochs=1", "test=false"])
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    suggestion = tune_learning_rate(cfg, model, datamodule, build_trainer(cfg))
    assert model.hparams.optimizer["lr"] == suggestion == cfg.optimizer.lr
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("overrides", [["loss=mse"], ["regularization=l2"]])
def test_range_test_measures_the_objective_the_run_minimizes(
    make_config, monkeypatch, overrides: list[str]
) -> None:
    cfg = make_config([*FIND, "tune.num_steps=3", *overrides])
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    results = []

    def recorded(*args, **kwargs):
        results.append(lr_range_test(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr("dnnlab.train.lr_finder.lr_range_test", recorded)
    tune_learning_rate(cfg, model, datamodule, build_trainer(cfg))
    x, y = next(epochs_of_batches(datamodule.train_dataloader()))  # the test's first batch
    with torch.no_grad():  # the initial weights, restored after the test
        objective, cross_entropy = model.objective(x, y), F.cross_entropy(model(x), y)
    assert results[0].losses[0] == pytest.approx(float(objective), rel=1e-5)
    assert float(objective) != pytest.approx(float(cross_entropy), rel=1e-3), "not the default"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tune.min_lr=-1"], r"tune.min_lr=-1 is out of range; expected a learning rate > 0"),
        (["tune.max_lr=1e-6"], "tune.max_lr=1e-06 must be above tune.min_lr=1e-05"),
        (["tune.num_steps=1"], r"tune.num_steps=1 is out of range; expected .* integer >= 2"),
        (["tune.num_steps=true"], r"tune.num_steps=true is out of range; expected .* integer"),
        (["tune.num_steps=2.5"], r"tune.num_steps=2.5 is out of range; expected .* integer"),
        (["tune.divergence=0.5"], r"tune.divergence=0.5 is out of range; expected .* > 1"),
        (["tune.smoothing=1.0"], r"tune.smoothing=1.0 is out of range; expected .* in \[0, 1\)"),
        (["tune.suggest_fraction=0"], r"tune.suggest_fraction=0 is out of range; .* in \(0, 1\]"),
        (["tune.use_for=momentum"], "tune.use_for='momentum' is not valid; choose one of: lr"),
        (["tune.use_for=max_lr"], "tune.use_for=max_lr needs .*scheduler=onecycle"),
    ],
)
def test_bad_finder_settings_are_one_line(make_config, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        run(make_config(["tune.lr_find=true", *overrides]))
    assert "\n" not in str(err.value)
