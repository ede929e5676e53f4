"""``GradientDiagnostics``: per-layer gradients, updates and activations, a figure and a verdict.

The callback decides *when*: which optimizer steps are sampled (the first, then every
``every_n_steps``), what happens at an epoch's end and at the end of fit, and where the values go
(the loggers at ``global_step``, the figure, the verdict file, the checkpoint). What a sample
*is* (the gradient norms, update ratios and activation statistics) is computed by
:class:`~dnnlab.callbacks.diagnostics.sampler.LayerSampler`.

Cheap by design under the module's manual optimization, where ``on_after_backward`` and
``on_before_optimizer_step`` fire for every optimizer step: on a step that is not sampled they do
an integer test and return. A sampled step's values (from forward hooks that live for that one
step only) stay on the device; they reach the host and the loggers once per Lightning batch (a
block of steps), so there is no host sync per step.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from dnnlab.callbacks.diagnostics.figures import by_epoch, close, epochs_title, grad_norm_vs_depth
from dnnlab.callbacks.diagnostics.layers import activation_layers, layer_names
from dnnlab.callbacks.diagnostics.sampler import ACTIVATION_STATS, LayerSampler, Sample
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
        self.sampler: LayerSampler | None = None  # made at train start, once the layers are known
        self.names: list[str] = []
        self._restored: dict[str, Any] = {}
        self._reset()

    def _reset(self) -> None:
        """A fit's history: what the verdict, the figures and the histograms are made from."""
        self.steps: list[int] = []
        self.grad_norms: list[list[float]] = []
        self.activation_history: list[list[list[float]]] = []
        self.epochs: list[int] = []
        self.epoch_grad_norms: list[list[float]] = []
        self.weight_changes: list[list[float]] = []
        self._epoch_start_weights: list[Tensor] = []
        self._epoch_first_sample = 0
        self._histogram_epoch = False
        self._last_grads: list[Tensor | None] = []  # the epoch's last gradients, for histograms
        self.verdict: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ set-up
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sampler = LayerSampler(
            dense_layers(pl_module), activation_layers(pl_module), self.saturation_eps
        )
        self.names = layer_names(len(self.sampler.layers))
        self._reset()
        if self._restored:  # resumed from a checkpoint, perhaps mid-epoch
            self._apply(self._restored)
            self._restored = {}
        writer = self._writer(trainer)
        if writer is not None:
            writer.add_custom_scalars(layout(self._quantities(pl_module)))
        if self._sampled(trainer.global_step + 1):
            self.sampler.hook_next_forward()

    # ------------------------------------------------------------------ checkpointed state
    def state_dict(self) -> dict[str, Any]:
        """The history behind the verdict (lists of floats and the epoch's starting weights), so
        that a run resumed with ``ckpt_path=last`` is judged on all of its steps."""
        if self.sampler is None:
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
            for start, layer in zip(state["epoch_start_weights"], self.sampler.layers, strict=True)
        ]
        self._epoch_first_sample = state["epoch_first_sample"]

    def _quantities(self, pl_module: L.LightningModule) -> list[str]:
        """What this run logs: clipped norms only with clipping, dead units only for activations
        with a hard zero (ReLU), saturation only for sigmoid/tanh."""
        clipping = getattr(pl_module, "clipping", None)
        shown = ["grad_norm", "update_ratio", "weight_change"]
        shown += ["grad_norm_clipped"] if getattr(clipping, "active", False) else []
        if self.sampler.activations:
            shown += ["act_mean", "act_std"]
            shown += ["dead_fraction"] if any(self.sampler.dies) else []
            shown += ["saturated_fraction"] if any(self.sampler.saturates) else []
        return shown

    def _writer(self, trainer: L.Trainer) -> Any:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    # ------------------------------------------------ optimizer steps: when a sample is taken
    def _due(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    def _sampled(self, step: int) -> bool:
        """Every ``every_n_steps``-th optimizer step is sampled, and a run's first."""
        return self._due(step) or not (self.steps or self.sampler.waiting)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sampler.finish_update()  # the last sampled step's update is done by now
        step = trainer.global_step + 1  # the optimizer step this gradient is for
        if self._sampled(step):
            self.sampler.take_gradients(step)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        step = trainer.global_step + 1
        self.sampler.take_clipped()  # gradient clipping, if any, has happened since backward
        if self._due(step + 1):  # the next step is sampled: hook its forward pass
            self.sampler.hook_next_forward()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.sampler.finish_update()
        self._flush(trainer)
        if self._histogram_epoch:
            # Lightning sets the gradients to None before validation: keep the block's last ones.
            self._last_grads = self.sampler.gradients()

    def _flush(self, trainer: L.Trainer) -> None:
        """Move the block's samples to the host (one sync), keep them and log them."""
        for sample in self.sampler.collect():
            metrics = self._metrics(sample)
            if sample.activations is not None:
                self.activation_history.append(sample.activations)
            self.steps.append(sample.step)
            self.grad_norms.append(sample.grad_norm)
            log_scalars(trainer.loggers, metrics, sample.step)

    def _metrics(self, sample: Sample) -> dict[str, float]:
        """A sample's tags and values: clipped norms where clipping changed them, dead units and
        saturation only for the activations that have them."""
        pre, post = sample.grad_norm, sample.grad_norm_clipped
        metrics = {tag("grad_norm", n): v for n, v in zip(self.names, pre, strict=True)}
        if post != pre:
            metrics |= {
                tag("grad_norm_clipped", n): v for n, v in zip(self.names, post, strict=True)
            }
        if sample.update_ratio is not None:
            metrics |= {
                tag("update_ratio", n): v
                for n, v in zip(self.names, sample.update_ratio, strict=True)
            }
        if sample.activations is not None:
            for name, values, saturates, dies in zip(
                self.names,
                sample.activations,
                self.sampler.saturates,
                self.sampler.dies,
                strict=False,
            ):
                for quantity, value in zip(ACTIVATION_STATS, values, strict=True):
                    if quantity == "saturated_fraction" and not saturates:
                        continue
                    if quantity == "dead_fraction" and not dies:
                        continue
                    metrics[tag(quantity, name)] = value
        return metrics

    # -------------------------------------------------------------------------------- epochs
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start_weights = self.sampler.weights()
        self._epoch_first_sample = len(self.steps) + self.sampler.waiting
        every = self.histogram_every_n_epochs
        self._histogram_epoch = bool(every) and (trainer.current_epoch + 1) % every == 0
        self.sampler.keep_outputs = self._histogram_epoch
        self._last_grads = []
        self.sampler.outputs.clear()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sampler.finish_update()
        self._flush(trainer)
        step, epoch = trainer.global_step, trainer.current_epoch
        changes = self.sampler.mean_changes(self._epoch_start_weights)
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
        grads = self._last_grads or [None] * len(self.names)
        activations = [self.sampler.outputs.get(i) for i in range(len(self.names))]
        for kind, tensors in (
            ("weights", [layer.weight for layer in self.sampler.layers]),
            ("gradients", grads),
            ("activations", activations),
        ):
            for name, values in zip(self.names, tensors, strict=False):
                if values is not None and bool(values.isfinite().all()):  # diverged: none
                    writer.add_histogram(tag(kind, name), values.detach(), step)
        self._last_grads = []
        self.sampler.outputs.clear()

    # ------------------------------------------------------------------------------ verdict
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sampler.unhook()  # a pass held for a step that never came
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
        if self.sampler is None or self.verdict:
            return
        self.sampler.unhook()
        self.sampler.finish_update()  # before the next sample: it completes the last one
        self.sampler.take_broken(trainer.global_step)
        diverged = str(exception).split(":")[0] if isinstance(exception, TrainingDiverged) else ""
        self._conclude(trainer, diverged)

    def _conclude(self, trainer: L.Trainer, diverged: str = "") -> None:
        """Judge the samples; write the verdict, its history and the figure on rank zero."""
        self.sampler.unhook()
        self.sampler.finish_update()
        self._flush(trainer)
        samples = Samples(
            numel=self.sampler.sizes,
            steps=self.steps,
            grad_norms=self.grad_norms,
            activations=self.activation_history,
            selu=self.sampler.selu,
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
