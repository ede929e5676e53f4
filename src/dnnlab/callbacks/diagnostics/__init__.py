"""Vanishing and exploding gradients made visible: per-layer statistics, a figure, a verdict."""

from dnnlab.callbacks.diagnostics.callback import GradientDiagnostics

__all__ = ["GradientDiagnostics"]
