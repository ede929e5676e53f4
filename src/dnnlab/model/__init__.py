"""Network builders: activations, initializers and the MLP."""

from dnnlab.model.mlp import build_mlp, dense_layers

__all__ = ["build_mlp", "dense_layers"]
