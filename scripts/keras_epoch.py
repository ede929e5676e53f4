"""One epoch of a workload's model in Keras ``fit``, in a process of its own.

``scripts/benchmark.py`` runs this between its PyTorch paths. A process of its own because a
backend's thread pools (TensorFlow's above all) keep running after ``fit`` and slow the PyTorch
paths of the same process on a small machine. Only NumPy and Keras are imported here.

    python scripts/keras_epoch.py DATA.npz SPEC.json    # prints {"backend": ..., "seconds": ...}

``DATA.npz`` holds ``x``, ``y``, ``val_x``, ``val_y`` (flattened images, labels); ``SPEC.json`` the
model and training settings (see :func:`build`). ``fit`` runs two epochs and the second is
timed: the first also traces and compiles the train and validation functions, a one-off cost
that the PyTorch paths do not pay.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np


def build(spec: dict[str, Any]) -> keras.Model:
    """The workload's MLP: optional input BN, Dense + activation (+ BN after it) per layer."""
    activations = {
        "leaky_relu": lambda: keras.layers.LeakyReLU(negative_slope=spec["negative_slope"]),
        "relu": lambda: keras.layers.Activation("relu"),
        "selu": lambda: keras.layers.Activation("selu"),
    }
    layers: list[Any] = [keras.Input((spec["inputs"],))]
    if spec["input_batch_norm"]:
        layers.append(keras.layers.BatchNormalization())
    for units in spec["hidden"]:
        layers.append(keras.layers.Dense(units, kernel_initializer=spec["init"]))
        layers.append(activations[spec["activation"]]())
        if spec["batch_norm"] == "after":
            layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(spec["classes"]))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=spec["lr"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:  # after validation
        self.seconds = time.perf_counter() - self.start  # the last epoch's, once fit returns


def main(data_path: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    data = np.load(data_path)
    keras.utils.set_random_seed(spec["seed"])
    model = build(spec)
    timer = EpochTimer()
    model.fit(
        data["x"],
        data["y"],
        batch_size=spec["batch_size"],
        epochs=2,
        validation_data=(data["val_x"], data["val_y"]),
        validation_batch_size=spec["eval_batch_size"],
        verbose=0,
        callbacks=[timer],
    )
    print(json.dumps({"backend": keras.backend.backend(), "seconds": timer.seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
