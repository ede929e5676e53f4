"""How many CPU threads torch's operators use: the top-level ``threads`` setting.

torch starts one intra-op thread per physical core. For the book's small matrices (a batch of 32
through a few hundred units) an operator split across threads saves microseconds, and on a busy
machine a thread that loses its time slice stalls the whole step while the others wait for it:
with a few other jobs on two cores the default MLP ran 20x slower on torch's default than on one
thread. ``threads=auto`` therefore picks one thread unless the network's matrix products are
large enough to share, and never more than the cores this process may run on.

``auto``, in order:

1. a member of a parallel sweep (``hydra/launcher=joblib``): 1 thread, the members share the
   cores (joblib sets ``OMP_NUM_THREADS`` in its workers itself, so the next rule cannot tell a
   user's value from joblib's there; ``threads=N`` gives each member N);
2. ``OMP_NUM_THREADS`` set in the environment: that count, as torch itself reads it;
3. the multiply-adds of one Dense layer's product on one training batch, on average over the
   layers (``data.batch_size`` x the network's weights / its Dense layers), below
   :data:`PARALLEL_WORK`: 1 thread;
4. else torch's default count (one per physical core), capped by the usable cores.

An integer ``threads=N`` is used as given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dnnlab.ranges import integers, is_number, out_of_range

log = logging.getLogger(__name__)

AUTO = "auto"
# threads: checked here and, for numbers, by dnnlab.app.checks before any data is read.
RULE = integers("a thread count", 1)._replace(expected="auto, or a thread count, an integer >= 1")
# Mean multiply-adds of one Dense layer's product per training batch from which auto uses more
# than one thread. The default MLP (batch 32: about 2.8 million) and the 100-layer net (0.34
# million) stay below it; a layer of 1000x1000 units at batch 32 (32 million) is above.
PARALLEL_WORK = 2**24
TORCH_DEFAULT = torch.get_num_threads()  # at import, before any run changed it


@dataclass(frozen=True)
class ThreadChoice:
    """The count a run uses and why (written to train.log, metrics.json and the HParams)."""

    setting: Any
    threads: int
    reason: str
    interop: int | None = None  # set too, where torch still allowed it

    def record(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "intra_op": self.threads,
            "inter_op": self.interop
            if self.interop is not None
            else torch.get_num_interop_threads(),
            "reason": self.reason,
        }


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset or a cgroup)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(value: object) -> None:
    """``threads`` must be ``auto`` or an integer >= 1 (one line otherwise)."""
    if value == AUTO and isinstance(value, str):
        return
    if not is_number(value) or not RULE.valid(value):
        raise out_of_range("threads", value, RULE.expected)


def env_threads(environ: Mapping[str, str]) -> int | None:
    """``OMP_NUM_THREADS`` when it holds a count >= 1 (torch ignores anything else too)."""
    text = environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else None


def resolve_threads(
    setting: object,
    work: int,
    *,
    cores: int,
    environ: Mapping[str, str],
    parallel_member: bool = False,
    default: int = TORCH_DEFAULT,
) -> ThreadChoice:
    """The thread count for ``setting`` (see the module's rules); ``work`` is the mean
    multiply-adds of one Dense layer's product per training batch."""
    check_threads(setting)
    if setting != AUTO:
        return ThreadChoice(setting, int(setting), "threads=N")
    if parallel_member:
        return ThreadChoice(setting, 1, "auto: a member of a parallel sweep (joblib launcher)")
    env = env_threads(environ)
    if env is not None:
        return ThreadChoice(setting, env, f"auto: OMP_NUM_THREADS={env} in the environment")
    if work < PARALLEL_WORK:
        return ThreadChoice(
            setting, 1, f"auto: {work:,} multiply-adds per layer and batch < {PARALLEL_WORK:,}"
        )
    count = max(1, min(default, cores))
    return ThreadChoice(
        setting, count, f"auto: {work:,} multiply-adds per layer and batch, {cores} cores"
    )


def layer_work(model: Mapping[str, Any], input_dim: int, num_classes: int, batch: int) -> int:
    """Mean multiply-adds of one Dense layer's product on a batch, counted on the meta device."""
    from dnnlab.model import build_mlp, dense_layers

    with torch.device("meta"):
        layers = dense_layers(build_mlp(input_dim, num_classes, **model))
    weights = sum(layer.weight.numel() for layer in layers)
    return batch * weights // max(len(layers), 1)


def in_parallel_sweep() -> bool:
    """Whether this process is a member of a Hydra sweep run by the joblib launcher."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    launcher = HydraConfig.get().launcher
    return "joblib" in str(launcher.get("_target_", "")).lower()


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    """Set torch's intra-op count, and its inter-op count where torch still allows that (once
    per process, before any inter-op work); returns the choice with what was applied."""
    torch.set_num_threads(choice.threads)
    interop = None
    if torch.get_num_interop_threads() != choice.threads:
        try:
            torch.set_num_interop_threads(choice.threads)
            interop = choice.threads
        except RuntimeError:  # already set, or inter-op work has started in this process
            pass
    else:
        interop = choice.threads
    applied = ThreadChoice(choice.setting, choice.threads, choice.reason, interop)
    log.info(
        "threads: %d intra-op, %d inter-op (%s)",
        applied.threads,
        torch.get_num_interop_threads(),
        applied.reason,
    )
    return applied


def choose_threads(
    setting: object, model: Mapping[str, Any], input_dim: int, num_classes: int, batch: int
) -> ThreadChoice:
    """Resolve and apply the ``threads`` setting for this network, before it is built."""
    check_threads(setting)
    work = layer_work(model, input_dim, num_classes, batch) if setting == AUTO else 0
    choice = resolve_threads(
        setting,
        work,
        cores=usable_cores(),
        environ=os.environ,
        parallel_member=in_parallel_sweep(),
    )
    return apply_threads(choice)
