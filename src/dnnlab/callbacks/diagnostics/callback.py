"""``GradientDiagnostics``: per-layer gradients, updates and activations, a figure and a verdict.

Cheap by design under the module's manual optimization, where ``on_after_backward`` and
``on_before_optimizer_step`` fire for every optimizer step: on a step that is not sampled they do
an integer test and return. On a sampled step (the first, then every ``every_n_steps``) the
gradient norms and the activation statistics (from forward hooks that live for that one step
only) stay on the device; they reach the host and the loggers once per Lightning batch (a block
of steps), so there is no host sync per step.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from dnnlab.callbacks.diagnostics.figures import by_epoch, close, epochs_title, grad_norm_vs_depth
from dnnlab.callbacks.diagnostics.layers import (
    DYING,
    SATURATION,
    activation_layers,
    activation_stats,
    layer_names,
)
from dnnlab.callbacks.diagnostics.verdict import Samples, Thresholds, judge
from dnnlab.errors import TrainingDiverged
from dnnlab.files import atomic_write_text
from dnnlab.model import dense_layers
from dnnlab.ranges import integers, interval
from dnnlab.scalars import AFTER_CURVES, log_scalars
from dnnlab.settings import check_fields, setting

log = logging.getLogger(__name__)

KEY = "callbacks.gradient_diagnostics"


@dataclass(frozen=True)
class DiagnosticsSettings:
    """Its settings (also checked before any data is read: dnnlab.app.checks)."""

    every_n_steps: int = setting(
        rule=integers("a sampling period in optimizer steps", 1), doc="sample one step in this many"
    )
    histogram_every_n_epochs: int = setting(
        rule=integers("a period in epochs (0: never)", 0), doc="weight and gradient histograms"
    )
    figure_every_n_epochs: int = setting(
        rule=integers("a period in epochs (0: never)", 0), doc="gradient norm vs depth figure"
    )
    saturation_eps: float = setting(
        rule=interval("a saturation margin", 0, 0.5, "()"), doc="sigmoid/tanh tail width"
    )
    key: InitVar[str] = KEY

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)


ACTIVATION_STATS = ("act_mean", "act_std", "dead_fraction", "saturated_fraction")
PREFIX = AFTER_CURVES  # every diagnostics tag: its groups sort after the learning curves
VERDICT_FILE = "gradient_diagnostics.json"
FIGURE_FILE = "grad_norm_vs_depth.png"
# What a checkpoint keeps of the samples the verdict and the figures are made from.
HISTORY = (
    "steps",
    "grad_norms",
    "activation_history",
    "epochs",
    "epoch_grad_norms",
    "weight_changes",
)


def tag(quantity: str, layer: str) -> str:
    """The TensorBoard tag of one layer's ``quantity``: ``z_grad_norm/layer_1``."""
    return f"{PREFIX}{quantity}/{layer}"


def layout(quantities: list[str]) -> dict[str, dict[str, list[Any]]]:
    """TensorBoard's custom-scalar layout of the quantities this run logs: one chart per
    quantity, one line per layer (tag regexes); a chart nothing fills is left out."""
    titles = {
        "grad_norm": "grad_norm (before clipping)",
        "grad_norm_clipped": "grad_norm_clipped (after clipping)",
        "update_ratio": "update_ratio (|update| / |weights|)",
        "weight_change": "weight_change (mean |change| per epoch)",
    }
    charts = {
        "gradients per layer": [q for q in titles if q in quantities],
        "activations per layer": [q for q in ACTIVATION_STATS if q in quantities],
    }
    return {
        section: {titles.get(q, q): ["Multiline", [rf"{PREFIX}{q}/.*"]] for q in shown}
        for section, shown in charts.items()
        if shown
    }


def _norms(layers: list[nn.Linear]) -> Tensor:
    """L2 norm of each layer's weight gradient, as one device tensor (0 where there is none)."""
    return torch.stack(
        [
            torch.linalg.vector_norm(w.grad) if w.grad is not None else w.new_zeros(())
            for w in (layer.weight for layer in layers)
        ]
    )


