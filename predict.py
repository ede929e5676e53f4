"""Predict new images: ``python predict.py ckpt_path=<run>/checkpoints/<name>.ckpt inputs=x.npy``.

Writes ``predictions.csv`` (class, class name, probabilities) into ``logs/predictions/<time>/``.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from dnnlab.app.cli import entry_point, run_job
from dnnlab.evaluate.prediction import predict

log = logging.getLogger("dnnlab")


def work(cfg: DictConfig) -> str:
    path = predict(cfg.ckpt_path, cfg.inputs, cfg.paths.output_dir)
    log.info("predictions written to %s", path)
    return str(path)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_job(cfg, work)


if __name__ == "__main__":
    sys.exit(entry_point(main))
