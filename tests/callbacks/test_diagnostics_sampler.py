"""LayerSampler on its own: a tiny network, no Trainer; its figures are torch's own."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dnnlab.callbacks.diagnostics.layers import SATURATION, activation_layers, activation_stats
from dnnlab.callbacks.diagnostics.sampler import LayerSampler
from dnnlab.model import dense_layers

EPS = 0.01


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.Sigmoid(), nn.Linear(3, 2))


def sampler_of(net: nn.Module) -> LayerSampler:
    return LayerSampler(dense_layers(net), activation_layers(net), EPS)


def hooked(net: nn.Module) -> bool:
    return any(m._forward_hooks for m in net.modules())


def test_a_sample_holds_torchs_norms_ratios_and_activation_statistics() -> None:
    net, x = tiny_net(), torch.randn(8, 4)
    sampler = sampler_of(net)
    assert not hooked(net), "no hooks before a sample is due"
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for index, module in enumerate(activation_layers(net)):  # what the activations saw
        module.register_forward_hook(lambda m, i, o, k=index: seen.__setitem__(k, (i[0], o)))
    own = {m: dict(m._forward_hooks) for m in net.modules()}

    sampler.hook_next_forward()
    net(x).square().sum().backward()
    before = [layer.weight.grad.norm().item() for layer in dense_layers(net)]
    sampler.take_gradients(7)
    assert {m: dict(m._forward_hooks) for m in net.modules()} == own, "its hooks are gone"
    nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.1)
    clipped = [layer.weight.grad.norm().item() for layer in dense_layers(net)]
    sampler.take_clipped()
    weights = [layer.weight.detach().clone() for layer in dense_layers(net)]
    torch.optim.SGD(net.parameters(), lr=0.5).step()
    sampler.finish_update()
    assert sampler.waiting == 1

    (sample,) = sampler.collect()
    assert sampler.waiting == 0 and sampler.collect() == []
    assert sample.step == 7
    assert sample.grad_norm == pytest.approx(before)
    assert sample.grad_norm_clipped == pytest.approx(clipped)
    assert math.hypot(*clipped) <= 0.1 + 1e-6 < math.hypot(*before)
    ratios = [
        ((layer.weight - w).norm() / w.norm()).item()
        for layer, w in zip(dense_layers(net), weights, strict=True)
    ]
    assert sample.update_ratio == pytest.approx(ratios)
    expected = [
        activation_stats(*seen[0], None, EPS, dies=True).tolist(),
        activation_stats(*seen[1], SATURATION[nn.Sigmoid], EPS, dies=False).tolist(),
    ]
    for got, want in zip(sample.activations, expected, strict=True):
        assert got == pytest.approx(want, nan_ok=True)
    for (_, post), (mean, std, *_) in zip(seen.values(), sample.activations, strict=True):
        assert (mean, std) == pytest.approx((post.mean().item(), post.std().item()))
    assert math.isnan(sample.activations[0][3]) and math.isnan(sample.activations[1][2])
    assert sampler.saturates == [False, True] and sampler.dies == [True, False]
    assert sampler.sizes == [20, 15, 6] and not sampler.selu


def test_steps_that_are_not_sampled_leave_no_trace() -> None:
    net = tiny_net()
    sampler = sampler_of(net)
    sampler.take_clipped()  # no sample began: nothing to complete
    sampler.finish_update()
    net(torch.randn(2, 4)).sum().backward()
    sampler.take_gradients(1)  # the pass was not hooked: no activation statistics
    sampler.take_clipped()
    (sample,) = sampler.collect()
    assert sample.activations is None and sample.update_ratio is None, "the update never came"
    assert not hooked(net)


def test_an_evaluation_pass_is_not_sampled_and_outputs_are_kept_only_when_asked() -> None:
    net = tiny_net()
    sampler = sampler_of(net)
    sampler.hook_next_forward()
    with torch.no_grad():
        net.eval()(torch.randn(2, 4))
    assert sampler.unhook() is None and not hooked(net), "only training passes count"
    net.train()
    sampler.hook_next_forward()
    sampler.hook_next_forward()  # a second call holds no second set of hooks
    assert sum(len(m._forward_hooks) for m in net.modules()) == 2
    net(torch.randn(2, 4))
    assert sampler.unhook() is not None and sampler.outputs == {}
    sampler.keep_outputs = True
    sampler.hook_next_forward()
    out = net[:2](torch.randn(3, 4))
    sampler.unhook()
    assert torch.equal(sampler.outputs[0], out.detach())


def test_non_finite_gradients_are_the_sample_of_a_run_stopped_by_divergence() -> None:
    net = tiny_net()
    sampler = sampler_of(net)
    net(torch.randn(2, 4)).sum().backward()
    sampler.take_broken(3)
    assert sampler.waiting == 0, "finite gradients are no evidence"
    net[0].weight.grad[0, 0] = math.inf
    sampler.take_broken(3)
    (sample,) = sampler.collect()
    assert sample.step == 3 and math.isinf(sample.grad_norm[0])
    assert sample.activations is None and sample.update_ratio is None


def test_weight_changes_are_mean_absolute_changes_since_a_copy() -> None:
    net = tiny_net()
    sampler = sampler_of(net)
    start = sampler.weights()
    with torch.no_grad():
        net[2].weight.add_(0.5)
    assert sampler.mean_changes(start) == pytest.approx([0.0, 0.5, 0.0])
    assert sampler.gradients() == [None, None, None]
