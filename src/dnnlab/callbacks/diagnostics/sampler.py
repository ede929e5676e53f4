"""What one sampled optimizer step shows of a network's layers: torch only, no Lightning.

:class:`LayerSampler` computes the statistics; *when* a step is sampled is the callback's
decision (:mod:`dnnlab.callbacks.diagnostics.callback`). A sample is taken in the order of a
training step: the activation hooks see the forward pass (they are attached for that one pass
only: hooks slow every call), the gradient norms are read after the backward pass and again after
clipping, and the update ratio once the optimizer has stepped. Until :meth:`LayerSampler.collect`
everything stays on the device, so the caller chooses when the one host sync happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from dnnlab.callbacks.diagnostics.layers import DYING, SATURATION, activation_stats

# What activation_stats returns per hidden layer, in its order.
ACTIVATION_STATS = ("act_mean", "act_std", "dead_fraction", "saturated_fraction")


@dataclass(frozen=True)
class Sample:
    """One sampled optimizer step, per dense layer, as host floats."""

    step: int
    grad_norm: list[float]  # L2 norm of each weight gradient, before clipping
    grad_norm_clipped: list[float]  # ... after it (equal to grad_norm where nothing was clipped)
    update_ratio: list[float] | None  # |update| / |weights|; None: the update never came
    activations: list[list[float]] | None  # ACTIVATION_STATS per hidden layer; None: not seen


def grad_norms(layers: Sequence[nn.Linear]) -> Tensor:
    """L2 norm of each layer's weight gradient, as one device tensor (0 where there is none)."""
    return torch.stack(
        [
            torch.linalg.vector_norm(w.grad) if w.grad is not None else w.new_zeros(())
            for w in (layer.weight for layer in layers)
        ]
    )


