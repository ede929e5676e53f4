"""Network builders: activations, initializers and the MLP."""

from dnnlab.models.mlp import build_mlp

__all__ = ["build_mlp"]
