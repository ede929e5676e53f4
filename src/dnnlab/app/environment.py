"""``environment.json`` in every run folder: what the numbers of a run were produced with.

A result that cannot be reproduced is first asked: which versions, which device, how many
threads, which commit of the code, with local changes or not. Each value that cannot be found
says why (``"git": "not found"``) rather than leaving the key out.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ENVIRONMENT_FILE = "environment.json"
PROJECT_ROOT = Path(__file__).resolve().parents[3]
PACKAGES = {
    "torch": "torch",
    "lightning": "lightning",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The project's commit and whether the working tree has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "note": "git not found"}
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return {"commit": None, "dirty": None, "note": f"{root} is not a git checkout"}
    return {"commit": commit, "dirty": dirty}


def device_info() -> dict[str, Any]:
    """Threads and accelerators as torch sees them (torch imported here, at a run's start)."""
    import torch

    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if cuda else None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cudnn_version": cudnn,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
    }


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        **{name: _version(dist) for name, dist in PACKAGES.items()},
        **device_info(),
        "git": git_state(),
    }


def write_environment(folder: str | Path) -> Path:
    """Write ``environment.json`` into the run folder; returns its path."""
    path = Path(folder) / ENVIRONMENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(environment(), indent=2) + "\n")
    return path
