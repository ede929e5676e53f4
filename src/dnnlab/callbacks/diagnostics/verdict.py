"""The plain-words verdict on a run's gradients and activations, from the sampled statistics.

Kept apart from the callback so that the rules can be read (and tested) on their own.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, asdict, dataclass, fields
from typing import Any

from dnnlab.errors import ConfigError
from dnnlab.ranges import integers, interval, positive
from dnnlab.settings import check_fields, default_key, setting

_RATIO = positive("a gradient ratio")
_TOLERANCE = positive("a tolerance")
_FRACTION = interval("a fraction of the layer's units", 0, 1, "(]")


@dataclass(frozen=True)
class Thresholds:
    """When the verdict calls gradients vanishing or exploding (``verdict.*`` in the config;
    each threshold's range is also checked before any data is read: dnnlab.app.checks)."""

    vanishing_ratio: float = setting(
        0.01, rule=_RATIO, doc="layer 1's RMS gradient below this fraction of the last layer's"
    )
    exploding_ratio: float = setting(100.0, rule=_RATIO, doc="... or above this multiple of it")
    exploding_growth: float = setting(
        1000.0,
        rule=positive("a growth factor"),
        doc="total gradient norm grew this much from an earlier sample",
    )
    selu_mean_tol: float = setting(
        0.15, rule=_TOLERANCE, doc="self-normalization holds when every |mean| is below this"
    )
    selu_std_tol: float = setting(0.15, rule=_TOLERANCE, doc="... and every |std - 1| below this")
    dead_fraction: float = setting(
        0.5, rule=_FRACTION, doc="report layers with at least this fraction of dead units"
    )
    saturated_fraction: float = setting(
        0.5, rule=_FRACTION, doc="... or of outputs in the sigmoid/tanh tails"
    )
    window: int = setting(
        10,
        rule=integers("a number of samples", 1),
        doc="the per-layer figures are medians over the last `window` samples",
    )
    key: InitVar[str] = "callbacks.gradient_diagnostics.verdict"

    def __post_init__(self, key: str) -> None:
        check_fields(self, key)

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None, key: str | None = None) -> Thresholds:
        key = key or default_key(cls)
        valid = [f.name for f in fields(cls)]
        values = dict(values or {})
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(
                f"{key}.{unknown[0]} is not a threshold; choose from: {', '.join(valid)}"
            )
        return cls(**values, key=key)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Samples:
    """What the callback sampled: per sample, the gradient norm of each dense layer and the
    ``[mean, std, dead, saturated]`` statistics of each activation layer."""

    numel: Sequence[int]  # weights per dense layer, to compare layers of different sizes
    steps: list[int]
    grad_norms: list[list[float]]
    activations: list[list[list[float]]]
    selu: bool = False  # every activation is SELU: judge self-normalization
    diverged: str = ""  # how the divergence monitor stopped the run, if it did


def _depths(indices: Sequence[int]) -> str:
    return ", ".join(str(i + 1) for i in indices)


def _growth(steps: Sequence[int], totals: Sequence[float]) -> tuple[float, int, int]:
    """The largest rise of the total norm from an earlier sample: (factor, from step, to step)."""
    best, start, end = 1.0, steps[0], steps[0]
    low, low_step = totals[0], steps[0]
    for step, total in zip(steps, totals, strict=True):
        if low > 0 and total / low > best:
            best, start, end = total / low, low_step, step
        if total < low:
            low, low_step = total, step
    return best, start, end


