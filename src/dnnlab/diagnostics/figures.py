"""The gradient-norm-versus-depth figure: one line per epoch, so the decay with depth shows."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: figures go to TensorBoard and PNG files

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def grad_norm_vs_depth(
    epochs: Sequence[int], norms: Sequence[Sequence[float]], title: str = ""
) -> Figure:
    """Mean gradient norm of each dense layer (x: depth, log y), one line per epoch."""
    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=100)
    colors = plt.get_cmap("viridis")
    shown = _spread(len(epochs), 8)
    for rank, i in enumerate(shown):
        depth = range(1, len(norms[i]) + 1)
        color = colors(rank / max(len(shown) - 1, 1))
        axes.plot(depth, norms[i], marker="o", color=color, label=f"epoch {epochs[i] + 1}")
    axes.set_yscale("log")
    axes.set_xlabel("layer (1 = first hidden, last = output)")
    axes.set_ylabel("gradient norm")
    if norms:
        axes.set_xticks(range(1, len(norms[0]) + 1))
    axes.set_title(title or "gradient norm vs depth")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def _spread(count: int, most: int) -> list[int]:
    """At most ``most`` indices from 0 to count - 1, first and last included."""
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def close(figure: Figure) -> None:
    plt.close(figure)
