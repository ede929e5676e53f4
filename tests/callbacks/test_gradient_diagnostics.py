"""GradientDiagnostics: the verdict's rules, and short real runs that show what it sees."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, requires_fashion, tiny_task
from dnnlab.app.compose import compose_config
from dnnlab.callbacks.diagnostics import GradientDiagnostics
from dnnlab.callbacks.diagnostics.callback import FIGURE_FILE, VERDICT_FILE
from dnnlab.callbacks.diagnostics.figures import by_epoch, close, epochs_title, grad_norm_vs_depth
from dnnlab.callbacks.diagnostics.layers import activation_stats
from dnnlab.callbacks.diagnostics.verdict import Samples, Thresholds, judge
from dnnlab.errors import ConfigError, TrainingDiverged
from dnnlab.model.losses import LOSSES
from dnnlab.train.module import Classifier
from dnnlab.train.run import build_callbacks, run

LIMITS = Thresholds()


def samples(norms: list[list[float]], numel: list[int] | None = None, **kw) -> Samples:
    steps = [1 + 50 * i for i in range(len(norms))]
    sizes = numel or [1] * len(norms[0])
    return Samples(numel=sizes, steps=steps, grad_norms=norms, activations=[], **kw)


# ------------------------------------------------------------------------------ the rules
def test_verdict_compares_the_first_layers_rms_gradient_with_the_last_layers() -> None:
    vanishing = judge(samples([[3e-5, 1e-2, 1.0]] * 3), LIMITS)
    assert vanishing["vanishing"] and not vanishing["exploding"]
    assert vanishing["verdict"][0].startswith("vanishing gradients: layer 1's gradient is 3e-05")
    # Per weight: a layer of 40,000 weights with norm 1 has an RMS gradient of 0.005.
    assert judge(samples([[1.0, 1.0]], numel=[40_000, 1]), LIMITS)["vanishing"]
    healthy = judge(samples([[0.5, 1.0]] * 4), LIMITS)
    assert not healthy["vanishing"] and not healthy["exploding"]
    assert healthy["verdict"][0].startswith("no vanishing or exploding gradients")
    assert judge(samples([[500.0, 1.0]]), LIMITS)["exploding"]


def test_verdict_sees_growth_and_non_finite_norms_as_exploding() -> None:
    grown = judge(samples([[1.0, 1.0], [0.5, 0.5], [1e4, 1e4]]), LIMITS)
    assert grown["exploding"] and "grew 2e+04x in 50 steps (step 51 to 101)" in grown["verdict"][0]
    broken = judge(samples([[1.0, 1.0], [math.inf, math.nan]]), LIMITS)
    assert broken["exploding"]
    assert broken["verdict"][0].startswith("exploding gradients: the gradient norm became non-")
    stop = "training diverged at optimizer step 7 (epoch 0)"  # between two samples
    stopped = judge(Samples([1, 1], [1], [[1.0, 1.0]], [], diverged=stop), LIMITS)
    assert stopped["exploding"] and stopped["verdict"] == [
        f"exploding gradients: the updates blew up and {stop}"
    ]


def test_verdict_on_selu_self_normalization_dead_and_saturated_units() -> None:
    holds = [[[0.02, 0.97, 0.0, math.nan]] * 100]
    report = judge(Samples([1, 1], [1], [[1.0, 1.0]], holds, selu=True), LIMITS)
    assert report["selu_self_normalizing"]
    assert (
        "SELU self-normalization holds: activations mean 0.02, std 0.97 across 100 layers"
        in (report["verdict"])
    )
    drifts = [[[0.0, 1.0, 0.0, math.nan], [0.6, 2.0, 1.0, math.nan]]]
    report = judge(Samples([1, 1], [1], [[1.0, 1.0]], drifts, selu=True), LIMITS)
    assert not report["selu_self_normalizing"]
    assert any("breaks: layer 2's activations have mean 0.60" in line for line in report["verdict"])
    assert any(line.startswith("dead units: layer(s) 2") for line in report["verdict"])
    tails = [[[0.5, 0.49, 0.0, 0.9]]]
    report = judge(Samples([1, 1], [1], [[1.0, 1.0]], tails), LIMITS)
    assert any("saturated units: layer(s) 1" in line for line in report["verdict"])


def test_activation_stats_follow_their_definitions() -> None:
    pre = torch.tensor([[-1.0, 2.0, -3.0], [-0.5, -1.0, 4.0]])
    post = torch.sigmoid(pre * 3)
    saturated = lambda y, eps: (y < eps) | (y > 1 - eps)  # noqa: E731
    mean, std, dead, tails = activation_stats(pre, post, saturated, 0.01).tolist()
    assert mean == pytest.approx(post.mean().item()) and std == pytest.approx(post.std().item())
    assert dead == pytest.approx(1 / 3), "only the first unit is negative on every example"
    assert tails == pytest.approx(3 / 6), "sigmoid(6), sigmoid(-9), sigmoid(12) are within 0.01"


def test_figure_shows_first_and_last_epochs_at_most_ten_lines() -> None:
    lines = by_epoch(list(range(200)), [[1.0, float(e + 1)] for e in range(200)])
    labels = list(lines)
    assert len(labels) == 10 and labels[0] == "epoch 1" and labels[-1] == "epoch 200"
    assert len(by_epoch(list(range(10)), [[1.0]] * 10)) == 10, "the default run: every epoch"
    assert epochs_title(list(range(200))).endswith("(10 of 200 epochs, evenly spaced)")
    assert list(by_epoch([0, 1, 2], [[1.0]] * 3)) == ["epoch 1", "epoch 2", "epoch 3"]
    figure = grad_norm_vs_depth(lines)
    (axes,) = figure.axes
    assert axes.get_yscale() == "log" and len(axes.get_lines()) == 10
    assert list(axes.get_lines()[-1].get_ydata()) == [1.0, 200.0]
    close(figure)
    close(grad_norm_vs_depth({"diverged": [math.nan, math.inf, 0.0]}))  # gaps, no error


def test_bad_settings_are_one_line_config_errors(make_config) -> None:
    with pytest.raises(
        ConfigError, match=r"every_n_steps=0 is out of range; expected .* an integer >= 1"
    ):
        GradientDiagnostics(every_n_steps=0)
    with pytest.raises(ConfigError, match=r"verdict.vanishing is not a threshold; choose from"):
        GradientDiagnostics(verdict={"vanishing": 0.1})
    with pytest.raises(
        ConfigError,
        match=r"verdict.window=-1 is out of range; expected a number of samples, an integer >= 1",
    ):
        GradientDiagnostics(verdict={"window": -1})
    with pytest.raises(ConfigError, match=r"dead_fraction=1.5 is out of range; .* in \(0, 1\]"):
        GradientDiagnostics(verdict={"dead_fraction": 1.5})
    (callback,) = [
        c
        for c in build_callbacks(make_config(["callbacks.gradient_diagnostics.every_n_steps=7"]))
        if isinstance(c, GradientDiagnostics)
    ]
    assert callback.every_n_steps == 7 and callback.thresholds == Thresholds()


# --------------------------------------------------------------------------- real runs
def diagnosed_run(
    make_config, overrides: list[str], *extra: L.Callback, name: str = "run"
) -> tuple[dict, Path]:
    cfg = make_config(["test=false", "trainer.log_every_n_steps=20", *overrides], run=name)
    run(cfg, extra_callbacks=extra)
    out = Path(cfg.paths.output_dir)
    return json.loads((out / VERDICT_FILE).read_text()), out


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    found = {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}
    found["_tensors"] = events.Tags()["tensors"]  # where the custom-scalar layout sits
    found["_histograms"] = events.Tags()["histograms"]
    found["_images"] = events.Tags()["images"]
    return found


@requires_fashion
def test_deep_sigmoid_net_is_judged_vanishing(make_config) -> None:
    report, out = diagnosed_run(
        make_config, ["model.hidden=[32,32,32,32,32,32,32,32]", "model.activation=sigmoid"]
    )
    assert report["vanishing"] and not report["exploding"], report["verdict"]
    assert report["verdict"][0].startswith("vanishing gradients: layer 1's gradient is")
    norms = [v[-1] for v in report["grad_norm_per_epoch"].values()]
    assert norms[0] < 1e-2 * norms[-1], "the gradient shrinks on its way down"
    assert (out / FIGURE_FILE).exists()
    logged = scalars(out)
    assert [s for s, _ in logged["z_grad_norm/layer_1"]] == [1, 20, 40, *range(60, 321, 20)]
    assert {"z_saturated_fraction/layer_8", "z_act_std/layer_1", "z_update_ratio/layer_9"} <= set(
        logged
    )
    assert "custom_scalars__config__" in logged["_tensors"], "one chart per quantity"
    assert (
        "z_weights/layer_1" in logged["_histograms"] and "z_grad_norm_vs_depth" in logged["_images"]
    )
    assert len(logged["z_weight_change/layer_9"]) == 2, "one point per epoch"


@requires_fashion
def test_huge_learning_rate_is_judged_exploding(make_config) -> None:
    overrides = ["model.activation=relu", "optimizer.lr=50"]
    report, _ = diagnosed_run(make_config, [*overrides, "callbacks.divergence=null"])
    assert report["exploding"] and not report["vanishing"], report["verdict"]
    assert report["verdict"][0].startswith("exploding gradients: the gradient norm")
    # With the divergence monitor on (the default) the run stops, and the verdict is still written.
    with pytest.raises(TrainingDiverged):
        diagnosed_run(make_config, overrides, name="stopped")
    stopped = json.loads(
        (Path(make_config(run="stopped").paths.output_dir) / VERDICT_FILE).read_text()
    )
    assert stopped["exploding"], stopped["verdict"]


@requires_fashion
def test_healthy_relu_he_net_is_judged_neither(make_config) -> None:
    report, _ = diagnosed_run(make_config, ["model.activation=relu", "model.init=he_normal"])
    assert not report["vanishing"] and not report["exploding"], report["verdict"]
    assert report["verdict"][0].startswith("no vanishing or exploding gradients")


class ForceNegative(L.Callback):
    """Push the second hidden layer's pre-activations far below zero: every ReLU unit dies."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            pl_module.net[3].weight.zero_()
            pl_module.net[3].bias.fill_(-100.0)


