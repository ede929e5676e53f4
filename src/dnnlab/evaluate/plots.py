"""The book's saturation figure: every activation and its derivative, on one sheet."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from dnnlab.model.activations import ACTIVATIONS, build_activation

# Each function once (swish is SiLU), in the book's order; "none" is the identity.
PLOTTED = [name for name in ACTIVATIONS if name not in ("none", "swish")]


def activation_curves(
    names: Sequence[str] = PLOTTED, x: Tensor | None = None
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """``name -> (x, f(x), f'(x))`` with the derivative from autograd, in evaluation mode.

    Evaluation mode gives RReLU its mean slope; the settings are PyTorch's defaults.
    """
    x = torch.linspace(-5, 5, 1001) if x is None else x
    curves = {}
    for name in names:
        function = build_activation(name, units=1).eval()
        point = x.detach().clone().requires_grad_(True)
        y = function(point[:, None])[:, 0]
        (slope,) = torch.autograd.grad(y.sum(), point)
        curves[name] = (x, y.detach(), slope)
    return curves


def plot_activations(path: str | Path, names: Sequence[str] = PLOTTED) -> Path:
    """Draw each activation (solid) and its derivative (dashed) in a grid; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = activation_curves(names)
    columns = 4
    rows = -(-len(curves) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax, (name, (x, y, slope)) in zip(axes.flat, curves.items(), strict=False):
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.plot(x, y, lw=2, label="f(x)")
        ax.plot(x, slope, "--", lw=1.5, label="f'(x)")
        ax.set_title(f"{name}  (max f' = {slope.max().item():.3g})", fontsize=10)
        ax.set_ylim(-2.2, 3.2)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(curves) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Activation functions (solid) and their derivatives (dashed)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
