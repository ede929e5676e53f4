"""What ``parity=keras`` switches besides values, checked without Keras installed: the
optimizers' checkpoints, BatchNorm's moving variance, max-norm's rescaling, the sigmoid head."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import OPTIMIZERS
from dnnlab.app.compose import compose_config
from dnnlab.errors import ConfigError
from dnnlab.model import build_mlp
from dnnlab.model.hidden import BiasedBatchNorm1d
from dnnlab.optim.optimizers import build_optimizer, check_optimizer, state_tensors
from dnnlab.optim.regularization import Regularization
from dnnlab.train.module import Classifier
from dnnlab.train.run import plain


def steps(optimizer: torch.optim.Optimizer, param: nn.Parameter, grads: list[torch.Tensor]) -> None:
    for i, grad in enumerate(grads):
        param.grad = grad
        optimizer.step()
        optimizer.param_groups[0]["lr"] *= 0.9  # a schedule moves the LR between steps
        assert i >= 0


@pytest.mark.parametrize("option", OPTIMIZERS)
def test_keras_optimizers_resume_from_a_weights_only_checkpoint(option: str) -> None:
    node = plain(compose_config(["parity=keras", f"optimizer={option}"]).optimizer)
    assert node["_target_"].startswith("dnnlab.optim.keras.")
    grads = [torch.randn(5, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    straight = nn.Parameter(torch.ones(5))
    steps(build_optimizer(node, [straight]), straight, grads)

    resumed = nn.Parameter(torch.ones(5))
    first = build_optimizer(node, [resumed])
    steps(first, resumed, grads[:3])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = build_optimizer(node, [resumed])
    second.load_state_dict(torch.load(buffer, weights_only=True))
    steps(second, resumed, grads[3:])
    assert torch.equal(straight, resumed)
    state = next(iter(first.state.values()))
    assert state_tensors(node) == sum(isinstance(v, torch.Tensor) for v in state.values())


def test_keras_sgd_refuses_dampening_in_one_line() -> None:
    overrides = ["parity=keras", "optimizer=momentum", "optimizer.dampening=0.1"]
    node = plain(compose_config(overrides).optimizer)
    for check in (check_optimizer, lambda n: build_optimizer(n, [nn.Parameter(torch.ones(2))])):
        with pytest.raises(ConfigError, match=r"optimizer.dampening=0.1 has no Keras equivalent"):
            check(node)  # check_optimizer: before any data is read


def test_batch_norm_moving_variance_is_biased_with_keras_parity_only() -> None:
    x = torch.randn(8, 3)
    layers = {}
    for parity in ("pytorch", "keras"):
        model = plain(compose_config([f"parity={parity}", "model.batch_norm=after"]).model)
        model["bn_momentum"] = 1.0  # the running statistics become the batch's
        net = build_mlp(3, 2, **{**model, "hidden": [3], "activation": "none"})
        layers[parity] = next(m for m in net if isinstance(m, nn.BatchNorm1d))
    assert type(layers["pytorch"]) is nn.BatchNorm1d  # parity=pytorch: torch's own layer
    assert isinstance(layers["keras"], BiasedBatchNorm1d)
    for parity, correction in (("pytorch", 1), ("keras", 0)):
        layer = layers[parity].train()
        out = layer(x)
        assert torch.allclose(layer.running_var, x.var(0, correction=correction))
        assert torch.allclose(layer.running_mean, x.mean(0))
        reference = F.batch_norm(x, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
        assert torch.equal(out, reference)
    assert layers["keras"].state_dict().keys() == layers["pytorch"].state_dict().keys()


def test_keras_max_norm_scales_every_vector_as_keras_max_norm() -> None:
    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 0, 0, 0], [0.3, 0, 0, 0], [0, 0.4, 0, 0]]))
    Regularization(max_norm=1.0, max_norm_head=True, max_norm_rescale="all").constrain([layer])
    expected = torch.tensor([1.0 / (3 + 1e-7), 0.3 / (0.3 + 1e-7), 0.4 / (0.4 + 1e-7)])
    assert torch.allclose(layer.weight.norm(dim=1), expected * torch.tensor([3.0, 0.3, 0.4]))
    assert layer.weight[1, 0] < 0.3  # a short vector shrinks too (by 1e-7 / norm)
    with pytest.raises(
        ConfigError,
        match=r"regularization.max_norm_rescale='x' is not valid; choose one of: all, over_radius",
    ):
        Regularization(max_norm=1.0, max_norm_rescale="x")


def test_binary_cross_entropy_gives_the_book_sigmoid_head() -> None:
    module = Classifier(
        model={"hidden": [4]},
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1},
        input_shape=[6],
        num_classes=2,
        loss="binary_cross_entropy",
    )
    head = [m for m in module.net if isinstance(m, nn.Linear)][-1]
    assert head.out_features == 1  # Dense(1, activation="sigmoid")
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 1, 0, 1])
    logits = module(x)
    z = head(module.net[:-2](x))[:, 0]
    assert torch.allclose(logits.softmax(-1)[:, 1], torch.sigmoid(z))
    expected = F.binary_cross_entropy(torch.sigmoid(z), y.float())
    assert torch.allclose(module.loss_fn(logits, y), expected, atol=1e-6)
    assert torch.equal(logits.argmax(-1), (z > 0).long())  # accuracy: sigmoid > 0.5
    module.val_acc.update(logits, y)  # the two-class metrics take the head's output
    assert 0 <= module.val_acc.compute() <= 1


def test_binary_cross_entropy_needs_two_classes() -> None:
    with pytest.raises(ConfigError, match=r"loss=binary_cross_entropy needs a two-class task"):
        Classifier(
            model={"hidden": [4]},
            optimizer={"_target_": "torch.optim.SGD"},
            input_shape=[6],
            num_classes=10,
            loss="binary_cross_entropy",
        )
