"""Whether the network fits the machine, checked before a single weight is allocated.

``model.hidden=[1000000000]`` would otherwise ask the allocator for terabytes and stop with
torch's RuntimeError, or, where the system overcommits memory, get the process killed mid-run.
The count comes from the very builder the run uses, on the meta device (shapes, no storage).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from dnnlab.building import check_arguments
from dnnlab.errors import ConfigError
from dnnlab.model import build_mlp
from dnnlab.model.mlp import PASSED
from dnnlab.optim.optimizers import state_tensors
from dnnlab.ranges import shown

BYTES_PER_VALUE = 4  # float32 weights, gradients and optimizer state (mixed precision too)


def parameter_count(model: Mapping[str, Any], input_dim: int, num_classes: int) -> int:
    """Parameters of the network the ``model`` node describes, without allocating them."""
    check_arguments(model, "model", build_mlp, passed=PASSED)
    with torch.device("meta"):
        net = build_mlp(input_dim, num_classes, **model)
    return sum(p.numel() for p in net.parameters())


def ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_memory(accelerator: str) -> tuple[int, str]:
    """Total memory of the device training runs on, and its name for the error line."""
    wants_gpu = accelerator in ("gpu", "cuda") or accelerator == "auto"
    if wants_gpu and torch.cuda.is_available():
        return torch.cuda.mem_get_info()[1], "GPU memory"
    return ram_bytes(), "RAM"


def size(count: float) -> str:
    """Bytes in binary units, three digits: 2.89 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024:
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} PiB"


def check_fits(
    model: Mapping[str, Any],
    optimizer: Mapping[str, Any],
    input_dim: int,
    num_classes: int,
    accelerator: str = "auto",
) -> None:
    """Refuse a network whose weights, gradients and optimizer state exceed the device's
    memory (or whose weights alone exceed the RAM they are first built in)."""
    count = parameter_count(model, input_dim, num_classes)
    weights = count * BYTES_PER_VALUE
    training = weights * (2 + state_tensors(optimizer))  # weights, gradients, optimizer state
    memory, where = device_memory(accelerator)
    if training <= memory and (where == "RAM" or weights <= ram_bytes()):
        return
    if training <= memory:  # on a GPU: the weights are built in RAM first
        memory, where = ram_bytes(), "RAM"
    hidden = model.get("hidden")
    raise ConfigError(
        f"model.hidden={shown(hidden)}: the network has {count:,} parameters: {size(weights)} as "
        f"float32, {size(training)} with their gradients and the optimizer's state; this machine "
        f"has {size(memory)} of {where} (use fewer or smaller hidden layers)"
    )