@requires_fashion
def test_dead_fraction_is_one_for_a_layer_forced_negative(make_config) -> None:
    _, out = diagnosed_run(make_config, ["model.activation=relu"], ForceNegative())
    logged = scalars(out)
    assert {v for _, v in logged["z_dead_fraction/layer_2"]} == {1.0}
    assert max(v for _, v in logged["z_dead_fraction/layer_1"]) < 0.5
    assert "z_saturated_fraction/layer_2" not in logged, "ReLU has no flat tails to saturate"


class ClipGradients(L.Callback):
    """Clip the total gradient norm between backward and the optimizer step, as clipping does."""

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.nn.utils.clip_grad_norm_(pl_module.parameters(), max_norm=0.01)


@requires_fashion
def test_gradient_norms_are_logged_before_and_after_clipping(make_config) -> None:
    _, out = diagnosed_run(make_config, ["trainer.max_epochs=1"], ClipGradients())
    logged = scalars(out)
    layers = [f"layer_{i}" for i in (1, 2, 3)]

    def total(quantity: str) -> list[float]:
        per_layer = [[v for _, v in logged[f"z_{quantity}/{n}"]] for n in layers]
        return [math.hypot(*norms) for norms in zip(*per_layer, strict=True)]

    assert min(total("grad_norm")) > 0.01, "logged before clipping"
    # Weights only (the biases share the clipping budget), so at most the clipping norm.
    assert max(total("grad_norm_clipped")) <= 0.01 + 1e-6
    assert len(total("grad_norm_clipped")) == len(total("grad_norm"))