def _gradient_lines(samples: Samples, limits: Thresholds) -> tuple[list[str], dict[str, Any]]:
    totals = [math.sqrt(sum(n * n for n in norms)) for norms in samples.grad_norms]
    steps = samples.steps
    finite = [i for i, t in enumerate(totals) if math.isfinite(t)]
    facts: dict[str, Any] = {"vanishing": False, "exploding": False}
    lines = []
    broken = next((i for i, t in enumerate(totals) if not math.isfinite(t)), None)
    if broken is not None:
        before = f" (it was {totals[0]:.2g} at step {steps[0]})" if broken else ""
        lines.append(
            f"exploding gradients: the gradient norm became non-finite by step {steps[broken]}"
            + before
        )
        facts["exploding"] = True
    if not finite:
        return lines, facts
    growth, start, end = _growth([steps[i] for i in finite], [totals[i] for i in finite])
    facts["max_growth"] = growth
    if growth > limits.exploding_growth:
        lines.append(
            f"exploding gradients: the gradient norm grew {growth:.2g}x in {end - start} steps "
            f"(step {start} to {end})"
        )
        facts["exploding"] = True
    recent = finite[-limits.window :]
    rms = [
        statistics.median(samples.grad_norms[i][layer] for i in recent) / math.sqrt(size)
        for layer, size in enumerate(samples.numel)
    ]
    facts["rms_gradient"] = rms
    if len(rms) < 2 or rms[-1] <= 0:
        return lines, facts
    ratio = rms[0] / rms[-1]
    facts["first_to_last_ratio"] = ratio
    where = f"(RMS gradient per weight, median of the last {len(recent)} samples)"
    if ratio < limits.vanishing_ratio:
        lines.append(
            f"vanishing gradients: layer 1's gradient is {ratio:.2g} of the last layer's {where}"
        )
        facts["vanishing"] = True
    elif ratio > limits.exploding_ratio:
        lines.append(
            f"exploding gradients: layer 1's gradient is {ratio:.2g}x the last layer's {where}"
        )
        facts["exploding"] = True
    elif not facts["exploding"]:
        lines.append(
            f"no vanishing or exploding gradients: layer 1's gradient is {ratio:.2g}x the last "
            f"layer's {where}, and the gradient norm grew at most {growth:.2g}x"
        )
    return lines, facts


def _activation_lines(samples: Samples, limits: Thresholds) -> tuple[list[str], dict[str, Any]]:
    if not samples.activations or not samples.activations[0]:
        return [], {}
    recent = samples.activations[-limits.window :]
    layers = len(recent[0])
    median = [
        [statistics.median(sample[layer][k] for sample in recent) for k in range(4)]
        for layer in range(layers)
    ]
    means, stds, dead, saturated = (list(column) for column in zip(*median, strict=True))
    lines: list[str] = []
    facts: dict[str, Any] = {}
    if samples.selu:
        off = [
            max(abs(m) / limits.selu_mean_tol, abs(s - 1) / limits.selu_std_tol)
            for m, s in zip(means, stds, strict=True)
        ]
        worst = max(range(layers), key=off.__getitem__)
        holds = off[worst] < 1
        facts["selu_self_normalizing"] = holds
        if holds:
            lines.append(
                f"SELU self-normalization holds: activations mean {statistics.fmean(means):.2f}, "
                f"std {statistics.fmean(stds):.2f} across {layers} layers"
            )
        else:
            lines.append(
                f"SELU self-normalization breaks: layer {worst + 1}'s activations have mean "
                f"{means[worst]:.2f}, std {stds[worst]:.2f} (wanted within "
                f"{limits.selu_mean_tol} of 0 and {limits.selu_std_tol} of 1)"
            )
    for label, values, limit, what in (
        ("dead units", dead, limits.dead_fraction, "units never active on a batch"),
        ("saturated units", saturated, limits.saturated_fraction, "outputs in the flat tails"),
    ):
        hit = [i for i, v in enumerate(values) if math.isfinite(v) and v >= limit]
        if hit:
            worst = max(hit, key=values.__getitem__)
            lines.append(
                f"{label}: layer(s) {_depths(hit)} have {limit:.0%} or more {what} "
                f"(layer {worst + 1}: {values[worst]:.0%})"
            )
    return lines, facts


def judge(samples: Samples, limits: Thresholds) -> dict[str, Any]:
    """The verdict lines and the facts behind them (JSON-ready)."""
    if not samples.steps:
        return {
            "verdict": ["no verdict: no optimizer step was sampled"],
            "vanishing": False,
            "exploding": False,
        }
    gradient_lines, facts = _gradient_lines(samples, limits)
    if samples.diverged and not facts["exploding"]:  # it blew up between two samples
        healthy = "no vanishing or exploding"
        gradient_lines = [
            f"exploding gradients: the updates blew up and {samples.diverged}",
            *(line for line in gradient_lines if not line.startswith(healthy)),
        ]
        facts["exploding"] = True
    activation_lines, activation_facts = _activation_lines(samples, limits)
    return {"verdict": gradient_lines + activation_lines, **facts, **activation_facts}
