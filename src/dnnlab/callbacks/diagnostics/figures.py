"""The gradient-norm-versus-depth figure: one line per epoch (or per run), so the decay shows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: figures go to TensorBoard and PNG files

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MOST_EPOCHS = 10  # lines of one figure: the default 10-epoch run draws every epoch
MOST_TICKS = 12  # layer labels on the x-axis; a deeper net gets evenly spaced integer ticks


def grad_norm_vs_depth(lines: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Gradient norm of each dense layer (x: depth, log y), one labelled line per entry."""
    figure, axes = plt.subplots(figsize=(6.5, 3.5), dpi=100)
    colors = plt.get_cmap("viridis")
    drawable = False
    for rank, (label, norms) in enumerate(lines.items()):
        # A diverged (inf/NaN) or zero norm has no place on a log axis: leave a gap.
        shown = [v if math.isfinite(v) and v > 0 else math.nan for v in norms]
        drawable = drawable or any(v == v for v in shown)
        color = colors(rank / max(len(lines) - 1, 1))
        axes.plot(range(1, len(shown) + 1), shown, marker="o", color=color, label=label)
    depth = max((len(norms) for norms in lines.values()), default=0)
    if depth <= MOST_TICKS:
        axes.set_xticks(range(1, depth + 1))
    else:  # 101 labels would smear into one another
        axes.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        axes.set_xlim(0.5, depth + 0.5)
    if drawable:
        axes.set_yscale("log")
    axes.set_xlabel("layer (1 = first hidden, last = output)")
    axes.set_ylabel("gradient norm")
    axes.set_title(title or "gradient norm vs depth")
    axes.grid(True, which="both", alpha=0.3)
    if lines:  # beside the axes: inside, it would hide the first layers' points
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    figure.tight_layout()
    return figure


def by_epoch(
    epochs: Sequence[int], norms: Sequence[Sequence[float]], most: int = MOST_EPOCHS
) -> dict:
    """At most ``most`` epochs' lines, first and last included, labelled by epoch (1-based);
    :func:`epochs_title` says when some were left out."""
    count = len(epochs)
    if count <= most:
        shown = list(range(count))
    else:
        shown = sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})
    return {f"epoch {epochs[i] + 1}": norms[i] for i in shown}


def close(figure: Figure) -> None:
    plt.close(figure)


def epochs_title(epochs: Sequence[int], most: int = MOST_EPOCHS) -> str:
    """The figure's title, saying which epochs it draws when it cannot draw them all."""
    if len(epochs) <= most:
        return "gradient norm vs depth"
    return f"gradient norm vs depth ({most} of {len(epochs)} epochs, evenly spaced)"
