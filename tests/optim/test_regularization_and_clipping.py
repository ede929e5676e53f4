"""Weight penalties, max-norm and gradient clipping: definitions, and their effect in training."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from conftest import requires_fashion
from dnnlab.errors import ConfigError
from dnnlab.optim.clipping import GradientClipping
from dnnlab.optim.regularization import Regularization
from dnnlab.train.run import run

# 48 optimizer steps, no sanity check, no checkpoint: the effect, not the bookkeeping.
SHORT = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=48",
    "trainer.num_sanity_val_steps=0",
    "callbacks.model_checkpoint=null",
    "test=false",
]


class Recorder(Callback):
    """Sees every optimizer step's gradients as the optimizer will use them, and the weights."""

    def __init__(self) -> None:
        self.global_norms: list[float] = []
        self.largest_parameter_norms: list[float] = []
        self.largest_components: list[float] = []
        self.module: L.LightningModule | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        norms = torch.stack([g.norm() for g in grads])
        self.global_norms.append(norms.norm().item())
        self.largest_parameter_norms.append(norms.max().item())
        self.largest_components.append(max(g.abs().max().item() for g in grads))

    def on_train_end(self, trainer, pl_module) -> None:
        self.module = pl_module


def short_run(make_config, *overrides: str, run_name: str = "run") -> Recorder:
    recorder = Recorder()
    run(make_config([*SHORT, *overrides], run=run_name), extra_callbacks=[recorder])
    return recorder


def kernels(module: L.LightningModule) -> list[torch.Tensor]:
    return [m.weight for m in module.net if isinstance(m, nn.Linear)]


# ------------------------------------------------------------------------- definitions
def test_penalty_is_keras_l1_plus_l2_over_every_kernel() -> None:
    layers = [nn.Linear(4, 3), nn.Linear(3, 2)]
    expected = sum(0.1 * m.weight.abs().sum() + 0.01 * m.weight.square().sum() for m in layers)
    penalty = Regularization(l1=0.1, l2=0.01).penalty(layers)
    assert penalty.item() == pytest.approx(expected.item())
    assert Regularization(l2=0.01).penalty(layers).item() == pytest.approx(
        sum(0.01 * m.weight.square().sum().item() for m in layers)
    )


def test_max_norm_rescales_only_the_rows_above_the_limit() -> None:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]]))  # norms 5 and 0.5
        layer.bias.copy_(torch.tensor([1.0, 0.0]))
    Regularization(max_norm=1.0).constrain([layer, nn.Linear(2, 1)])  # then the head
    assert torch.allclose(layer.weight, torch.tensor([[0.6, 0.8, 0.0], [0.3, 0.4, 0.0]]), atol=1e-6)
    assert torch.equal(layer.bias, torch.tensor([1.0, 0.0])), "biases untouched by default"
    Regularization(max_norm=0.5, max_norm_biases=True, max_norm_head=True).constrain([layer])
    joint = torch.cat([layer.weight, layer.bias[:, None]], dim=1).norm(dim=1)
    assert torch.allclose(joint, torch.tensor([0.5, 0.5]), atol=1e-6), "bias in the unit's vector"


def test_max_norm_outgoing_bounds_each_column() -> None:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(2.0)
    Regularization(max_norm=1.0, max_norm_axis="outgoing", max_norm_head=True).constrain([layer])
    assert torch.allclose(layer.weight.norm(dim=0), torch.ones(3), atol=1e-6)


def test_max_norm_leaves_the_output_layer_alone_unless_asked() -> None:
    """The book's model: MaxNormDense(300), MaxNormDense(100), then a plain Dense(10) head."""
    hidden, head = nn.Linear(3, 2), nn.Linear(2, 2)
    with torch.no_grad():
        hidden.weight.fill_(2.0)
        head.weight.fill_(2.0)
    Regularization(max_norm=1.0).constrain([hidden, head])
    assert torch.allclose(hidden.weight.norm(dim=1), torch.ones(2), atol=1e-6)
    assert torch.equal(head.weight, torch.full((2, 2), 2.0)), "the head is not constrained"
    Regularization(max_norm=1.0, max_norm_head=True).constrain([hidden, head])
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(2), atol=1e-6)


