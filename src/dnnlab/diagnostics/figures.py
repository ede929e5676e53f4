"""The gradient-norm-versus-depth figure: one line per epoch (or per run), so the decay shows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: figures go to TensorBoard and PNG files

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def grad_norm_vs_depth(lines: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Gradient norm of each dense layer (x: depth, log y), one labelled line per entry."""
    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=100)
    colors = plt.get_cmap("viridis")
    drawable = False
    for rank, (label, norms) in enumerate(lines.items()):
        # A diverged (inf/NaN) or zero norm has no place on a log axis: leave a gap.
        shown = [v if math.isfinite(v) and v > 0 else math.nan for v in norms]
        drawable = drawable or any(v == v for v in shown)
        color = colors(rank / max(len(lines) - 1, 1))
        axes.plot(range(1, len(shown) + 1), shown, marker="o", color=color, label=label)
    depth = max((len(norms) for norms in lines.values()), default=0)
    axes.set_xticks(range(1, depth + 1))
    if drawable:
        axes.set_yscale("log")
    axes.set_xlabel("layer (1 = first hidden, last = output)")
    axes.set_ylabel("gradient norm")
    axes.set_title(title or "gradient norm vs depth")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def by_epoch(epochs: Sequence[int], norms: Sequence[Sequence[float]], most: int = 8) -> dict:
    """At most ``most`` epochs' lines, first and last included, labelled by epoch (1-based)."""
    count = len(epochs)
    if count <= most:
        shown = list(range(count))
    else:
        shown = sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})
    return {f"epoch {epochs[i] + 1}": norms[i] for i in shown}


def close(figure: Figure) -> None:
    plt.close(figure)