class GradientDiagnostics(Callback):
    """Make vanishing and exploding gradients visible, layer by layer, and say which it was.

    Logged per dense layer at sampled steps: ``grad_norm`` (before clipping), ``grad_norm_clipped``
    (when clipping changed the gradient), ``update_ratio`` (|weight update| / |weights|) and, per
    hidden layer, ``act_mean``, ``act_std``, ``dead_fraction``, ``saturated_fraction``; per epoch
    ``weight_change`` (mean absolute change of the weights over the epoch), weight and gradient
    histograms and the gradient-norm-vs-depth figure. At the end of fit, the verdict goes to the
    log and, with the per-layer figures behind it, to ``gradient_diagnostics.json`` in ``dirpath``.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        histogram_every_n_epochs: int = 1,
        figure_every_n_epochs: int = 0,
        saturation_eps: float = 0.01,
        dirpath: str | None = None,
        verdict: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        DiagnosticsSettings(
            every_n_steps, histogram_every_n_epochs, figure_every_n_epochs, saturation_eps
        )
        self.every_n_steps = every_n_steps
        self.histogram_every_n_epochs = histogram_every_n_epochs
        self.figure_every_n_epochs = figure_every_n_epochs
        self.saturation_eps = saturation_eps
        self.dirpath = dirpath
        self.thresholds = Thresholds.from_config(verdict)
        self.verdict: dict[str, Any] = {}
        self._restored: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ set-up
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.layers = dense_layers(pl_module)
        self.activations = activation_layers(pl_module)
        self.names = layer_names(len(self.layers))
        self.saturation = [SATURATION.get(type(a)) for a in self.activations]
        self.dies = [isinstance(a, DYING) for a in self.activations]
        self.steps: list[int] = []
        self.grad_norms: list[list[float]] = []
        self.activation_history: list[list[list[float]]] = []
        self.epochs: list[int] = []
        self.epoch_grad_norms: list[list[float]] = []
        self.weight_changes: list[list[float]] = []
        self._pending: list[dict[str, Any]] = []
        self._record: dict[str, Any] | None = None
        self._hooks: list[RemovableHandle] = []
        self._eager = ExitStack()  # holds torch.compile's force_eager stance while hooks are held
        self._captured: dict[int, Tensor] = {}
        self._before_update: list[Tensor] | None = None
        self._epoch_start_weights: list[Tensor] = []
        self._epoch_first_sample = 0
        self._histogram_epoch = False
        self._last_grads: list[Tensor | None] = []  # the epoch's last gradients, for histograms
        self._activation_sample: dict[int, Tensor] = {}  # its last sampled activations
        self.verdict = {}
        if self._restored:  # resumed from a checkpoint, perhaps mid-epoch
            self._apply(self._restored)
            self._restored = {}
        writer = self._writer(trainer)
        if writer is not None:
            writer.add_custom_scalars(layout(self._quantities(pl_module)))
        if self._sampled(trainer.global_step + 1):
            self._hold_hooks()

    # ------------------------------------------------------------------ checkpointed state
    def state_dict(self) -> dict[str, Any]:
        """The history behind the verdict (lists of floats and the epoch's starting weights), so
        that a run resumed with ``ckpt_path=last`` is judged on all of its steps."""
        if not hasattr(self, "layers"):
            return {}
        return {
            **{name: getattr(self, name) for name in HISTORY},
            "epoch_start_weights": self._epoch_start_weights,
            "epoch_first_sample": self._epoch_first_sample,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)  # applied in on_train_start, once the layers are known

    def _apply(self, state: dict[str, Any]) -> None:
        for name in HISTORY:
            setattr(self, name, list(state[name]))
        self._epoch_start_weights = [
            start.to(layer.weight.device)
            for start, layer in zip(state["epoch_start_weights"], self.layers, strict=True)
        ]
        self._epoch_first_sample = state["epoch_first_sample"]

    def _quantities(self, pl_module: L.LightningModule) -> list[str]:
        """What this run logs: clipped norms only with clipping, dead units only for activations
        with a hard zero (ReLU), saturation only for sigmoid/tanh."""
        clipping = getattr(pl_module, "clipping", None)
        shown = ["grad_norm", "update_ratio", "weight_change"]
        shown += ["grad_norm_clipped"] if getattr(clipping, "active", False) else []
        if self.activations:
            shown += ["act_mean", "act_std"]
            shown += ["dead_fraction"] if any(self.dies) else []
            shown += ["saturated_fraction"] if any(s is not None for s in self.saturation) else []
        return shown

    def _writer(self, trainer: L.Trainer) -> Any:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    # ------------------------------------------------------------------ activation hooks
    def _hold_hooks(self) -> None:
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
                if self._histogram_epoch:  # a copy: a later in-place layer must not change it
                    self._activation_sample[index] = output.detach().clone()

        return hook

    def _release_hooks(self) -> Tensor | None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._eager.close()  # back to the stance before: compiled code runs compiled again
        if self.activations and len(self._captured) == len(self.activations):
            return torch.stack([self._captured[i] for i in range(len(self.activations))])
        return None

    # ------------------------------------------------------------------- optimizer steps
    def _sampled(self, step: int) -> bool:
        return step % self.every_n_steps == 0 or not (self.steps or self._pending)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish_update()
        step = trainer.global_step + 1  # the optimizer step this gradient is for
        if self._sampled(step):
            activations = self._release_hooks()
            self._record = {"step": step, "pre": _norms(self.layers), "act": activations}

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        step = trainer.global_step + 1
        if self._record is not None:
            # Gradient clipping, if any, has happened between the two hooks.
            self._record["post"] = _norms(self.layers)
            self._before_update = [layer.weight.detach().clone() for layer in self.layers]
            self._pending.append(self._record)
            self._record = None
        if (step + 1) % self.every_n_steps == 0:
            self._hold_hooks()

    def _finish_update(self) -> None:
        """Size of the sampled step's update relative to the weights, once the step is done."""
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

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._finish_update()
        self._flush(trainer)
        if self._histogram_epoch:
            # Lightning sets the gradients to None before validation: keep the block's last ones
            # (references, no copy: the next step's backward makes new tensors).
            self._last_grads = [layer.weight.grad for layer in self.layers]

    def _flush(self, trainer: L.Trainer) -> None:
        """Move the block's samples to the host (one sync) and write them to the loggers."""
        for record in self._pending:
            pre, post = record["pre"].tolist(), record["post"].tolist()
            metrics = {tag("grad_norm", n): v for n, v in zip(self.names, pre, strict=True)}
            if post != pre:
                metrics |= {
                    tag("grad_norm_clipped", n): v for n, v in zip(self.names, post, strict=True)
                }
            if "update" in record:
                ratios = record["update"].tolist()
                metrics |= {
                    tag("update_ratio", n): v for n, v in zip(self.names, ratios, strict=True)
                }
            if record["act"] is not None:
                stats = record["act"].tolist()
                for name, values, saturates, dies in zip(
                    self.names, stats, self.saturation, self.dies, strict=False
                ):
                    for quantity, value in zip(ACTIVATION_STATS, values, strict=True):
                        if quantity == "saturated_fraction" and not saturates:
                            continue
                        if quantity == "dead_fraction" and not dies:
                            continue
                        metrics[tag(quantity, name)] = value
                self.activation_history.append(stats)
            self.steps.append(record["step"])
            self.grad_norms.append(pre)
            log_scalars(trainer.loggers, metrics, record["step"])
        self._pending.clear()

    # -------------------------------------------------------------------------------- epochs
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start_weights = [layer.weight.detach().clone() for layer in self.layers]
        self._epoch_first_sample = len(self.steps) + len(self._pending)
        every = self.histogram_every_n_epochs
        self._histogram_epoch = bool(every) and (trainer.current_epoch + 1) % every == 0
        self._last_grads, self._activation_sample = [], {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish_update()
        self._flush(trainer)
        step, epoch = trainer.global_step, trainer.current_epoch
        changes = torch.stack(
            [
                (layer.weight.detach() - start).abs().mean()
                for layer, start in zip(self.layers, self._epoch_start_weights, strict=True)
            ]
        ).tolist()
        self.weight_changes.append(changes)
        metrics = {tag("weight_change", n): v for n, v in zip(self.names, changes, strict=True)}
        log_scalars(trainer.loggers, metrics, step)
        epoch_norms = self.grad_norms[self._epoch_first_sample :]
        if epoch_norms:
            self.epochs.append(epoch)
            self.epoch_grad_norms.append(
                [statistics.fmean(c) for c in zip(*epoch_norms, strict=True)]
            )
        writer = self._writer(trainer)
        if writer is None:
            return
        if self._histogram_epoch:
            self._write_histograms(writer, step)
        if self.figure_every_n_epochs and (epoch + 1) % self.figure_every_n_epochs == 0:
            figure = self._figure()
            writer.add_figure(f"{PREFIX}grad_norm_vs_depth", figure, step)  # closes the figure

    def _write_histograms(self, writer: Any, step: int) -> None:
        """Weights at the epoch's end, the gradients of its last step and the activations of its
        last sampled step (the layer after which they come), one histogram per layer."""
        grads = self._last_grads or [None] * len(self.layers)
        activations = [self._activation_sample.get(i) for i in range(len(self.names))]
        for kind, tensors in (
            ("weights", [layer.weight for layer in self.layers]),
            ("gradients", grads),
            ("activations", activations),
        ):
            for name, values in zip(self.names, tensors, strict=False):
                if values is not None and bool(values.isfinite().all()):  # diverged: none
                    writer.add_histogram(tag(kind, name), values.detach(), step)
        self._last_grads, self._activation_sample = [], {}

    # ------------------------------------------------------------------------------ verdict
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release_hooks()  # a pass held for a step that never came
        self._conclude(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """A run stopped by divergence (or Ctrl-C) is the one whose verdict matters most.

        The divergence monitor stops between two samples: at a block's end (GPU), where the last
        step's gradients are the evidence and are sampled too when non-finite, or at the step
        whose loss went non-finite (CPU), whose gradients are not computed yet; the verdict then
        rests on the monitor's word, passed on as ``diverged``.
        """
        if not hasattr(self, "layers") or self.verdict:
            return
        self._release_hooks()
        self._finish_update()  # before appending: it completes the last sampled record
        norms = _norms(self.layers)
        if not bool(norms.isfinite().all()):
            record = {"step": trainer.global_step, "pre": norms, "post": norms, "act": None}
            self._pending.append(record)
        diverged = str(exception).split(":")[0] if isinstance(exception, TrainingDiverged) else ""
        self._conclude(trainer, diverged)

    def _conclude(self, trainer: L.Trainer, diverged: str = "") -> None:
        """Judge the samples; write the verdict, its history and the figure on rank zero."""
        self._release_hooks()
        self._finish_update()
        self._flush(trainer)
        samples = Samples(
            numel=[layer.weight.numel() for layer in self.layers],
            steps=self.steps,
            grad_norms=self.grad_norms,
            activations=self.activation_history,
            selu=bool(self.activations) and all(isinstance(a, nn.SELU) for a in self.activations),
            diverged=diverged,
        )
        self.verdict = judge(samples, self.thresholds)
        if not trainer.is_global_zero:
            return
        for line in self.verdict["verdict"]:
            log.info("gradient diagnostics: %s", line)
        folder = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        report = {**self.verdict, "thresholds": self.thresholds.as_dict(), **self._history()}
        atomic_write_text(folder / VERDICT_FILE, json.dumps(report, indent=2, allow_nan=True))
        if self.epoch_grad_norms:
            figure = self._figure()
            figure.savefig(folder / FIGURE_FILE)
            writer = self._writer(trainer)
            if writer is not None and not self.figure_every_n_epochs:  # else already there
                writer.add_figure(
                    f"{PREFIX}grad_norm_vs_depth", figure, trainer.global_step
                )  # closes it
            else:
                close(figure)

    def _figure(self) -> Any:
        lines = by_epoch(self.epochs, self.epoch_grad_norms)
        return grad_norm_vs_depth(lines, epochs_title(self.epochs))

    def _history(self) -> dict[str, Any]:
        """Per layer: mean gradient norm and mean absolute weight change of each epoch."""
        return {
            "layers": self.names,
            "epochs": [e + 1 for e in self.epochs],
            "grad_norm_per_epoch": {
                n: [norms[i] for norms in self.epoch_grad_norms] for i, n in enumerate(self.names)
            },
            "weight_change_per_epoch": {
                n: [changes[i] for changes in self.weight_changes] for i, n in enumerate(self.names)
            },
        }
