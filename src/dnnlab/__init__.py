"""dnnlab: the techniques of "Training Deep Neural Nets" as Lightning + Hydra choices."""

__version__ = "0.1.0"
