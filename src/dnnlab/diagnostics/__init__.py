"""Vanishing and exploding gradients made visible: per-layer statistics, a figure, a verdict."""

from dnnlab.diagnostics.callback import GradientDiagnostics

__all__ = ["GradientDiagnostics"]
