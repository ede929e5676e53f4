"""Train a model of the chapter: ``python train.py [group=option ...] [key=value ...]``."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from dnnlab.errors import user_error
from dnnlab.training import run

log = logging.getLogger("dnnlab")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except Exception as raised:  # a user error may come wrapped by Hydra's instantiate
        err = user_error(raised)
        if err is None:
            raise
        log.error(str(err))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
