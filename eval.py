"""Evaluate a saved run: ``python eval.py ckpt_path=logs/runs/<name>/<run>/checkpoints/last.ckpt``.

Works from the checkpoint alone (the run folder's saved config supplies the data settings); writes
``predictions.csv`` and ``evaluation.json`` into ``logs/evals/<date>_<time>/``.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from dnnlab.app.cli import entry_point, run_job

log = logging.getLogger("dnnlab")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    from dnnlab.evaluate.evaluation import evaluate_checkpoint  # here: --help/--cfg need no torch

    metrics = evaluate_checkpoint(
        cfg.ckpt_path, cfg.paths.output_dir, cfg.split, cfg.mc_dropout.samples, cfg.mc_dropout.seed
    )
    for key, value in metrics.items():
        log.info("%s: %.4f", key, value)
    log.info("predictions and metrics written to %s", cfg.paths.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_job(cfg, evaluate)


if __name__ == "__main__":
    sys.exit(entry_point(main))
