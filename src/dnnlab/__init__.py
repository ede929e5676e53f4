"""dnnlab: the techniques of "Training Deep Neural Nets" as Lightning + Hydra choices."""

from dnnlab.app.members import register as _register_resolvers

__version__ = "0.1.0"
_register_resolvers()  # hydra.sweep.subdir names members with it, before any job runs
