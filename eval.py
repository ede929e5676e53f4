"""Evaluate a saved run: ``python eval.py ckpt_path=logs/runs/<name>/<run>/checkpoints/last.ckpt``.

Works from the checkpoint alone (the run folder's saved config supplies the data settings); writes
``predictions.csv`` and ``evaluation.json`` into ``logs/evals/<date>_<time>/``.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from dnnlab.errors import DnnlabError
from dnnlab.evaluation import evaluate_checkpoint

log = logging.getLogger("dnnlab")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        metrics = evaluate_checkpoint(
            cfg.ckpt_path,
            cfg.paths.output_dir,
            cfg.split,
            cfg.mc_dropout.samples,
            cfg.mc_dropout.seed,
        )
    except DnnlabError as err:
        log.error(str(err))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for key, value in metrics.items():
        log.info("%s: %.4f", key, value)
    log.info("predictions and metrics written to %s", cfg.paths.output_dir)


if __name__ == "__main__":
    main()
