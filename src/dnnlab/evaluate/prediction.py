"""``predict.py``: class probabilities of a trained run for new images.

The inputs are a ``.npy`` array or an IDX images file (``...-idx3-ubyte``, plain or ``.gz``) of
28x28 images, as uint8 pixels (0-255) or floats already scaled to [0, 1], the scale training
used. The model and the class names come from the checkpoint and its run folder's saved config.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from dnnlab.data import build_datamodule
from dnnlab.data.idx import read_idx
from dnnlab.errors import ConfigError
from dnnlab.evaluate.evaluation import plain_proba, saved_run_config, write_evaluation
from dnnlab.train.checkpoint_files import restore_classifier

KEY = "inputs"
FORMATS = ".npy, or an IDX images file (-idx3-ubyte, plain or .gz)"


def load_inputs(path: str | Path, shape: tuple[int, ...]) -> torch.Tensor:
    """The images at ``path`` as a float tensor (N, *shape) in [0, 1]; one line for others."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{KEY}={str(path)!r}: no such file; give a {FORMATS}")
    name = path.name.removesuffix(".gz")
    if name.endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ConfigError(f"{KEY}={str(path)!r}: not a NumPy array file ({err})") from None
    elif "idx" in name or name.endswith("ubyte"):
        array = read_idx(path)  # a damaged or non-IDX file is one DataError line
    else:
        raise ConfigError(f"{KEY}={str(path)!r}: unknown format; give a {FORMATS}")
    if array.shape == shape or array.shape == (int(np.prod(shape)),):
        array = array[None]  # one image
    if array.ndim < 2 or array.shape[1:] not in (shape, (int(np.prod(shape)),)) or not len(array):
        raise ConfigError(
            f"{KEY}={str(path)!r}: images of shape {array.shape}; the model takes "
            f"(N, {', '.join(map(str, shape))}) or (N, {int(np.prod(shape))})"
        )
    if array.dtype == np.uint8:
        return torch.from_numpy(array.reshape(len(array), *shape)).float().div_(255.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise ConfigError(
            f"{KEY}={str(path)!r}: pixels of dtype {array.dtype}; give uint8 (0-255) or "
            "floats in [0, 1]"
        )
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ConfigError(
            f"{KEY}={str(path)!r}: float pixels must be finite and in [0, 1] (got "
            f"{np.nanmin(array):.3g} to {np.nanmax(array):.3g}); divide 0-255 pixels by 255"
        )
    return torch.from_numpy(array.reshape(len(array), *shape).astype(np.float32))


def predict(ckpt_path: str | Path, inputs: str | Path, out_dir: str | Path) -> Path:
    """Write ``predictions.csv`` (the predicted class, its name, every class's probability)."""
    ckpt, out = Path(ckpt_path), Path(out_dir)
    model, _ = restore_classifier(ckpt, "ckpt_path")
    cfg = saved_run_config(ckpt, out)
    if cfg.data.get("standardize"):
        raise ConfigError(
            f"ckpt_path={str(ckpt)!r}: its run standardized the inputs with training statistics "
            "(data.standardize=true), which predict.py does not reproduce; evaluate it with eval.py"
        )
    names = build_datamodule(cfg).classes
    images = load_inputs(inputs, tuple(model.hparams.input_shape))
    probabilities = plain_proba(model, images, batch_size=1000)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "predictions.csv"
    with path.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["index", "pred", "pred_name", "confidence", *(f"p_{n}" for n in names)])
        for i, row in enumerate(probabilities.tolist()):
            k = max(range(len(row)), key=row.__getitem__)
            rows.writerow([i, k, names[k], f"{row[k]:.6f}", *(f"{p:.6f}" for p in row)])
    write_evaluation(out, {"ckpt_path": str(ckpt), "inputs": str(inputs), "count": len(images)})
    return path
