"""dnnlab: the techniques of "Training Deep Neural Nets" as Lightning + Hydra choices."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"


def root_dir() -> str:
    """``paths.root_dir``: ``DNNLAB_ROOT``, or the folder you run from when it is unset or empty
    (``oc.env`` would turn an empty value into data/ and logs/ at the file system's root).
    Registered here, so that any use of the package (a saved run's config too) resolves it."""
    return os.environ.get("DNNLAB_ROOT") or "."


if not OmegaConf.has_resolver("dnnlab_root"):
    OmegaConf.register_new_resolver("dnnlab_root", root_dir)