@requires_fashion
def test_switched_off_by_config(make_config) -> None:
    cfg = make_config(["trainer.max_epochs=1", "test=false", "callbacks.gradient_diagnostics=null"])
    run(cfg)
    assert not (Path(cfg.paths.output_dir) / VERDICT_FILE).exists()


# ------------------------------------------------------- the loss of the classic experiment
def test_mse_loss_is_the_mean_squared_error_of_sigmoid_outputs_and_one_hot_targets() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([1, 0])
    expected = (
        sum(
            (torch.sigmoid(logits[i, j]) - float(j == target[i])) ** 2
            for i in range(2)
            for j in range(3)
        )
        / 6
    )
    assert LOSSES["mse"](logits, target).item() == pytest.approx(expected.item())
    with pytest.raises(ConfigError, match=r"loss='hinge' is not valid; choose one of: "):
        Classifier(model={"hidden": [4]}, optimizer={"_target_": "torch.optim.SGD"}, loss="hinge")


def test_vanishing_sigmoid_experiment_composes_the_classic_setup(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=vanishing_sigmoid"], output_dir=tmp_path)
    assert cfg.data.name == "mnist" and cfg.data.batch_size == 100 and cfg.loss == "mse"
    assert list(cfg.model.hidden) == [15, 15, 15, 15] and cfg.model.activation == "sigmoid"
    assert cfg.optimizer.lr == 0.2 and cfg.optimizer.momentum == 0 and cfg.trainer.max_epochs == 200
    assert cfg.callbacks.gradient_diagnostics is not None


@pytest.mark.slow
def test_bad_diagnostics_setting_stops_train_py_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "callbacks.gradient_diagnostics.every_n_steps=0"],
        cwd=ROOT,
        env={**os.environ, "DNNLAB_ROOT": str(tmp_path), "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "callbacks.gradient_diagnostics.every_n_steps=0 is out of range; expected" in line


# ------------------------------------------------------ what TensorBoard shows (tiny data)
def diagnosed_tiny_task(folder: Path) -> list[str]:
    """conftest's tiny task with the diagnostics and TensorBoard on."""
    off = ("callbacks.gradient_diagnostics=", "logger=")
    return [o for o in tiny_task(folder) if not o.startswith(off)]


def layout_charts(folder: Path) -> dict[str, list[str]]:
    """The custom-scalar layout a run wrote: section title -> chart titles."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    (event,) = events.Tensors("custom_scalars__config__")
    proto = layout_pb2.Layout()
    proto.ParseFromString(event.tensor_proto.string_val[0])
    return {c.title: [chart.title for chart in c.chart] for c in proto.category}


@pytest.mark.parametrize(
    ("activation", "dead"),
    [("relu", True), ("leaky_relu", False), ("elu", False), ("selu", False)],
)
def test_histograms_layout_and_dead_units_fit_the_run(
    tmp_path: Path, make_config, activation: str, dead: bool
) -> None:
    overrides = [
        *diagnosed_tiny_task(tmp_path / "data"),
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=2",
        f"model.activation={activation}",
    ]
    cfg = make_config(overrides, quick=False)
    run(cfg)
    out = Path(cfg.paths.output_dir)
    logged = scalars(out)
    for kind in ("weights", "gradients", "activations"):  # every epoch, every layer
        assert f"z_{kind}/layer_1" in logged["_histograms"], kind
    assert "z_activations/layer_3" not in logged["_histograms"], "the output layer has none"
    assert ("z_dead_fraction/layer_1" in logged) is dead, "only a hard zero can die"
    charts = layout_charts(out)
    shown = [title.split(" ")[0] for titles in charts.values() for title in titles]
    assert ("dead_fraction" in shown) is dead
    assert "saturated_fraction" not in shown and "grad_norm_clipped" not in shown, "empty charts"
    assert {"grad_norm", "update_ratio", "act_mean"} <= set(shown)


def test_learning_curves_sort_first_and_sit_at_optimizer_steps(tmp_path: Path, make_config) -> None:
    overrides = [
        *diagnosed_tiny_task(tmp_path / "data"),
        "test=true",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=2",
        "clipping=norm",
    ]
    cfg = make_config(overrides, quick=False)
    run(cfg)
    logged = scalars(Path(cfg.paths.output_dir))
    tags = [t for t in logged if not t.startswith("_")]
    groups = sorted({t.split("/", 1)[0] for t in tags})  # TensorBoard sorts groups by name
    assert groups[:3] == ["test", "train", "val"], groups
    assert "epoch" not in logged, "Lightning adds epoch only where no step is logged"
    last = logged["train/loss"][-1][0]
    assert last == 8, "2 epochs of 4 steps"
    assert [s for s, _ in logged["test/acc"]] == [last], "the test at the last optimizer step"
    assert (
        "grad_norm_clipped (after clipping)"
        in layout_charts(Path(cfg.paths.output_dir))["gradients per layer"]
    )


def test_deep_figure_thins_its_ticks_and_keeps_the_legend_off_the_lines() -> None:
    lines = {f"epoch {e}": [1.0 + e] * 101 for e in range(1, 4)}
    figure = grad_norm_vs_depth(lines)
    (axes,) = figure.axes
    ticks = [t for t in axes.get_xticks() if 1 <= t <= 101]
    assert 3 <= len(ticks) <= 12 and all(float(t).is_integer() for t in ticks)
    figure.canvas.draw()
    legend = axes.get_legend().get_window_extent()
    assert legend.x0 >= axes.get_window_extent().x1, "beside the axes, not over layer 1"
    close(figure)
    shallow = grad_norm_vs_depth({"epoch 1": [1.0, 2.0, 3.0]})
    assert list(shallow.axes[0].get_xticks()) == [1, 2, 3]
    close(shallow)