def test_max_norm_leaves_frozen_kernels_unchanged() -> None:
    """Keras constrains only the variables the optimizer just updated: frozen ones stay."""
    frozen, trained, head = nn.Linear(3, 2), nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        for layer in (frozen, trained):
            layer.weight.fill_(2.0)
            layer.bias.fill_(0.0)
    frozen.requires_grad_(False)
    Regularization(max_norm=1.0, max_norm_biases=True).constrain([frozen, trained, head])
    assert torch.equal(frozen.weight, torch.full((2, 3), 2.0))
    assert torch.allclose(trained.weight.norm(dim=1), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize(
    ("cls", "settings", "message"),
    [
        (
            Regularization,
            {"l2": -1},
            r"regularization.l2=-1 is out of range; expected a penalty factor >= 0",
        ),
        (
            Regularization,
            {"max_norm": 0},
            r"regularization.max_norm=0 is out of range; "
            r"expected a max-norm radius > 0, or null \(no constraint\)",
        ),
        (Regularization, {"max_norm_axis": "rows"}, r"max_norm_axis='rows' is not valid; choose"),
        (
            Regularization,
            {"max_norm": 1, "max_norm_axis": "outgoing", "max_norm_biases": True},
            r"max_norm_biases=true needs regularization.max_norm_axis=incoming",
        ),
        (
            Regularization,
            {"max_norm": 1, "max_norm_head": "no"},
            r"regularization.max_norm_head='no' must be true or false",
        ),
        (GradientClipping, {"kind": "l2"}, r"clipping.kind='l2' is not valid; choose one of: cli"),
        (
            GradientClipping,
            {"kind": "norm", "threshold": 0},
            r"clipping.threshold=0 is out of range; expected a clipping threshold > 0",
        ),
        (
            GradientClipping,
            {"kind": "value", "threshold": None},
            r"clipping.threshold=null is out of range; expected a clipping threshold > 0",
        ),
    ],
)
def test_bad_settings_are_one_clear_line(cls, settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cls.from_config(settings)


# ------------------------------------------------------------------------ in training
@pytest.mark.slow
@requires_fashion
def test_l2_shrinks_the_weights_and_its_penalty_is_logged(make_config) -> None:
    plain = short_run(make_config, "regularization=none", run_name="none")
    overrides = ["regularization=l2", "regularization.l2=0.1", "trainer.log_every_n_steps=8"]
    cfg = make_config([*SHORT, *overrides], run="l2")
    recorder = Recorder()
    run(cfg, extra_callbacks=[recorder])
    size = [sum(w.square().sum().item() for w in kernels(r.module)) for r in (plain, recorder)]
    assert size[1] < 0.8 * size[0], f"sum of squared kernels: none {size[0]:.1f}, l2 {size[1]:.1f}"
    events = EventAccumulator(str(Path(cfg.paths.output_dir)))
    events.Reload()
    penalties = [e.value for e in events.Scalars("train/penalty")]
    assert [e.step for e in events.Scalars("train/penalty")][:2] == [8, 16], "train/loss cadence"
    assert penalties[-1] < penalties[0], "the penalty falls as the weights shrink"


@pytest.mark.slow
@requires_fashion
def test_max_norm_bounds_every_hidden_units_weights_after_training(make_config) -> None:
    recorder = short_run(make_config, "regularization=max_norm", "regularization.max_norm=0.5")
    *hidden, head = kernels(recorder.module)
    for weight in hidden:
        assert weight.norm(dim=1).max().item() <= 0.5 + 1e-5
    assert head.norm(dim=1).max().item() > 0.5, "the output layer is a plain Dense (the book)"
    # without the constraint He-initialized rows start near sqrt(2) and stay far above 0.5
    free = short_run(make_config, "regularization=none", run_name="free")
    assert kernels(free.module)[0].norm(dim=1).max().item() > 1.0


@pytest.mark.slow
@requires_fashion
@pytest.mark.parametrize("kind", ["none", "value", "norm", "clipnorm"])
def test_clipping_bounds_what_the_optimizer_sees(make_config, kind: str) -> None:
    t = 0.05
    recorder = short_run(make_config, f"clipping={kind}", f"clipping.threshold={t}")
    norms, per_param = recorder.global_norms, recorder.largest_parameter_norms
    assert len(norms) == 48, "every optimizer step"
    if kind == "none":
        assert max(norms) > 5 * t, "unclipped gradients are far above the threshold"
    elif kind == "value":
        assert max(recorder.largest_components) <= t + 1e-7
        assert max(norms) > t, "each component clipped, not the norm"
    elif kind == "norm":
        assert max(norms) <= t * (1 + 1e-5)
        assert min(norms) > 0.9 * t, "rescaled to the threshold, not zeroed"
    else:  # Keras' clipnorm: each parameter on its own
        assert max(per_param) <= t * (1 + 1e-5)
        assert max(norms) > 1.5 * t, "the global norm may exceed it"