class LayerSampler:
    """Gradient norms, update ratios and activation statistics of the sampled steps.

    ``layers`` are the dense layers in forward order (the last is the output layer),
    ``activations`` the activation modules, one per hidden layer; ``saturation_eps`` is how close
    to a sigmoid/tanh asymptote an output counts as saturated.
    """

    def __init__(
        self,
        layers: Sequence[nn.Linear],
        activations: Sequence[nn.Module],
        saturation_eps: float,
    ) -> None:
        self.layers = list(layers)
        self.activations = list(activations)
        self.saturation_eps = saturation_eps
        self.saturation = [SATURATION.get(type(a)) for a in self.activations]
        self.saturates = [test is not None for test in self.saturation]
        self.dies = [isinstance(a, DYING) for a in self.activations]
        # Keep a copy of each hidden layer's output on a sampled pass (for histograms).
        self.keep_outputs = False
        self.outputs: dict[int, Tensor] = {}  # the last sampled pass's, by hidden layer
        self._hooks: list[RemovableHandle] = []
        self._eager = ExitStack()  # holds torch.compile's force_eager stance while hooks are held
        self._captured: dict[int, Tensor] = {}
        self._taking: dict[str, Any] | None = None  # the sample between backward and the step
        self._pending: list[dict[str, Any]] = []  # taken, still on the device
        self._before_update: list[Tensor] | None = None  # the weights the last sample's step had

    @property
    def sizes(self) -> list[int]:
        """The number of weights of each layer (the verdict compares RMS gradients)."""
        return [layer.weight.numel() for layer in self.layers]

    @property
    def selu(self) -> bool:
        """Whether every hidden layer is SELU (whose self-normalization the verdict judges)."""
        return bool(self.activations) and all(isinstance(a, nn.SELU) for a in self.activations)

    @property
    def waiting(self) -> int:
        """How many samples were taken since the last :meth:`collect`."""
        return len(self._pending)

    # ------------------------------------------------------------------ activation hooks
    def hook_next_forward(self) -> None:
        """Hook the activations for the next forward pass only (hooks slow every call).

        Under ``compile=true`` the network's compiled forward does not see hooks added after it
        was compiled, so that one pass runs eagerly (``force_eager``): the other steps keep the
        compiled forward without a per-call check for hooks.
        """
        if self._hooks:
            return
        self._captured.clear()
        for index, module in enumerate(self.activations):
            self._hooks.append(module.register_forward_hook(self._capture(index)))
        self._eager.enter_context(torch.compiler.set_stance("force_eager"))

    def _capture(self, index: int) -> Any:
        saturated, dies = self.saturation[index], self.dies[index]

        @torch.compiler.disable  # should anything compile around it: never trace our state
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if module.training:
                pre = inputs[0]
                self._captured[index] = activation_stats(
                    pre, output, saturated, self.saturation_eps, dies
                )
                if self.keep_outputs:  # a copy: a later in-place layer must not change it
                    self.outputs[index] = output.detach().clone()

        return hook

    def unhook(self) -> Tensor | None:
        """Remove the hooks; the statistics of the pass they saw (``None``: it saw none)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._eager.close()  # back to the stance before: compiled code runs compiled again
        if self.activations and len(self._captured) == len(self.activations):
            return torch.stack([self._captured[i] for i in range(len(self.activations))])
        return None

    # ------------------------------------------------------------------- a sampled step
    def take_gradients(self, step: int) -> None:
        """After the backward pass of ``step``: its gradient norms and the hooked activations."""
        self._taking = {"step": step, "pre": grad_norms(self.layers), "act": self.unhook()}

    def take_clipped(self) -> None:
        """Just before the optimizer steps (clipping, if any, is done): the gradient norms
        again, and the weights the update will be measured against. A no-op unless
        :meth:`take_gradients` began a sample."""
        if self._taking is None:
            return
        self._taking["post"] = grad_norms(self.layers)
        self._before_update = [layer.weight.detach().clone() for layer in self.layers]
        self._pending.append(self._taking)
        self._taking = None

    def finish_update(self) -> None:
        """Once the sampled step's update is done: its size relative to the weights before it.
        A no-op unless a sampled step's update is waiting to be measured."""
        if self._before_update is None:
            return
        self._pending[-1]["update"] = torch.stack(
            [
                torch.linalg.vector_norm(layer.weight.detach() - before)
                / torch.linalg.vector_norm(before).clamp_min(1e-12)
                for layer, before in zip(self.layers, self._before_update, strict=True)
            ]
        )
        self._before_update = None

    def take_broken(self, step: int) -> None:
        """The gradients as they are now, as a sample at ``step``, when any is non-finite: the
        evidence of a run stopped by divergence between two samples."""
        norms = grad_norms(self.layers)
        if not bool(norms.isfinite().all()):
            self._pending.append({"step": step, "pre": norms, "post": norms, "act": None})

    def collect(self) -> list[Sample]:
        """The samples taken since the last call, moved to the host (one sync)."""
        samples = [
            Sample(
                step=record["step"],
                grad_norm=record["pre"].tolist(),
                grad_norm_clipped=record["post"].tolist(),
                update_ratio=record["update"].tolist() if "update" in record else None,
                activations=record["act"].tolist() if record["act"] is not None else None,
            )
            for record in self._pending
        ]
        self._pending.clear()
        return samples

    # ----------------------------------------------------------------- between samples
    def weights(self) -> list[Tensor]:
        """A copy of each layer's weights (what :meth:`mean_changes` measures against)."""
        return [layer.weight.detach().clone() for layer in self.layers]

    def mean_changes(self, since: Sequence[Tensor]) -> list[float]:
        """The mean absolute change of each layer's weights from ``since``."""
        return torch.stack(
            [
                (layer.weight.detach() - start).abs().mean()
                for layer, start in zip(self.layers, since, strict=True)
            ]
        ).tolist()

    def gradients(self) -> list[Tensor | None]:
        """Each layer's weight gradient (references: the next backward makes new tensors)."""
        return [layer.weight.grad for layer in self.layers]
