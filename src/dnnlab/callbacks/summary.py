"""The model summary with Keras' parameter counts, so the book's numbers can be checked.

Keras counts BatchNorm's moving mean and variance as non-trainable parameters (the book's BN
model: 271,346 total, 268,978 trainable, 2,368 non-trainable); PyTorch keeps them as buffers,
which Lightning's summary leaves out. This summary counts them as Keras does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dnnlab.scalars import AFTER_CURVES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParameterCounts:
    trainable: int
    non_trainable: int

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    def __str__(self) -> str:
        return (
            f"Total params: {self.total:,} | Trainable params: {self.trainable:,} | "
            f"Non-trainable params: {self.non_trainable:,} (BatchNorm moving statistics counted)"
        )


def parameter_counts(module: nn.Module) -> ParameterCounts:
    """Trainable parameters; frozen parameters plus BN running mean/variance are non-trainable."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    moving = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.running_mean is not None
    )
    return ParameterCounts(trainable, frozen + moving)


@dataclass(frozen=True)
class Row:
    """One layer of the table: its name, type and parameter counts."""

    name: str
    kind: str
    counts: ParameterCounts


def layer_rows(module: nn.Module) -> list[Row]:
    """The network's layers (``module.net``'s leaves when it has one), in order."""
    net = getattr(module, "net", module)
    prefix = "net." if net is not module else ""
    return [
        Row(f"{prefix}{name}", type(layer).__name__, parameter_counts(layer))
        for name, layer in net.named_modules()
        if name and not any(True for _ in layer.children())
    ]


def _signature(rows: list[Row]) -> tuple[tuple[str, ParameterCounts], ...]:
    return tuple((row.kind, row.counts) for row in rows)


def collapse(
    rows: list[Row], min_repeats: int = 3, max_period: int = 4
) -> list[tuple[str, str, int, ParameterCounts]]:
    """Rows as (names, types, repeats, counts of one repeat): a block of up to ``max_period``
    layers repeated ``min_repeats`` times or more in a row is one line (the 100-layer nets)."""
    out = []
    i = 0
    while i < len(rows):
        best = (1, 1)  # (period, repeats)
        for period in range(1, max_period + 1):
            block = _signature(rows[i : i + period])
            repeats = 1
            while _signature(rows[i + repeats * period : i + (repeats + 1) * period]) == block:
                repeats += 1
            if repeats >= min_repeats and repeats * period > best[0] * best[1]:
                best = (period, repeats)
        period, repeats = best
        if repeats < min_repeats:
            out.append((rows[i].name, rows[i].kind, 1, rows[i].counts))
            i += 1
            continue
        block = rows[i : i + period]
        last = rows[i + period * repeats - 1]
        trainable = sum(r.counts.trainable for r in block)
        frozen = sum(r.counts.non_trainable for r in block)
        kinds = ", ".join(r.kind for r in block)
        out.append(
            (f"{rows[i].name}..{last.name}", kinds, repeats, ParameterCounts(trainable, frozen))
        )
        i += period * repeats
    return out


def summary_table(module: nn.Module) -> str:
    """The layer table with Keras' counts, repeated blocks collapsed, and the totals."""
    lines = []
    collapsed = collapse(layer_rows(module))
    width = max([len("Layer"), *(len(names) for names, *_ in collapsed)])
    kind_width = max(
        [len("Type"), *(len(k) + (len(f" x{n}") if n > 1 else 0) for _, k, n, _ in collapsed)]
    )
    lines.append(f"{'Layer':<{width}}  {'Type':<{kind_width}}  {'Params':>11}")
    for names, kinds, repeats, counts in collapsed:
        kind = f"{kinds} x{repeats}" if repeats > 1 else kinds
        params = f"{counts.total * repeats:,}"
        each = f"  ({counts.total:,} each)" if repeats > 1 else ""
        lines.append(f"{names:<{width}}  {kind:<{kind_width}}  {params:>11}{each}")
    lines.append(str(parameter_counts(module)))
    return "\n".join(lines)


class ParameterSummary(LightningModelSummary):
    """The parameter summary of the book (Keras' ``model.summary()`` counts) in place of
    Lightning's table: one line per layer, repeated blocks collapsed, logged at fit start."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._max_depth or not trainer.is_global_zero:
            return
        counts = parameter_counts(pl_module)
        log.info("model summary:\n%s", summary_table(pl_module))
        metrics = {
            f"{AFTER_CURVES}params/total": counts.total,
            f"{AFTER_CURVES}params/trainable": counts.trainable,
            f"{AFTER_CURVES}params/non_trainable": counts.non_trainable,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=0)
