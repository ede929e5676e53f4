"""Network builders: activations, initializers and the MLP."""

from dnnlab.models.mlp import build_mlp, dense_layers

__all__ = ["build_mlp", "dense_layers"]
