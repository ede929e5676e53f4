"""Train a model of the chapter: ``python train.py [group=option ...] [key=value ...]``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from dnnlab.app.cli import entry_point, run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from dnnlab.train.run import run  # here, not at import: --help/--cfg/--info need no torch

    metrics = run_job(cfg, run)  # None after a user error: reported in one line, sweep goes on
    return metrics.get(cfg.optimized_metric) if metrics and cfg.get("optimized_metric") else None


if __name__ == "__main__":
    sys.exit(entry_point(main))
