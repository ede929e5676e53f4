"""Train a model of the chapter: ``python train.py [group=option ...] [key=value ...]``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from dnnlab.cli import entry_point, run_job
from dnnlab.training import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_job(cfg, run)  # None after a user error: reported in one line, sweep goes on
    return metrics.get(cfg.optimized_metric) if metrics and cfg.get("optimized_metric") else None


if __name__ == "__main__":
    sys.exit(entry_point(main))
